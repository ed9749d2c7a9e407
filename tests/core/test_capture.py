"""Prediction capture: the record shape, the writer, the window reader, serving health, and the
capture proxy in front of a real scoring process on loopback.

The proxy tests run ``LocalModelServer`` with capture on, over a stand-in scoring server (a stdlib
HTTP server taking ``mlflow models serve``'s arguments) so each start takes a second; the real
MLflow server behind the proxy is covered in ``test_serving.py``.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from conftest import StandInServer

from mlops_core.capture import (
    CaptureWriter,
    capture_prefix,
    capture_record,
    capture_rows,
    from_sagemaker,
    judge_serving_health,
    parse_rows,
    read_captures,
    request_id_from,
    serving_health,
    ship_captures,
)
from mlops_core.ports import free_port, port_is_free
from mlops_core.processes import group_alive, pid_alive
from mlops_core.serving import CaptureConfig, LocalModelServer
from mlops_core.storage import LocalObjectStore

T0 = datetime(2024, 5, 1, 23, 59, 58, tzinfo=UTC)


# ----------------------------------------------------------------------------- request rows
@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (
            {"dataframe_split": {"columns": ["customer_id", "x"], "data": [["a", 1], ["b", 2]]}},
            "application/json",
            (["customer_id", "x"], [["a", 1], ["b", 2]], "dataframe_split"),
        ),
        (
            {"dataframe_records": [{"customer_id": "a", "x": 1}, {"x": 2, "customer_id": "b"}]},
            "application/json",
            (["customer_id", "x"], [["a", 1], ["b", 2]], "dataframe_records"),
        ),
        (
            {"inputs": {"customer_id": ["a", "b"], "x": [1, 2]}},
            "application/json; charset=utf-8",
            (["customer_id", "x"], [["a", 1], ["b", 2]], "inputs"),
        ),
        ({"instances": [[1, 2], [3, 4]]}, None, (["0", "1"], [[1, 2], [3, 4]], "instances")),
        (b"customer_id,x\na,1\nb,2\n", "text/csv", (["customer_id", "x"], [["a", "1"], ["b", "2"]], "csv")),
    ],
)
def test_parse_rows_reads_every_scoring_format(body, content_type, expected):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    parsed = parse_rows(raw, content_type)
    assert (parsed.columns, parsed.rows, parsed.input_format) == expected and parsed.error is None


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b'{"dataframe_split": ', "malformed JSON"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"[1, 2, 3]", "not a JSON object"),
        (b'{"something": 1}', "no dataframe_split"),
        (b'{"dataframe_split": {"data": 5}}', "needs columns and data"),
        (b"[" * 100_000 + b"]" * 100_000, "malformed JSON"),  # nesting deeper than the parser's stack
    ],
)
def test_parse_rows_never_raises_on_hostile_bodies(raw, why):
    parsed = parse_rows(raw, "application/json")
    assert parsed.rows is None and why in (parsed.error or "")


def test_request_ids_from_clients_are_kept_only_when_plain():
    assert request_id_from("req-1:a.b_c") == "req-1:a.b_c"
    for hostile in ("", None, "../../etc/passwd", "a" * 129, "id\r\nSet-Cookie: x", "ïd"):
        made = request_id_from(hostile)
        assert made != hostile and len(made) == 32 and made.isalnum()


def test_capture_record_takes_entity_keys_from_rows_and_keeps_unreadable_bodies():
    ok = capture_record(
        request_id="r1",
        captured_at=T0,
        latency_ms=12.3456,
        status=200,
        target="local:dev",
        model_name="dev.churn",
        model_version="3",
        entity_key="customer_id",
        request_body=b'{"dataframe_split": {"columns": ["x", "customer_id"], "data": [[1, "c1"], [2, "c2"]]}}',
        request_content_type="application/json",
        response_body=b'{"predictions": [0, 1]}',
    )
    assert ok["entity_keys"] == ["c1", "c2"] and ok["predictions"] == [0, 1]
    assert ok["captured_at"] == "2024-05-01T23:59:58.000000+00:00" and ok["latency_ms"] == 12.346
    assert "input_error" not in ok and "output_error" not in ok
    bad = capture_record(
        request_id="r2",
        captured_at=T0,
        latency_ms=1.0,
        status=400,
        target="local:dev",
        model_name="dev.churn",
        model_version="3",
        entity_key="customer_id",
        request_body=b"{not json" + b"x" * 200_000,
        request_content_type="application/json",
        response_body=b"<html>bad</html>",
    )
    assert bad["rows"] is None and bad["entity_keys"] is None and "malformed JSON" in bad["input_error"]
    assert bad["raw_input"].startswith("{not json") and len(bad["raw_input"]) == 64 * 1024
    assert bad["predictions"] is None and bad["raw_output"] == "<html>bad</html>"


# ----------------------------------------------------------------------------- writing and reading
def _record(request_id: str, at: datetime, status: int = 200, latency: float | None = 5.0) -> dict:
    return capture_record(
        request_id=request_id,
        captured_at=at,
        latency_ms=latency,
        status=status,
        target="local:dev",
        model_name="dev.churn",
        model_version="1",
        entity_key="customer_id",
        request_body=json.dumps(
            {
                "dataframe_split": {
                    "columns": ["customer_id", "x"],
                    "data": [[request_id + "-a", 1], [request_id + "-b", 2]],
                }
            }
        ).encode(),
        request_content_type="application/json",
        response_body=b'{"predictions": [0.25, 0.75]}',
    )


def test_writer_flushes_by_count_by_time_and_on_close_into_day_partitions(tmp_path):
    store = LocalObjectStore(tmp_path / "store")
    prefix = capture_prefix("churn", "dev")
    writer = CaptureWriter(store, prefix, flush_records=3, flush_seconds=0.3)
    try:
        for i in range(3):  # crosses midnight: two partitions
            writer.add(_record(f"r{i}", T0 + timedelta(seconds=i)))
        _wait(lambda: len(store.list_keys(prefix)) == 2, 5)
        assert sorted(k.split("/")[3] for k in store.list_keys(prefix)) == [
            "event_date=2024-05-01",
            "event_date=2024-05-02",
        ]
        writer.add(_record("r3", T0 + timedelta(seconds=5)))  # below the count: the timer writes it
        _wait(lambda: len(store.list_keys(prefix)) == 3, 5)
        writer.add(_record("r4", T0 + timedelta(seconds=6)))
    finally:
        writer.close()  # and close writes the rest
    assert len(store.list_keys(prefix)) == 4
    assert not list((tmp_path / "store").rglob(".tmp*"))  # atomic writes leave no temporary files
    window = read_captures(store, "churn", "dev", T0, T0 + timedelta(minutes=1))
    assert [r["request_id"] for r in window] == ["r0", "r1", "r2", "r3", "r4"]
    only_may = read_captures(store, "churn", "dev", T0 - timedelta(hours=1), datetime(2024, 5, 2, tzinfo=UTC))
    assert [r["request_id"] for r in only_may] == ["r0", "r1"]
    rows = capture_rows(window)
    assert len(rows) == 10 and list(rows.columns[:6]) == [
        "request_id", "captured_at", "model_version", "status", "entity_key", "prediction"
    ]  # fmt: skip
    assert rows["entity_key"].tolist()[:4] == ["r0-a", "r0-b", "r1-a", "r1-b"]
    assert rows["prediction"].tolist()[:2] == [0.25, 0.75] and rows["x"].tolist()[:2] == [1, 2]
    assert str(rows["captured_at"].dtype) == "datetime64[ns, UTC]"


def test_a_failing_store_keeps_the_records_for_the_next_flush(tmp_path):
    class FlakyStore(LocalObjectStore):
        broken = True

        def put_bytes(self, key: str, data: bytes) -> None:
            if self.broken:
                raise OSError("store unavailable")
            super().put_bytes(key, data)

    store = FlakyStore(tmp_path / "store")
    writer = CaptureWriter(store, "captures/churn/dev/", flush_records=1000, flush_seconds=60, max_buffered=1000)
    writer.add(_record("kept", T0))
    assert writer.flush() == 0 and store.list_keys("captures/") == []
    store.broken = False
    assert writer.flush() == 1
    writer.close()
    assert [r["request_id"] for r in read_captures(store, "churn", "dev", T0, T0 + timedelta(seconds=1))] == ["kept"]


def test_ship_captures_moves_spooled_parts_to_the_store(tmp_path):
    spool, store = LocalObjectStore(tmp_path / "spool"), LocalObjectStore(tmp_path / "store")
    writer = CaptureWriter(spool, capture_prefix("churn", "dev"), flush_records=10, flush_seconds=60)
    writer.add(_record("a", T0))
    writer.close()
    moved = ship_captures(spool, store)
    assert moved == store.list_keys("captures/") and len(moved) == 1 and spool.list_keys("captures/") == []
    assert ship_captures(spool, store) == []


def test_serving_health_counts_errors_and_latency_percentiles():
    latencies = [float(v) for v in np.random.default_rng(3).gamma(2.0, 20.0, 200)]
    records = [_record(f"r{i}", T0, status=200, latency=v) for i, v in enumerate(latencies)]
    records += [_record("e1", T0, status=400, latency=1.0), _record("e2", T0, status=502, latency=2.0)]
    records.append(_record("sm", T0, status=200, latency=None))  # a SageMaker record measures no latency
    health = serving_health(records)
    measured = [*latencies, 1.0, 2.0]
    assert (health.requests, health.errors) == (203, 2) and health.error_rate == pytest.approx(2 / 203)
    assert health.p50_latency_ms == pytest.approx(np.percentile(measured, 50), abs=1e-3)
    assert health.p95_latency_ms == pytest.approx(np.percentile(measured, 95), abs=1e-3)
    assert serving_health([]).requests == 0 and serving_health([]).p95_latency_ms is None
    verdict = judge_serving_health(health, max_error_rate=0.005, max_p95_latency_ms=1e9, min_requests=10)
    assert not verdict.healthy and "error rate" in verdict.reasons[0]
    assert judge_serving_health(health, max_error_rate=0.5, max_p95_latency_ms=1e9, min_requests=10).healthy
    assert judge_serving_health(health, max_error_rate=0.0, max_p95_latency_ms=0.0, min_requests=1000).healthy


def test_sagemaker_capture_lines_become_capture_records():
    body = {"dataframe_split": {"columns": ["customer_id", "x"], "data": [["c9", 4]]}}
    line = {
        "captureData": {
            "endpointInput": {
                "observedContentType": "application/json",
                "mode": "INPUT",
                "data": json.dumps(body),
                "encoding": "JSON",
            },
            "endpointOutput": {
                "observedContentType": "application/json",
                "mode": "OUTPUT",
                "data": "eyJwcmVkaWN0aW9ucyI6IFsxXX0=",  # base64 of {"predictions": [1]}
                "encoding": "BASE64",
            },
        },
        "eventMetadata": {"eventId": "e-1", "inferenceTime": "2024-05-01T10:00:00Z"},
        "eventVersion": "0",
    }
    record = from_sagemaker(line, target="sagemaker:dev-churn", model_name="dev.churn", entity_key="customer_id")
    assert record["request_id"] == "e-1" and record["entity_keys"] == ["c9"] and record["predictions"] == [1]
    assert record["captured_at"] == "2024-05-01T10:00:00.000000+00:00" and record["latency_ms"] is None
    assert record["status"] == 200 and record["columns"] == ["customer_id", "x"]
    line["eventMetadata"]["inferenceId"] = "client-7"
    assert from_sagemaker(line, target="t", model_name="m", entity_key=None)["request_id"] == "client-7"


def test_read_captures_reads_sagemaker_hour_folders_of_the_window(tmp_path):
    store = LocalObjectStore(tmp_path / "store")

    def line(event: str, at: str) -> str:
        data = json.dumps({"dataframe_split": {"columns": ["customer_id"], "data": [[event]]}})
        return json.dumps(
            {
                "captureData": {
                    "endpointInput": {"observedContentType": "application/json", "data": data, "encoding": "JSON"},
                    "endpointOutput": {
                        "observedContentType": "application/json",
                        "data": '{"predictions": [0]}',
                        "encoding": "JSON",
                    },
                },
                "eventMetadata": {"eventId": event, "inferenceTime": at},
            }
        )

    base = capture_prefix("churn", "prod") + "sagemaker/prod-churn/main"
    store.put_bytes(f"{base}/2024/05/01/10/a.jsonl", (line("in", "2024-05-01T10:30:00Z") + "\n").encode())
    store.put_bytes(f"{base}/2024/05/01/09/b.jsonl", (line("before", "2024-05-01T09:59:00Z") + "\n").encode())
    store.put_bytes(f"{base}/2024/05/01/11/c.jsonl", (line("after", "2024-05-01T11:00:00Z") + "\n").encode())
    window = read_captures(
        store, "churn", "prod", datetime(2024, 5, 1, 10, tzinfo=UTC), datetime(2024, 5, 1, 11, tzinfo=UTC),
        entity_key="customer_id",
    )  # fmt: skip
    assert [(r["request_id"], r["target"], r["entity_keys"]) for r in window] == [
        ("in", "sagemaker:prod-churn", ["in"])
    ]


# ----------------------------------------------------------------------------- the proxy, real processes
UPSTREAM = r"""
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

