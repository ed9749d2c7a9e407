"""LocalModelServer against real `mlflow models serve` processes on loopback.

Starting a scoring server costs two MLflow imports plus the model load, so the real-server tests
share one registry (two versions whose predictions are opposite) and one server, and run in file
order: deploy v1 -> smoke/verify -> switch to v2 -> stop. The rest of the rollout logic runs against
a stand-in server process (see ``StandInServer``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TOY_FEATURES, StandInServer, register_toy_model, toy_frame

from mlops_core.capture import read_captures
from mlops_core.model_integrity import MODEL_SHA256_TAG, ModelIntegrityError
from mlops_core.ports import free_port, port_is_free
from mlops_core.processes import group_alive, pid_alive
from mlops_core.registry import ModelRegistry
from mlops_core.serving import (
    DEPLOYMENT_FILE,
    CaptureConfig,
    DeploymentFailed,
    LocalModelServer,
    PortInUseError,
    SmokeTestFailed,
    dataframe_split_payload,
)
from mlops_core.serving_target import LocalServing, Serving, SmokeResult
from mlops_core.storage import LocalObjectStore
from tests.model_tampering import artifact_folder, swap_skops, tamper_to_pickle

FEATURES = TOY_FEATURES
MODEL = "dev.serve"


def frame(n: int = 80, seed: int = 1) -> pd.DataFrame:
    df = toy_frame(n, seed)
    df["churned"] = (df["tenure"] < 40).astype(int)
    return df


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return frame()


def register_version(registry: ModelRegistry, data: pd.DataFrame, labels: pd.Series, run_name: str) -> str:
    return register_toy_model(registry, MODEL, data, labels, run_name=run_name, dataset_name="churn")


@pytest.fixture(scope="module")
def registry(tmp_path_factory, data) -> ModelRegistry:
    """Version 1 predicts churn; version 2 (trained on flipped labels) predicts the opposite."""
    root = tmp_path_factory.mktemp("mlflow")
    registry = ModelRegistry(f"sqlite:///{root}/mlflow.db", root / "artifacts", "serving-tests")
    for i, labels in enumerate((data["churned"], 1 - data["churned"]), start=1):
        assert register_version(registry, data, labels, f"serve-run-{i}") == str(i)
    return registry


@pytest.fixture(scope="module")
def server(tmp_path_factory, registry):
    """The real server, behind the capture proxy (as ``backends.local_model_server`` builds it by default)."""
    state = tmp_path_factory.mktemp("serving")
    capture = CaptureConfig(
        store_root=str(state / "store"), model_name=MODEL, model_dir="serve", env="dev", entity_key="customer_id",
        flush_records=1, flush_seconds=0.5,
    )  # fmt: skip
    srv = LocalModelServer(state / "dev", "127.0.0.1", free_port(), registry.tracking_uri, capture=capture)
    yield srv
    LocalModelServer.stop_all(state)


def uri(version: str) -> str:
    return ModelRegistry.model_uri(MODEL, version)


# ----------------------------------------------------------------------------- no server needed
def test_payload_is_dataframe_split_with_nulls_and_iso_timestamps():
    rows = pd.DataFrame(
        {
            "x": [1.5, np.nan],
            "n": np.array([1, 2], dtype="int64"),
            "s": ["a", None],
            "t": pd.to_datetime(["2024-01-01T00:00:00Z", None], utc=True),
        },
        index=[10, 11],
    )
    body = json.loads(dataframe_split_payload(rows))
    assert body == {
        "dataframe_split": {
            "columns": ["x", "n", "s", "t"],
            "data": [[1.5, 1, "a", "2024-01-01T00:00:00.000000Z"], [None, 2, None, None]],
        }
    }


def test_nothing_deployed(tmp_path):
    srv = LocalModelServer(tmp_path / "none", "127.0.0.1", free_port(), "sqlite:///unused.db")
    assert srv.current() is None
    assert srv.verify("1") is False
    assert srv.stop() is None
    assert srv.rollback() is None
    with pytest.raises(SmokeTestFailed, match="nothing is deployed"):
        srv.smoke_test(pd.DataFrame({"a": [1]}))


def test_port_held_by_a_foreign_socket_is_refused(tmp_path):
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        port = foreign.getsockname()[1]
        srv = LocalModelServer(tmp_path / "srv", "127.0.0.1", port, "sqlite:///unused.db")
        expected = f"port {port} on 127.0.0.1 is in use by a process this server did not start"
        with pytest.raises(PortInUseError, match=expected):
            srv.deploy("models:/dev.serve/1", "1")
    assert not (tmp_path / "srv" / DEPLOYMENT_FILE).exists()
    assert not (tmp_path / "srv" / "starting.json").exists()


# ----------------------------------------------------------------------------- real MLflow servers, in order
def test_deploy_serves_the_version_and_smoke_test_predicts(server, registry, data):
    deployment = server.deploy(uri("1"), "1")
    assert deployment.url == f"http://127.0.0.1:{server.port}"
    assert pid_alive(deployment.pid)
    recorded = json.loads((server.state_dir / DEPLOYMENT_FILE).read_text())
    assert {k: recorded[k] for k in ("model_uri", "model_version", "pid", "port", "url")} == {
        "model_uri": "models:/dev.serve/1",
        "model_version": "1",
        "pid": deployment.pid,
        "port": server.port,
        "url": deployment.url,
    }
    assert recorded["started_at"]

    rows = data[FEATURES].head(5)
    # Columns outside the signature (a timestamp with a missing value here) travel as ISO strings
    # and nulls; the server ignores them.
    extra = pd.to_datetime(["2024-01-01T00:00:00Z", None] + [f"2024-01-0{d}T00:00:00Z" for d in (2, 3, 4)], utc=True)
    result = server.smoke_test(rows.assign(event_time=extra))
    expected = registry.load_model(MODEL, "1").predict(rows)
    assert result["predictions"] == [int(p) for p in expected]
    assert result["model_version"] == "1" and result["latency_ms"] > 0

    assert server.verify("1") is True
    assert server.verify("2") is False
    assert server.current()["alive"] is True

    again = server.deploy(uri("1"), "1")  # a retried deploy of the live version restarts nothing
    assert again.pid == deployment.pid


def test_failing_smoke_test_raises_with_the_server_answer(server, data):
    with pytest.raises(SmokeTestFailed, match=r"HTTP 400.*(plan|charges|missing|column)"):
        server.smoke_test(data[["tenure"]].head(3))  # columns the model needs are missing
    assert server.verify("1") is True  # a bad request does not take the server down


def test_a_tampered_version_is_refused_before_the_live_server_is_touched(server, registry, data, tmp_path):
    live = server.current()
    pickled = register_version(registry, data, data["churned"], "serve-run-pickled")
    canary = tmp_path / "canary"
    tamper_to_pickle(artifact_folder(registry, MODEL, pickled), canary)
    swapped = register_version(registry, data, data["churned"], "serve-run-swapped")
    swap_skops(artifact_folder(registry, MODEL, swapped), artifact_folder(registry, MODEL, "2"))
    for version in (pickled, swapped):
        expected = registry.version_info(MODEL, version).tags.get(MODEL_SHA256_TAG)
        with pytest.raises(
            ModelIntegrityError, match=f"{MODEL} version {version}: .*expected sha256 {expected}, found"
        ):
            server.deploy(uri(version), version)
    assert not canary.exists()
    assert server.current()["pid"] == live["pid"] and server.verify("1", live["model_sha256"])
    assert [e["event"] for e in server.history()] == ["deployed"]  # nothing happened
    # Only the live version's verified copy is on disk: a refused download leaves nothing behind.
    assert list((server.state_dir / "models").iterdir()) == [Path(live["model_path"]).parent]


def test_the_scoring_server_itself_refuses_pickle(registry, data, tmp_path):
    """Defence in depth: were verification skipped, the server's own environment still refuses pickle."""

    class UnverifiedServer(LocalModelServer):
        """Simulates a verification bug: serves the artifact store's folder as it is."""

        folder: str

        def _fetch_verified(self, model_uri, model_version, expected_sha256):
            return self.folder, "unverified"

    version = register_version(registry, data, data["churned"], "serve-run-pickled-unverified")
    folder = artifact_folder(registry, MODEL, version)
    canary = tmp_path / "canary"
    tamper_to_pickle(folder, canary)
    srv = UnverifiedServer(tmp_path / "state", "127.0.0.1", free_port(), registry.tracking_uri)
    srv.folder = str(folder)
    try:
        with pytest.raises(DeploymentFailed, match="exited with code") as failure:
            srv.deploy(uri(version), version)
        assert "MLFLOW_ALLOW_PICKLE_DESERIALIZATION" in str(failure.value)  # MLflow's refusal, from the log
    finally:
        srv.stop()
    assert not canary.exists()


