"""The capture layer in front of the local scoring server: one process that records every request.

:class:`~mlops_core.serving.LocalModelServer` starts this module as the leader of the server's
process group, with the MLflow command after ``--``::

    python -m mlops_core.capture_proxy --host 127.0.0.1 --port 5101 --upstream-port 40123 \\
        --store-root /home/.../store --prefix captures/churn/dev/ --model-name dev.churn \\
        --model-version 3 --entity-key customer_id --target local:dev \\
        -- python -m mlflow models serve -m ... -h 127.0.0.1 -p 40123 ...

It starts that command as its child (same process group: ``stop()`` ends both), listens on the
public port and forwards each request to the child on the internal port. ``GET`` requests
(``/ping``, ``/health``, ``/version``) pass through untouched; each ``POST /invocations`` also
becomes one capture record (:func:`mlops_core.capture.capture_record`) handed to a
:class:`~mlops_core.capture.CaptureWriter`, which writes part files to the object store in the
background and on SIGTERM. The answer carries ``X-Request-Id``.

Bodies are untrusted: a body over ``--max-request-mb`` is refused with 413 before it is read, a
request without ``Content-Length`` with 411; a body that is not JSON is still forwarded (the
model server answers it) and recorded with its ``input_error``. A capture failure is logged and
never changes the client's answer. When the child exits, the proxy exits with its code, so a
model that fails to load fails the deployment as before.
"""

from __future__ import annotations

import argparse
import http.client
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mlops_core.capture import CaptureWriter, capture_record, request_id_from

log = logging.getLogger("mlops_core.capture_proxy")

REQUEST_ID_HEADER = "X-Request-Id"
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "content-length",
    }
)


class CaptureProxy:
    """Forwards to ``127.0.0.1:upstream_port`` and records ``POST /invocations`` into ``writer``."""

    def __init__(
        self,
        upstream_port: int,
        writer: CaptureWriter | None,
        *,
        target: str,
        model_name: str,
        model_version: str,
        entity_key: str | None,
        sample_rate: float = 1.0,
        max_bytes: int = 6 * 1024 * 1024,
        timeout: float = 60.0,
    ) -> None:
        self.upstream_port = upstream_port
        self.writer = writer
        self.target = target
        self.model_name = model_name
        self.model_version = model_version
        self.entity_key = entity_key
        self.sample_rate = sample_rate
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.capture_failures = 0

    def forward(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=self.timeout)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def record(self, **fields: Any) -> None:
        """Hand one record to the writer; any failure is logged, never raised."""
        if self.writer is None or (self.sample_rate < 1.0 and random.random() >= self.sample_rate):  # noqa: S311
            return
        try:
            self.writer.add(
                capture_record(
                    target=self.target,
                    model_name=self.model_name,
                    model_version=self.model_version,
                    entity_key=self.entity_key,
                    **fields,
                )
            )
        except Exception:
            self.capture_failures += 1
            log.exception("capture of request %s failed; the request was answered", fields.get("request_id"))


