"""``mlops_demo.mlflow_server.MlflowServer``: a real ``mlflow server`` on loopback, started and stopped.

SQLite: the server creates a fresh store (owner-only), a client writes a run into that store
directly, as the tasks of ``make up`` do, and the server's REST API, artifact endpoint and UI
show it. PostgreSQL (the server on 127.0.0.1:5432, ``MLOPS_TEST_PG_URL`` for another; the test
creates and drops its own database; in CI a missing server fails the test): a client logs through
the server, and the store URI's password reaches no command line and no log. Both stop the server
and check that no process of its session is left.
"""

from __future__ import annotations

import os
import stat
import uuid

import psutil
import pytest
import requests

from mlops_demo.mlflow_server import MlflowServer, MlflowServerError, masked_uri

STARTUP_TIMEOUT = 600  # seconds; 100-170 s were measured with five sessions sharing two cores
PG_URL = os.environ.get("MLOPS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _session(leader: int) -> dict[int, str]:
    """pid -> command line of every live process in the session led by ``leader``."""
    found = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if os.getsid(proc.pid) == leader and proc.status() != psutil.STATUS_ZOMBIE:
                found[proc.pid] = " ".join(proc.info["cmdline"] or [])
        except (OSError, psutil.Error):
            continue
    return found


def _run(server: MlflowServer, run_id: str) -> dict:
    response = requests.get(f"{server.url}/api/2.0/mlflow/runs/get", params={"run_id": run_id}, timeout=10)
    response.raise_for_status()
    return response.json()["run"]


@pytest.fixture
def postgres_store():
    """A fresh PostgreSQL database for an MLflow store, as a URI *with* a password (trust auth ignores it)."""
    from sqlalchemy import create_engine, make_url, text

    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"mlops_test_mlflow_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {PG_URL} is required in CI: {exc}")
        pytest.skip(f"no PostgreSQL at {PG_URL} (run scripts/ensure_services.sh): {exc}")
    password = f"pw-{uuid.uuid4().hex}"
    url = make_url(PG_URL).set(drivername="postgresql+psycopg", database=name)
    if url.password is None:
        url = url.set(password=password)
    try:
        yield url.render_as_string(hide_password=False), url.password
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_serves_the_runs_written_to_its_sqlite_store_and_stops_cleanly(tmp_path):
    from mlflow.tracking import MlflowClient

    store = tmp_path / "mlflow" / "mlflow.db"
    artifacts = tmp_path / "mlflow" / "artifacts"
    server = MlflowServer(f"sqlite:///{store}", artifacts, log_path=tmp_path / "server.log")
    assert server.url == f"http://127.0.0.1:{server.port}"
    with server.start(timeout=STARTUP_TIMEOUT):
        assert server.healthy()
        leader = server.pid
        # a fresh store, created by the server before it answered, owner-only (umask 077)
        assert stat.S_IMODE(store.stat().st_mode) == 0o600
        session = _session(server.pid)
        assert any("uvicorn" in argv for argv in session.values())  # the CLI and its uvicorn

        # a task writes straight into the store, as the DAGs of `make up` do
        client = MlflowClient(tracking_uri=f"sqlite:///{store}")
        experiment = client.create_experiment("served", artifact_location=str(artifacts / "served"))
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "roc_auc", 0.87)
        notes = tmp_path / "notes.txt"
        notes.write_text("trained on v1")
        client.log_artifact(run.info.run_id, str(notes))
        client.set_terminated(run.info.run_id)

        shown = _run(server, run.info.run_id)
        metric = shown["data"]["metrics"][0]
        assert (metric["key"], metric["value"]) == ("roc_auc", 0.87)
        assert shown["info"]["status"] == "FINISHED"
        artifact = requests.get(
            f"{server.url}/get-artifact", params={"path": "notes.txt", "run_uuid": run.info.run_id}, timeout=10
        )
        assert artifact.status_code == 200 and artifact.text == "trained on v1"
        ui = requests.get(server.url + "/", timeout=10)
        assert ui.status_code == 200 and "<title>MLflow</title>" in ui.text

        with pytest.raises(MlflowServerError, match="already running"):
            server.start()
    assert not server.running
    assert _session(leader) == {}
    assert [pid for pid in session if _session_of(pid) == leader] == []
    assert not server.healthy()
    assert server.stop() is False  # stopping twice is harmless


def _session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


@pytest.mark.postgres
def test_postgres_store_password_reaches_no_command_line_and_no_log(tmp_path, postgres_store):
    import mlflow

    uri, password = postgres_store
    server = MlflowServer(uri, tmp_path / "artifacts", log_path=tmp_path / "server.log")
    assert password not in repr(server) and "***" in repr(server)
    with server.start(timeout=STARTUP_TIMEOUT):
        leader = server.pid
        session = _session(leader)
        assert session and [argv for argv in session.values() if password in argv] == []

        # a client that talks to the server (the other way tasks can log)
        mlflow.set_tracking_uri(server.url)
        try:
            with mlflow.start_run(experiment_id=mlflow.create_experiment("through-the-server")) as run:
                mlflow.log_param("algorithm", "lightgbm")
        finally:
            mlflow.set_tracking_uri(None)
        assert _run(server, run.info.run_id)["data"]["params"] == [{"key": "algorithm", "value": "lightgbm"}]
    assert [pid for pid in session if _session_of(pid) == leader] == []
    log = (tmp_path / "server.log").read_text()
    assert masked_uri(uri) in log and password not in log


def test_a_server_that_cannot_start_says_why_and_leaves_nothing(tmp_path):
    server = MlflowServer("nosuchdb://nowhere/store", tmp_path / "artifacts", log_path=tmp_path / "server.log")
    with pytest.raises(MlflowServerError, match=r"exited with code \d+ before answering .*/health"):
        server.start(timeout=STARTUP_TIMEOUT)
    assert not server.running and server.pid is None


def test_masked_uri_hides_only_the_password():
    assert (
        masked_uri("postgresql+psycopg://mlflow:s3cret@db:5432/mlflow")
        == "postgresql+psycopg://mlflow:***@db:5432/mlflow"
    )
    assert masked_uri("sqlite:////home/me/mlflow.db") == "sqlite:////home/me/mlflow.db"
    assert masked_uri("postgresql://mlflow@db/mlflow") == "postgresql://mlflow@db/mlflow"