def test_redeploy_switches_to_the_new_version(server, registry, data):
    old_pid = server.current()["pid"]
    deployment = server.deploy(uri("2"), "2")
    assert deployment.pid != old_pid
    assert not pid_alive(old_pid)
    assert server.verify("2") is True and server.verify("1") is False
    rows = data[FEATURES].head(8)
    v1 = [int(p) for p in registry.load_model(MODEL, "1").predict(rows)]
    predictions = server.smoke_test(rows)["predictions"]
    assert predictions == [1 - p for p in v1]  # version 2 answers, not version 1
    events = [(e["event"], e.get("model_version")) for e in server.history()]
    assert events == [("deployed", "1"), ("deployed", "2")]


def test_requests_to_the_real_server_are_captured(server, registry, data):
    """Through the capture proxy: the answer is MLflow's, the record holds id, keys, rows and predictions."""
    import http.client

    rows = data[FEATURES].head(6).assign(customer_id=[f"cust-{i}" for i in range(6)])
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    connection.request(
        "POST",
        "/invocations",
        body=dataframe_split_payload(rows),
        headers={"Content-Type": "application/json", "X-Request-Id": "real-1"},
    )
    answer = connection.getresponse()
    predictions = json.loads(answer.read())["predictions"]
    connection.close()
    assert answer.status == 200 and answer.getheader("X-Request-Id") == "real-1"
    expected = [int(p) for p in registry.load_model(MODEL, "2").predict(rows[FEATURES])]
    assert predictions == expected
    store = LocalObjectStore(server.capture.store_root)
    now = pd.Timestamp.now(tz="UTC").to_pydatetime()

    def captured() -> dict:
        window = read_captures(store, "serve", "dev", now - pd.Timedelta(hours=1), now + pd.Timedelta(hours=1))
        return {r["request_id"]: r for r in window}

    _wait(lambda: "real-1" in captured(), 20)
    record = captured()["real-1"]
    assert record["entity_keys"] == rows["customer_id"].tolist() and record["predictions"] == expected
    assert record["model_version"] == "2" and record["status"] == 200 and record["latency_ms"] > 0
    assert record["rows"] == json.loads(dataframe_split_payload(rows))["dataframe_split"]["data"]
    others = [r for r in captured().values() if r["request_id"] != "real-1"]  # the smoke tests' requests
    assert any(r["status"] == 200 and len(r["predictions"]) == len(r["rows"]) for r in others)
    assert all(len(r["request_id"]) == 32 for r in others)  # ids made up for clients that sent none


