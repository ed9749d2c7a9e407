"""The scoring server inside the SageMaker serving container: SageMaker's inference contract, our model checks.

SageMaker starts the container with the argument ``serve``, unpacks the model's ``model.tar.gz``
under ``/opt/ml/model`` and talks HTTP to port 8080: ``GET /ping`` must answer 200 once the model
can score, ``POST /invocations`` scores a request. This server keeps that contract and the same
request protocol as the local MLflow scoring server (``dataframe_split`` / ``dataframe_records`` /
``instances`` / ``inputs`` JSON, CSV with a header row, Parquet), so the deploy stage's smoke test
and every client work the same against both targets.

The model is as untrusted here as anywhere (:mod:`mlops_core.model_integrity`): before serving,
the files under ``/opt/ml/model`` are copied to a scratch folder and checked against the digest
recorded in the tracking database when the model was logged -- passed in the container's
environment as ``MLOPS_MODEL_SHA256`` by the deployer, never read from the model itself -- and
against the skops-only format rules; only then is the copy loaded through our pinned loader.
A model that fails the checks is never loaded: ``/ping`` answers 503 with the reason, so SageMaker
never sends the endpoint traffic and the deployment fails.

Bad requests get 400 with MLflow's message, unsupported content types 415, bodies over
``MLOPS_MAX_REQUEST_MB`` (default 6, SageMaker's own payload limit) 413; a scoring error never
takes the server down. ``SAGEMAKER_BIND_TO_PORT`` overrides the port, as SageMaker's multi-container
endpoints require.

    serve                                   # in the container (the script runs this module)
    python -m mlops_core.inference_server --model-dir /tmp/model --host 127.0.0.1 --port 8080
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger("mlops_core.inference_server")

MODEL_DIR = "/opt/ml/model"
SHA256_ENV = "MLOPS_MODEL_SHA256"
MAX_REQUEST_ENV = "MLOPS_MAX_REQUEST_MB"
DEFAULT_PORT = 8080


class ModelHolder:
    """The verified model, loaded once; or why there is none."""

    def __init__(self) -> None:
        self.model: Any = None
        self.error: str | None = "loading"
        self.lock = threading.Lock()

    def load(self, model_dir: Path, expected_sha256: str | None, scratch: Path) -> None:
        from mlops_core.model_integrity import load_verified_model, verify_model_files

        try:
            copy = scratch / "model"
            shutil.copytree(model_dir, copy, symlinks=True)  # links are kept as links: the digest refuses them
            verify_model_files(copy, expected_sha256, f"the model under {model_dir}")
            self.model = load_verified_model(copy)
            self.error = None
            log.info("Model under %s verified (sha256 %s) and loaded", model_dir, expected_sha256)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("Not serving: %s", self.error)


def _handler(holder: ModelHolder, max_bytes: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "mlops-inference"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            log.info("%s %s", self.address_string(), format % args)

        def _answer(self, status: int, body: str, content_type: str = "text/plain; charset=utf-8") -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path != "/ping":
                self._answer(404, "only GET /ping and POST /invocations")
            elif holder.error is None:
                self._answer(200, "")
            else:
                self._answer(503, f"not serving: {holder.error}")

        def do_POST(self) -> None:
            if self.path != "/invocations":
                self._answer(404, "only GET /ping and POST /invocations")
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._answer(411, "a Content-Length is required")
                return
            if length > max_bytes:
                self._answer(413, f"request body of {length} bytes is over the limit of {max_bytes}")
                self.close_connection = True
                return
            body = self.rfile.read(length)
            if holder.error is not None:
                self._answer(503, f"not serving: {holder.error}")
                return
            status, answer, content_type = score(holder.model, body, self.headers.get("Content-Type", ""))
            self._answer(status, answer, content_type)

    return Handler


def score(model: Any, body: bytes, content_type: str) -> tuple[int, str, str]:
    """One request through MLflow's own scoring protocol: (status, body, content type)."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    try:
        with _one_at_a_time:
            answer = scoring_server.invocations(  # type: ignore[no-untyped-call]
                body, content_type or "application/json", model, model.metadata.get_input_schema()
            )
    except MlflowException as exc:
        return 400, json.dumps({"error_code": exc.error_code, "message": exc.message[:2000]}), "application/json"
    except Exception as exc:  # never take the server down for one request
        log.exception("Scoring failed")
        return (
            500,
            json.dumps({"error_code": "INTERNAL_ERROR", "message": f"{type(exc).__name__}: {exc}"}),
            ("application/json"),
        )
    return int(answer.status), str(answer.response), str(answer.mimetype)


_one_at_a_time = threading.Lock()  # scikit-learn pipelines are not documented as thread-safe


def serve(model_dir: Path, host: str, port: int, expected_sha256: str | None, max_bytes: int) -> ThreadingHTTPServer:
    """Start answering at once (``/ping`` says 503 until the model is verified and loaded); returns the server."""
    holder = ModelHolder()
    server = ThreadingHTTPServer((host, port), _handler(holder, max_bytes))
    server.daemon_threads = True
    scratch = Path(tempfile.mkdtemp(prefix="mlops-serve-"))
    server.scratch = scratch  # type: ignore[attr-defined]
    threading.Thread(target=holder.load, args=(model_dir, expected_sha256, scratch), daemon=True).start()
    return server


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", nargs="?", default="serve", choices=["serve"], help="SageMaker passes 'serve'")
    parser.add_argument("--model-dir", type=Path, default=Path(MODEL_DIR))
    parser.add_argument("--host", default="0.0.0.0")  # noqa: S104 - inside the container, SageMaker connects from outside
    parser.add_argument("--port", type=int, default=int(os.environ.get("SAGEMAKER_BIND_TO_PORT", DEFAULT_PORT)))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    max_bytes = int(float(os.environ.get(MAX_REQUEST_ENV, "6")) * 1024 * 1024)
    server = serve(args.model_dir, args.host, args.port, os.environ.get(SHA256_ENV), max_bytes)
    log.info("Serving %s on %s:%d (GET /ping, POST /invocations)", args.model_dir, args.host, args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        shutil.rmtree(server.scratch, ignore_errors=True)  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
