"""Shared test setup: every test runs against its own MLOPS_HOME and AIRFLOW_HOME in tmp dirs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mlops_core.ports import free_port

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"


def pytest_configure(config):
    # Airflow must never touch ~/airflow from the tests.
    home = Path(os.environ.get("PYTEST_AIRFLOW_HOME", "/tmp")) / f"mlops-test-airflow-{os.getpid()}"
    os.environ.setdefault("AIRFLOW_HOME", str(home))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")


def pytest_collection_modifyitems(session, config, items):
    """The browser tests run last. They share the session's Airflow stack with the end-to-end
    lifecycles, and their prod promotion leaves a champion event behind (``deploy`` is paused while
    it is approved): an asset-triggered ``deploy`` run receives every event since its previous run,
    so a lifecycle run after them on the same stack would also be asked to deploy that prod model."""
    browser = [
        item
        for item in items
        if "tests/browser/" in item.nodeid.replace("\\", "/") or item.nodeid.startswith("browser/")
    ]
    if browser:
        items[:] = [item for item in items if item not in browser] + browser


def pytest_unconfigure(config):
    home = Path(os.environ["AIRFLOW_HOME"])
    if home.name.startswith("mlops-test-airflow-"):
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def mlops_home(tmp_path, monkeypatch) -> Path:
    """An isolated MLOPS_HOME with its own drop zone, store, MLflow DB and serving ports."""
    return isolate_mlops_env(monkeypatch, tmp_path / "mlops")


def isolate_mlops_env(monkeypatch, home: Path) -> Path:
    """Point every MLOPS_* setting at ``home`` (free serving ports; nothing inherited)."""
    monkeypatch.setenv("MLOPS_HOME", str(home))
    monkeypatch.setenv("MLOPS_ENV", "dev")
    for name in ("MLFLOW_TRACKING_URI", "MLOPS_DROP_ZONE", "MLOPS_CONTRACT", "MLOPS_CONF_DIR"):
        monkeypatch.delenv(name, raising=False)
    for env in ("DEV", "STAGING", "PROD"):
        monkeypatch.setenv(f"MLOPS_SERVING_PORT_{env}", str(free_port()))
    return home


@pytest.fixture(scope="session")
def moto_server():
    """One real moto server on loopback for the whole session (see ``tests/moto_server.py``)."""
    from tests import sagemaker_hosting
    from tests.moto_server import start_moto_server

    server, handle = start_moto_server()
    try:
        yield server
    finally:
        sagemaker_hosting.stop_all()
        handle.stop()


@pytest.fixture(scope="session")
def lifecycle_stack(tmp_path_factory):
    """One Airflow stack for every test of the session that needs the real components (the project's
    rule: one stack per session): this repository's DAGs and plugins, started by its first user.

    Each user gives it its own environment (its own ``MLOPS_HOME``, conf folder, connections) with
    :meth:`AirflowStack.switch_env`, which restarts every component but the api-server, and sees only
    its own runs (:meth:`AirflowClient.scoped`, explicit run ids): the end-to-end lifecycles
    (``tests/e2e``) and the browser test (``tests/browser``) share the start of Airflow but nothing
    they assert.
    """
    from mlops_demo.run import lifecycle_stack

    stack = lifecycle_stack(tmp_path_factory.mktemp("e2e-airflow") / "airflow")
    try:
        yield stack
    finally:
        stack.stop()