def test_serving_seam_says_what_is_live_without_process_details(server, registry, data):
    """The deploy stage's view of the same server: LiveModel / SmokeResult, no pid or port in them."""
    seam = LocalServing(server, "dev")
    assert isinstance(seam, Serving)
    live = seam.live()
    assert live is not None and live.model_version == "2" and live.healthy
    assert live.target == "local:dev" and live.endpoint == server.url and len(live.model_sha256) == 64
    assert not {"pid", "port", "host", "log_path", "model_path"} & set(live.to_dict())
    pid = server.current()["pid"]
    assert seam.deploy(uri("2"), "2", expected_sha256=live.model_sha256, startup_timeout=120) == live
    assert server.current()["pid"] == pid  # the live version again: nothing restarted
    rows = data[FEATURES].head(4)
    smoke = seam.smoke_test(rows)
    assert isinstance(smoke, SmokeResult) and len(smoke.predictions) == 4 and smoke.endpoint == server.url
    assert seam.verify("2", live.model_sha256) and not seam.verify("1")
    back = seam.rollback(startup_timeout=120)  # the version live before 2
    assert back is not None and back.model_version == "1" and back.healthy
    assert seam.live() == back and seam.verify("1") and not seam.verify("2")
    v1 = [int(p) for p in registry.load_model(MODEL, "1").predict(rows)]
    assert seam.smoke_test(rows).predictions == v1


def test_serving_seam_with_nothing_deployed(tmp_path):
    seam = LocalServing(LocalModelServer(tmp_path / "none", "127.0.0.1", free_port(), "sqlite:///unused.db"), "dev")
    assert seam.live() is None and seam.verify("1") is False
    assert seam.rollback(startup_timeout=5) is None and seam.stop() is None
    with pytest.raises(SmokeTestFailed, match="nothing is deployed"):
        seam.smoke_test(pd.DataFrame({"a": [1]}))


def test_stop_leaves_no_process(server):
    deployment = server.current()
    pid = deployment["pid"]
    stopped = server.stop()
    assert stopped is not None and stopped.pid == pid
    assert not pid_alive(pid)
    assert not group_alive(pid)  # the uvicorn child went with the CLI process
    assert port_is_free("127.0.0.1", server.port)
    assert server.current() is None and server.verify("1") is False
    assert server.history()[-1]["event"] == "stopped"
    assert not (server.state_dir / DEPLOYMENT_FILE).exists()


