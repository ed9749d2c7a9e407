"""Children never see Airflow's secrets: the environment of a real training job and a real model server.

The parent (this test process, standing in for an Airflow task) carries the secrets an Airflow
worker has; every process the child starts is read through ``/proc/<pid>/environ`` while it runs.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import pytest
from conftest import TOY_FEATURES, register_toy_model, toy_frame

from mlops_core.ports import free_port
from mlops_core.processes import process_group_members
from mlops_core.registry import ModelRegistry
from mlops_core.serving import CaptureConfig, LocalModelServer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/environ")

SECRETS = {
    "AIRFLOW__API_AUTH__JWT_SECRET": "jwt-signing-secret-0123456789",
    "AIRFLOW__CORE__FERNET_KEY": "fernet-key-0123456789abcdefghijklmnopqrstuvw=",
    "AIRFLOW__API__SECRET_KEY": "api-secret-key-0123456789",
    "AIRFLOW_CONN_X": "postgresql://u:pw-0123456789@h/db",
}


@pytest.fixture
def airflow_secrets(monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return SECRETS


def environ(pid: int) -> dict[str, str] | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone already
        return None
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def assert_no_secrets(environments: dict[int, dict[str, str]]) -> None:
    assert environments, "no child process was observed"
    for pid, env in environments.items():
        leaked = sorted(name for name in env if name in SECRETS or name.startswith(("AIRFLOW__", "AIRFLOW_CONN_")))
        assert leaked == [], f"pid {pid} sees {leaked}"
        values = [name for name, value in env.items() if any(secret in value for secret in SECRETS.values())]
        assert values == [], f"pid {pid} has secret values in {values}"


def test_training_job_sees_no_airflow_secrets(airflow_secrets, tmp_path, churn):
    """The job's supervisor and the entrypoint it runs (each its own process group)."""
    import io
    import json

    from mlops_core.compute import JobSpec, LocalJobCompute
    from mlops_core.demo_data import generate_day
    from mlops_core.storage import LocalObjectStore
    from mlops_core.training.entrypoint import job_hyperparameters

    store = LocalObjectStore(tmp_path / "store")
    buf = io.BytesIO()
    generate_day(0, rows=200).to_parquet(buf, index=False)
    store.put_bytes("sets/s/train.parquet", buf.getvalue())
    compute = LocalJobCompute(tmp_path / "jobs", store)
    compute.submit(
        JobSpec(
            name="job-secrets",
            entrypoint=("python", "-m", "mlops_core.training.entrypoint"),
            inputs={"train": store.uri("sets/s/train.parquet")},
            output_uri=store.uri("training_jobs"),
            hyperparameters=job_hyperparameters(churn, "logistic_regression", {}),
        )
    )
    seen: dict[int, dict[str, str]] = {}
    groups: set[int] = set()
    deadline = time.monotonic() + 120
    while not (job := compute.describe("job-secrets")).terminal and time.monotonic() < deadline:
        state = tmp_path / "jobs" / "job-secrets"
        for name in ("launch.json", "status.json"):
            with contextlib.suppress(OSError, ValueError):
                raw = json.loads((state / name).read_text())
                groups.update(int(raw[k]) for k in ("pid", "entrypoint_pid") if raw.get(k))
        for pgid in groups:
            for pid in process_group_members(pgid):
                env = environ(pid)
                if env is not None:
                    seen[pid] = env
        time.sleep(0.02)
    assert job.status == "Completed", job
    assert len(groups) == 2  # the supervisor's group and the entrypoint's were both observed
    assert_no_secrets(seen)
    assert all(env.get("PYTHONUNBUFFERED") == "1" for env in seen.values())


def test_model_server_sees_no_airflow_secrets(airflow_secrets, tmp_path):
    df = toy_frame(60, 5)
    df["churned"] = (df["tenure"] < 40).astype(int)
    registry = ModelRegistry(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "artifacts", "secrets")
    version = register_toy_model(
        registry, "dev.secrets", df, df["churned"], run_name="secrets-run", dataset_name="churn", dataset_digest="d"
    )
    capture = CaptureConfig(store_root=str(tmp_path / "store"), model_name="dev.secrets", env="dev")
    server = LocalModelServer(tmp_path / "serving", "127.0.0.1", free_port(), registry.tracking_uri, capture=capture)
    try:
        deployment = server.deploy(registry.model_uri("dev.secrets", version), version)
        assert "mlops_core.capture_proxy" in Path(f"/proc/{deployment.pid}/cmdline").read_text()  # the leader
        group = {pid: environ(pid) for pid in process_group_members(deployment.pid)}
        seen = {pid: env for pid, env in group.items() if env is not None}
        assert len(seen) >= 3, seen.keys()  # the capture proxy, the MLflow CLI and the uvicorn server it started
        assert_no_secrets(seen)
        for env in seen.values():
            assert env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"
            assert "MLFLOW_TRACKING_URI" not in env  # it serves a verified local folder, never the registry
        assert server.smoke_test(df[TOY_FEATURES].head(3))["predictions"]
    finally:
        server.stop()