argv = sys.argv[1:]
uri, host, port = (argv[argv.index(flag) + 1] for flag in ("-m", "-h", "-p"))
print("stand-in scoring server for", uri, "on", port, flush=True)
if "broken" in uri:
    sys.exit(3)

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, status, body, kind="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/version":
            self._send(200, b"stand-in-1.0", "text/plain")
        else:
            self._send(200 if self.path in ("/ping", "/health") else 404, b"\n")

    def do_POST(self):
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        try:
            split = json.loads(raw)["dataframe_split"]
            at = split["columns"].index("tenure")
            predictions = [row[at] * 2 for row in split["data"]]
        except Exception as exc:
            self._send(400, json.dumps({"error_code": "BAD_REQUEST", "message": str(exc)[:100]}).encode())
            return
        self._send(200, json.dumps({"predictions": predictions}).encode())

    def log_message(self, *args):
        pass

HTTPServer((host, int(port)), Handler).serve_forever()
"""


@pytest.fixture
def capturing(tmp_path):
    script = tmp_path / "stand_in_scoring_server.py"
    script.write_text(UPSTREAM)
    servers: list[StandInServer] = []

    def make(store_root: Path | None = None, **options) -> StandInServer:
        capture = CaptureConfig(
            store_root=str(store_root or tmp_path / "store"),
            model_name="dev.churn",
            model_dir="churn",
            env="dev",
            entity_key="customer_id",
            **{"flush_records": 1000, "flush_seconds": 600.0, **options},
        )
        srv = StandInServer(tmp_path / "state" / str(len(servers)), "127.0.0.1", free_port(), "", capture=capture)
        srv.script = script
        servers.append(srv)
        return srv

    yield make
    LocalModelServer.stop_all(tmp_path / "state")
    for srv in servers:
        assert port_is_free("127.0.0.1", srv.port)


def _post(url: str, body: bytes, headers: dict[str, str] | None = None, path: str = "/invocations"):
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        connection.close()


def _get(url: str, path: str):
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def _split(rows: list[list]) -> bytes:
    return json.dumps({"dataframe_split": {"columns": ["customer_id", "tenure"], "data": rows}}).encode()


def _window(store_root: Path) -> list[dict]:
    now = datetime.now(UTC)
    return read_captures(
        LocalObjectStore(store_root), "churn", "dev", now - timedelta(hours=1), now + timedelta(hours=1)
    )


def test_every_request_is_captured_with_its_id_keys_predictions_and_latency(capturing, tmp_path):
    srv = capturing()
    deployment = srv.deploy("models:/dev.churn/4", "4", startup_timeout=60)
    assert _get(srv.url, "/version") == (200, b"stand-in-1.0")  # pass-through
    assert _get(srv.url, "/ping")[0] == 200
    sent = {}
    for i in range(5):
        rows = [[f"c{i}-{j}", i * 10 + j] for j in range(i + 1)]
        status, headers, answer = _post(srv.url, _split(rows), {"X-Request-Id": f"client-{i}"})
        assert status == 200 and headers["X-Request-Id"] == f"client-{i}"
        assert json.loads(answer)["predictions"] == [r[1] * 2 for r in rows]
        sent[f"client-{i}"] = rows
    status, headers, _ = _post(srv.url, _split([["anon", 1]]))
    generated = headers["X-Request-Id"]
    assert status == 200 and len(generated) == 32
    assert _window(tmp_path / "store") == []  # nothing flushed yet (600 s, 1000 records)

    srv.stop()  # SIGTERM to the group: the proxy writes what it holds before it exits
    assert not group_alive(deployment.pid)
    records = {r["request_id"]: r for r in _window(tmp_path / "store")}
    assert set(records) == {*sent, generated}
    for request_id, rows in sent.items():
        record = records[request_id]
        assert record["entity_keys"] == [r[0] for r in rows]
        assert record["rows"] == rows and record["columns"] == ["customer_id", "tenure"]
        assert record["predictions"] == [r[1] * 2 for r in rows]
        assert record["status"] == 200 and record["latency_ms"] > 0
        assert (record["model_name"], record["model_version"], record["target"]) == ("dev.churn", "4", "local:dev")
    keys = LocalObjectStore(tmp_path / "store").list_keys("captures/")
    today = datetime.now(UTC).date().isoformat()
    assert keys and all(k.startswith(f"captures/churn/dev/event_date={today}/part-") for k in keys)


def test_records_are_flushed_while_serving_every_n_records(capturing, tmp_path):
    srv = capturing(flush_records=3)
    srv.deploy("models:/dev.churn/1", "1", startup_timeout=60)
    for i in range(3):
        assert _post(srv.url, _split([[f"k{i}", i]]))[0] == 200
    _wait(lambda: len(_window(tmp_path / "store")) == 3, 10)
    assert srv.verify("1")


def test_hostile_bodies_are_answered_and_recorded_as_such(capturing, tmp_path):
    srv = capturing()
    srv.deploy("models:/dev.churn/1", "1", startup_timeout=60)
    status, headers, answer = _post(srv.url, b'{"dataframe_split": [1, 2', {"X-Request-Id": "malformed"})
    assert status == 400 and b"BAD_REQUEST" in answer  # forwarded: the model server answered it
    status, headers, _ = _post(srv.url, b"x" * (6 * 1024 * 1024 + 1), {"X-Request-Id": "huge"})
    assert status == 413 and headers["X-Request-Id"] == "huge"
    status, headers, _ = _post(srv.url, b"\xff\xfe" * 10, {"X-Request-Id": "id\twith tab"})
    assert status == 400 and headers["X-Request-Id"] != "id\twith tab"
    # no Content-Length: refused, not waited on
    host, port = srv.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.putrequest("POST", "/invocations")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    assert connection.getresponse().status == 411
    connection.close()
    assert _post(srv.url, _split([["fine", 3]]))[0] == 200  # the proxy still serves
    srv.stop()
    records = {r["request_id"]: r for r in _window(tmp_path / "store")}
    assert "malformed JSON" in records["malformed"]["input_error"] and records["malformed"]["status"] == 400
    assert records["malformed"]["raw_input"] == '{"dataframe_split": [1, 2'
    assert records["huge"]["status"] == 413 and records["huge"]["rows"] is None
    odd = [r for r in records.values() if "not UTF-8" in (r.get("input_error") or "")]
    assert len(odd) == 1 and odd[0]["status"] == 400
    assert [r["predictions"] for r in records.values() if r["status"] == 200] == [[6]]
    assert serving_health(records.values()).errors == 3


def test_a_broken_capture_store_never_fails_scoring(capturing, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folders would go")
    srv = capturing(store_root=blocker, flush_records=1)
    deployment = srv.deploy("models:/dev.churn/1", "1", startup_timeout=60)
    for i in range(4):
        status, _, answer = _post(srv.url, _split([[f"k{i}", i]]))
        assert status == 200 and json.loads(answer)["predictions"] == [i * 2]
    assert srv.verify("1") and pid_alive(deployment.pid)
    srv.stop()
    log = Path(deployment.log_path).read_text()
    assert "could not write 1 capture record(s)" in log and blocker.is_file()


def test_a_model_server_that_exits_fails_the_deploy_through_the_proxy(capturing):
    srv = capturing()
    with pytest.raises(Exception, match="exited with code 3"):
        srv.deploy("models:/dev.churn-broken/1", "1", startup_timeout=60)
    assert srv.current() is None and port_is_free("127.0.0.1", srv.port)


def test_sigterm_to_the_proxy_alone_flushes_and_takes_the_model_server_down(capturing, tmp_path):
    srv = capturing()
    deployment = srv.deploy("models:/dev.churn/1", "1", startup_timeout=60)
    assert _post(srv.url, _split([["only", 1]]), {"X-Request-Id": "last"})[0] == 200
    os.kill(deployment.pid, signal.SIGTERM)  # the leader only, not the group
    _wait(lambda: not group_alive(deployment.pid), 20)
    assert [r["request_id"] for r in _window(tmp_path / "store")] == ["last"]


def _wait(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# ----------------------------------------------------------------------------- settings
def test_the_environment_server_captures_as_the_settings_say(mlops_home):
    from mlops_core.backends import capture_spool, local_model_server
    from mlops_core.settings import SettingsError, load_settings, with_overrides

    settings = load_settings("dev")
    capture = local_model_server(settings).capture
    assert capture is not None and capture.store_root == settings.storage_root
    assert capture.prefix == f"captures/{settings.training.model_name}/dev/"
    assert (capture.model_name, capture.entity_key) == (settings.registered_model_name, "customer_id")
    assert (capture.sample_rate, capture.flush_records, capture.flush_seconds) == (1.0, 100, 10.0)
    tuned = with_overrides(settings, capture={"sampling_percent": 25, "flush_records": 7, "flush_seconds": 2})
    assert (
        local_model_server(tuned).capture.sample_rate == 0.25 and local_model_server(tuned).capture.flush_records == 7
    )
    assert local_model_server(with_overrides(settings, capture={"enabled": False})).capture is None
    on_s3 = with_overrides(
        settings,
        backends={"storage": "aws", "compute": "aws"},
        storage={"root": "s3://bucket/mlops/dev"},
        aws={"sagemaker_role_arn": "arn:aws:iam::123456789012:role/r", "training_image": "img:1"},
    )
    assert local_model_server(on_s3).capture.store_root == str(capture_spool(on_s3))
    with pytest.raises(SettingsError, match=r"capture\.sampling_percent"):
        with_overrides(settings, capture={"sampling_percent": 0})
    with pytest.raises(SettingsError, match=r"serving_health\.max_error_rate"):
        with_overrides(settings, serving_health={"max_error_rate": 1.5})


def test_environment_captures_ships_the_spool_and_judges_health(mlops_home, tmp_path):
    from mlops_core.backends import capture_spool
    from mlops_core.capture import environment_captures, serving_health_verdict
    from mlops_core.settings import load_settings, with_overrides

    settings = with_overrides(
        load_settings("dev"),
        backends={"storage": "aws", "compute": "aws"},
        storage={"root": "s3://bucket/mlops/dev"},
        aws={"sagemaker_role_arn": "arn:aws:iam::123456789012:role/r", "training_image": "img:1"},
        serving_health={"min_requests": 2, "max_error_rate": 0.4},
    )
    writer = CaptureWriter(
        LocalObjectStore(capture_spool(settings)), capture_prefix(settings.training.model_name, "dev"), flush_records=10
    )
    for i, status in enumerate((200, 200, 503)):
        writer.add(_record(f"r{i}", T0 + timedelta(seconds=i), status=status))
    writer.close()
    store = LocalObjectStore(tmp_path / "environment-store")  # stands in for the S3 store the caller builds
    records = environment_captures(settings, store, T0, T0 + timedelta(minutes=5))
    assert [r["request_id"] for r in records] == ["r0", "r1", "r2"]
    assert LocalObjectStore(capture_spool(settings)).list_keys("captures/") == []  # moved, not copied
    verdict = serving_health_verdict(records, settings.serving_health)
    assert verdict.health.requests == 3 and verdict.health.errors == 1 and verdict.healthy
    strict = with_overrides(settings, serving_health={"max_error_rate": 0.1})
    assert not serving_health_verdict(records, strict.serving_health).healthy