# ----------------------------------------------------------------------------- rollout logic, stand-in server
# Starting a real MLflow server takes many seconds, so the rollout logic (rollback, restore after a
# failed start, timeouts, lost processes, stop_all) is exercised with a tiny stand-in: a stdlib HTTP
# server that takes the same arguments as `mlflow models serve` and answers /ping and /invocations.
FAKE_SERVER = r"""
import json, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

argv = sys.argv[1:]
uri, host, port = (argv[argv.index(flag) + 1] for flag in ("-m", "-h", "-p"))
print("fake scoring server for", uri, flush=True)
if "broken" in uri:
    print("MlflowException: cannot load model", uri, flush=True)
    sys.exit(3)
if "hang" in uri:
    time.sleep(600)

class Handler(BaseHTTPRequestHandler):
    def _send(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send(200 if self.path in ("/ping", "/health") else 404, b"\n")

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        rows = len(body["dataframe_split"]["data"])
        self._send(200, json.dumps({"predictions": [uri] * rows}).encode())

    def log_message(self, *args):
        pass

HTTPServer((host, int(port)), Handler).serve_forever()
"""


@pytest.fixture
def stand_in(tmp_path):
    script = tmp_path / "fake_scoring_server.py"
    script.write_text(FAKE_SERVER)
    servers = []

    def make(name: str = "srv") -> StandInServer:
        srv = StandInServer(tmp_path / "state" / name, "127.0.0.1", free_port(), "sqlite:///unused.db")
        srv.script = script
        servers.append(srv)
        return srv

    yield make
    LocalModelServer.stop_all(tmp_path / "state")
    for srv in servers:
        assert port_is_free("127.0.0.1", srv.port)


def test_rollback_redeploys_the_version_served_before(stand_in):
    srv = stand_in()
    srv.deploy("models:/m/1", "1", startup_timeout=30)
    srv.deploy("models:/m/2", "2", startup_timeout=30)
    assert srv.smoke_test(pd.DataFrame({"a": [1, 2]}))["predictions"] == ["models:/m/2"] * 2
    back = srv.rollback(startup_timeout=30)
    assert back.model_version == "1" and srv.verify("1")
    assert srv.smoke_test(pd.DataFrame({"a": [1]}))["predictions"] == ["models:/m/1"]
    assert srv.rollback(startup_timeout=30).model_version == "2"  # rolling back again swaps back
    assert [e["model_version"] for e in srv.history()] == ["1", "2", "1", "2"]


def test_failed_start_restores_the_previous_version(stand_in):
    srv = stand_in()
    first = srv.deploy("models:/m/1", "1", startup_timeout=30)
    with pytest.raises(DeploymentFailed) as failure:
        srv.deploy("models:/m-broken/2", "2", startup_timeout=30)
    message = str(failure.value)
    assert "exited with code 3" in message
    assert "MlflowException: cannot load model models:/m-broken/2" in message  # the log's tail
    assert "previous version 1 was restored" in message
    assert not pid_alive(first.pid)
    assert srv.verify("1") is True and srv.verify("2") is False
    assert [(e["event"], e["model_version"]) for e in srv.history()] == [("deployed", "1"), ("restored", "1")]


def test_failed_start_with_nothing_before_leaves_nothing(stand_in):
    srv = stand_in()
    with pytest.raises(DeploymentFailed, match="exited with code 3"):
        srv.deploy("models:/m-broken/1", "1", startup_timeout=30)
    assert srv.current() is None
    assert not (srv.state_dir / "starting.json").exists()
    assert port_is_free("127.0.0.1", srv.port)


def test_startup_timeout_kills_the_new_server(stand_in):
    srv = stand_in()
    with pytest.raises(DeploymentFailed, match=r"did not answer .*/ping within 2s"):
        srv.deploy("models:/m-hang/1", "1", startup_timeout=2)
    assert srv.current() is None
    started = list(_processes_with_arg("models:/m-hang/1"))
    assert started == []


def test_a_dead_server_is_noticed_and_redeployed(stand_in):
    srv = stand_in()
    first = srv.deploy("models:/m/1", "1", startup_timeout=30)
    os.killpg(first.pid, signal.SIGKILL)
    _wait(lambda: not pid_alive(first.pid))
    assert srv.current()["alive"] is False
    assert srv.verify("1") is False
    again = srv.deploy("models:/m/1", "1", startup_timeout=30)  # not a no-op: the process is gone
    assert again.pid != first.pid and srv.verify("1")
    assert [e["event"] for e in srv.history()] == ["deployed", "lost", "deployed"]


def test_stop_all_stops_every_server_under_a_root(stand_in):
    dev, staging = stand_in("dev"), stand_in("staging")
    pids = [dev.deploy("models:/dev.m/1", "1", 30).pid, staging.deploy("models:/staging.m/1", "1", 30).pid]
    stopped = LocalModelServer.stop_all(dev.state_dir.parent)
    assert sorted(d.pid for d in stopped) == sorted(pids)
    assert not any(pid_alive(p) for p in pids)
    assert dev.current() is None and staging.current() is None


def _wait(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _processes_with_arg(arg: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if arg.encode() in argv and pid_alive(int(entry.name)):
                found.append(int(entry.name))
    return found
