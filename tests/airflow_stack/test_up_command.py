"""``python -m mlops_demo.airflow_stack up`` (what ``make up`` runs), as a user runs it.

One real ``up`` process with a connection exported in its environment; the MLflow server it starts
must serve the store the tasks write (``<MLOPS_HOME>/mlflow/mlflow.db``) and its URL must reach the
components as ``MLFLOW_UI_URL``; a model server registered under its ``MLOPS_HOME`` the way
``LocalModelServer`` registers one (its own session and process group,
``serving/<env>/deployment.json``); then Ctrl-C (SIGINT): everything must be gone.
The ``--env`` checks need no Airflow and take a second.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest
import requests

from mlops_core.ports import free_port
from mlops_core.serving import DEPLOYMENT_FILE, Deployment
from mlops_demo.airflow_stack.command_line import parse_env_assignments, secret_assignment_problem

REPO = Path(__file__).resolve().parents[2]
DAGS = Path(__file__).parent / "dags"
UP = [sys.executable, "-m", "mlops_demo.airflow_stack", "up"]


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _argv(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class _Output:
    """The lines a child process prints, read by a thread so the pipe never fills up."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} after {timeout}s; output:\n" + "\n".join(self.lines))
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.5)

    @property
    def text(self) -> str:
        self._thread.join(timeout=10)
        return "\n".join(self.lines)


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_ctrl_c_stops_airflow_and_the_model_servers(tmp_path):
    mlops_home = tmp_path / "mlops"
    conn_password = f"pw-{uuid.uuid4().hex}"
    env = {
        **os.environ,
        "MLOPS_HOME": str(mlops_home),
        "AIRFLOW_CONN_UP_TEST_DB": json.dumps({"conn_type": "generic", "host": "db", "password": conn_password}),
    }
    up = subprocess.Popen(
        [
            *UP,
            "--home",
            str(tmp_path / "airflow"),
            "--dags",
            str(DAGS),
            "--port",
            "0",
            "--mlflow-port",
            "0",
            "--timeout",
            "400",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=REPO,
    )
    output = _Output(up)
    server = None
    try:
        output.wait_for("Press Ctrl-C", timeout=600)  # MLflow first on a fresh store, then up to 400 s for Airflow
        mlflow_url = _mlflow_url(output.lines)
        _check_mlflow_serves_the_task_store(mlflow_url, mlops_home)

        # A model server as the deploy DAG leaves one: own session, recorded in deployment.json.
        model_uri = "models:/up_test_model/3"
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)", "mlflow", "models", "serve", "-m", model_uri],
            start_new_session=True,
        )
        state = mlops_home / "serving" / "dev"
        state.mkdir(parents=True)
        deployment = Deployment(
            model_uri=model_uri,
            model_version="3",
            pid=server.pid,
            host="127.0.0.1",
            port=port,
            url=f"http://127.0.0.1:{port}",
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            log_path=str(state / "server-3.log"),
        )
        (state / DEPLOYMENT_FILE).write_text(json.dumps(deployment.to_dict()))

        stack_pids = {p.pid for p in psutil.Process(up.pid).children(recursive=True)}
        sessions = {os.getsid(pid) for pid in stack_pids if _running(pid)} - {os.getsid(up.pid)}
        assert len(stack_pids) > 4  # the four components, executor workers, log servers
        # the exported connection reached nobody's command line
        assert [pid for pid in [up.pid, *stack_pids] if conn_password in _argv(pid)] == []
        # the extra links of every component (the api-server renders them) point at the MLflow server
        airflow_envs = [env for env in map(_environ, stack_pids) if "AIRFLOW_HOME" in env]
        assert len(airflow_envs) >= 4 and {env.get("MLFLOW_UI_URL") for env in airflow_envs} == {mlflow_url}

        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=120) == 0
        server.wait(timeout=30)  # it was stopped (would hang for 10 minutes otherwise)
    finally:
        if up.poll() is None:
            up.kill()
        if server is not None and server.poll() is None:
            server.kill()
    text = output.text

    assert [p for p in stack_pids if _running(p)] == []
    left = [p for p in psutil.pids() if _running(p) and _sid(p) in sessions]
    assert left == []
    assert "Stopped Airflow: scheduler, dag-processor, triggerer, api-server" in text
    assert f"Stopped the MLflow server at {mlflow_url}." in text
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{mlflow_url}/health", timeout=5)
    assert f"Stopped model server: {model_uri} (version 3) at http://127.0.0.1:{port}, pid {server.pid}." in text
    # what a user needs to log in, and no secret but the password it prints on purpose
    password = json.loads((tmp_path / "airflow" / "simple_auth_manager_passwords.json.generated").read_text())
    assert f"username: admin\n  password: {password['admin']}\n" in text
    assert "UI:       http://127.0.0.1:" in text
    assert conn_password not in text
    fernet_key = json.loads((tmp_path / "airflow" / "airflow_stack.secrets.json").read_text())["fernet_key"]
    assert fernet_key not in text


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {name: value for name, _, value in pairs}


def _mlflow_url(lines: list[str]) -> str:
    found = [line.split()[1] for line in lines if line.strip().startswith("MLflow:")]
    assert found, "no MLflow line in:\n" + "\n".join(lines)
    assert found[0].startswith("http://127.0.0.1:")
    return found[0]


def _check_mlflow_serves_the_task_store(url: str, mlops_home: Path) -> None:
    """A run written into the store of the settings (as a task writes it) is shown by the server."""
    from mlflow.tracking import MlflowClient

    store = mlops_home / "mlflow" / "mlflow.db"
    assert store.is_file()  # created by the server before `up` said it was up
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    run = client.create_run(client.create_experiment(f"up-test-{uuid.uuid4().hex[:8]}"))
    client.log_metric(run.info.run_id, "accuracy", 0.9)
    shown = requests.get(f"{url}/api/2.0/mlflow/runs/get", params={"run_id": run.info.run_id}, timeout=10)
    assert shown.status_code == 200
    assert shown.json()["run"]["data"]["metrics"][0]["value"] == 0.9


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def test_env_refuses_secrets_and_says_to_export_them(tmp_path):
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    result = subprocess.run(
        [*UP, "--home", str(tmp_path / "airflow"), "--dags", str(DAGS), "--env", f"AIRFLOW_CONN_CHURN_DB={secret}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert "export AIRFLOW_CONN_CHURN_DB=..." in result.stderr
    assert secret not in result.stdout + result.stderr
    assert not (tmp_path / "airflow").exists()  # refused before anything started


@pytest.mark.parametrize(
    "name",
    [
        "AIRFLOW_CONN_CHURN_DB",
        "AIRFLOW_VAR_API_TOKEN",
        "AIRFLOW__SECRETS__BACKEND_KWARGS",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AWS_SECRET_ACCESS_KEY",
        "MY_SERVICE_PASSWORD",
    ],
)
def test_env_refuses_names_that_hold_secrets(name):
    problem = secret_assignment_problem(name, "value")
    assert problem is not None and problem.startswith(f"--env {name}: ")
    with pytest.raises(ValueError, match=name):
        parse_env_assignments([f"{name}=value"])


def test_env_refuses_a_url_with_a_password():
    assert "URL with a password" in (secret_assignment_problem("BROKER", "redis://user:pw@host:6379/0") or "")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MLOPS_ENV", "staging"),
        ("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "True"),
        ("AIRFLOW__SECRETS__BACKEND", "airflow.secrets.local_filesystem.LocalFilesystemBackend"),
        ("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000"),
    ],
)
def test_env_accepts_settings(name, value):
    assert parse_env_assignments([f"{name}={value}"]) == {name: value}