def _handler(proxy: CaptureProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "mlops-capture"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def _answer(
            self, status: int, body: bytes, headers: Sequence[tuple[str, str]] = (), request_id: str | None = None
        ) -> None:
            self.send_response(status)
            sent_type = False
            for name, value in headers:
                if name.lower() not in _HOP_BY_HOP and name.lower() not in ("server", "date", "x-request-id"):
                    self.send_header(name, value)
                    sent_type = sent_type or name.lower() == "content-type"
            if not sent_type:
                self.send_header("Content-Type", "text/plain; charset=utf-8")
            if request_id is not None:
                self.send_header(REQUEST_ID_HEADER, request_id)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _pass(self, method: str, body: bytes | None) -> tuple[int, list[tuple[str, str]], bytes]:
            headers = {"Content-Type": self.headers.get("Content-Type", "application/json")} if body is not None else {}
            try:
                return proxy.forward(method, self.path, body, headers)
            except (OSError, http.client.HTTPException) as exc:
                return 502, [], f"the model server did not answer: {exc}\n".encode()

        def do_GET(self) -> None:
            status, headers, answer = self._pass("GET", None)
            self._answer(status, answer, headers)

        def do_POST(self) -> None:
            request_id = request_id_from(self.headers.get(REQUEST_ID_HEADER))
            arrived = datetime.now(UTC)
            started = time.perf_counter()
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True
                self._answer(411, b"send the body with a Content-Length, not chunked\n", request_id=request_id)
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self.close_connection = True
                self._answer(411, b"Content-Length required\n", request_id=request_id)
                return
            if length < 0 or length > proxy.max_bytes:
                self.close_connection = True
                message = f"request body of {length} bytes is over the limit of {proxy.max_bytes} bytes\n".encode()
                self._answer(413, message, request_id=request_id)
                self._drain(min(max(length, 0), 4 * proxy.max_bytes))  # so the client reads the 413, not a reset
                self._capture(request_id, arrived, started, 413, b"", message)
                return
            body = self.rfile.read(length)
            status, headers, answer = self._pass("POST", body)
            self._answer(status, answer, headers, request_id)
            if self.path.split("?")[0] == "/invocations":
                self._capture(request_id, arrived, started, status, body, answer)

        def _drain(self, length: int) -> None:
            try:
                self.connection.settimeout(5)
                while length > 0:
                    chunk = self.rfile.read(min(length, 1 << 16))
                    if not chunk:
                        break
                    length -= len(chunk)
            except OSError:
                pass

        def _capture(
            self, request_id: str, arrived: datetime, started: float, status: int, body: bytes, answer: bytes
        ) -> None:
            proxy.record(
                request_id=request_id,
                captured_at=arrived,
                latency_ms=(time.perf_counter() - started) * 1000,
                status=status,
                request_body=body,
                request_content_type=self.headers.get("Content-Type"),
                response_body=answer,
            )

    return Handler


def _arguments(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    if "--" not in argv:
        raise SystemExit("usage: python -m mlops_core.capture_proxy [options] -- <model server command>")
    at = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m mlops_core.capture_proxy")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--store-root", help="folder of the object store the captures go to (none: no capture)")
    parser.add_argument("--prefix", default="captures/")
    parser.add_argument("--target", default="local")
    parser.add_argument("--model-name", default="")
    parser.add_argument("--model-version", default="")
    parser.add_argument("--entity-key", default=None)
    parser.add_argument("--sample-rate", type=float, default=1.0)
    parser.add_argument("--flush-records", type=int, default=100)
    parser.add_argument("--flush-seconds", type=float, default=10.0)
    parser.add_argument("--max-request-mb", type=float, default=6.0)
    parser.add_argument("--timeout", type=float, default=60.0)
    return parser.parse_args(argv[:at]), argv[at + 1 :]


def main(argv: Sequence[str] | None = None) -> int:
    args, command = _arguments(sys.argv[1:] if argv is None else argv)
    if not command:
        raise SystemExit("no model server command after --")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s capture-proxy %(levelname)s %(message)s")
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    writer = None
    if args.store_root:
        from mlops_core.storage import LocalObjectStore

        writer = CaptureWriter(
            LocalObjectStore(Path(args.store_root)),
            args.prefix,
            flush_records=args.flush_records,
            flush_seconds=args.flush_seconds,
        )
    proxy = CaptureProxy(
        args.upstream_port,
        writer,
        target=args.target,
        model_name=args.model_name,
        model_version=args.model_version,
        entity_key=args.entity_key or None,
        sample_rate=args.sample_rate,
        max_bytes=int(args.max_request_mb * 1024 * 1024),
        timeout=args.timeout,
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    try:
        server = ThreadingHTTPServer((args.host, args.port), _handler(proxy))
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", args.host, args.port, exc)
        child.terminate()
        child.wait(timeout=30)
        if writer is not None:
            writer.close()
        return 98

    def watch_child() -> None:
        child.wait()
        done.set()

    threading.Thread(target=watch_child, name="child-watch", daemon=True).start()
    threading.Thread(target=server.serve_forever, name="capture-proxy", daemon=True).start()
    log.info(
        "capturing %s:%s -> 127.0.0.1:%s (pid %s) into %s%s",
        args.host, args.port, args.upstream_port, child.pid, args.store_root or "(nowhere)", args.prefix,
    )  # fmt: skip
    done.wait()
    server.shutdown()
    server.server_close()
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=8)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    if writer is not None:
        writer.close()
        log.info("capture closed: %d part file(s) written", len(writer.written))
    code = child.returncode
    return code if code and code > 0 else 0


if __name__ == "__main__":  # pragma: no cover - the server's entry point
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
