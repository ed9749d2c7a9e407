"""The lifecycle on the distributed stack: CeleryExecutor with two workers, PostgreSQL, Redis, MLflow server.

One stack for the module (``distributed.celery_stack``): Airflow's metadata and Celery's results in
a PostgreSQL database of its own, the queue in a Redis database number of its own, the MLflow
tracking server on another PostgreSQL database; all dropped or emptied afterwards. The short
lifecycle (three days of demo data and two bad files -> ingest -> features -> monitor -> train ->
evaluate_register -> deploy) runs in a thread while this module watches the task instances; once both
workers have finished a task, the worker running the next lifecycle task is SIGKILLed together with
everything it forked, as when its machine dies. Its task stays ``running`` until the scheduler's
``task_instance_heartbeat_timeout`` (45 s here, Airflow's default 300 s) passes, fails that try and
retries it on the other worker. The tests then check, from Airflow's own records, that the killed try
is recorded as failed (never as success), the retry succeeded on the surviving worker, and nothing was
written twice; and that the results are the local run's (``tests/e2e/test_lifecycle_e2e.py``: the same
demo data and seed give the same rows accepted and quarantined, one MLflow run per training).

PostgreSQL and Redis: the servers on 127.0.0.1 (``MLOPS_PG_URL``, ``MLOPS_REDIS_URL``); in CI
(``CI=true``) a missing server fails the module, elsewhere it is skipped with the reason
(``scripts/ensure_services.sh`` starts both).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

# The module fixture (MLflow server, stack, the lifecycle, a heartbeat timeout) runs within the first
# test: more than the suite's 20-minute default on a loaded 2-core machine.
pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[2]
ROWS = 600  # rows per generated day, as in the local lifecycle test
BAD_ROWS_FILE_ROWS = 60  # demo_data: 3 of them are bad
HEARTBEAT_TIMEOUT = 45
WORKERS = ("celery-worker-1", "celery-worker-2")
# The DAGs whose running task may be the one the killed worker was running.
KILLABLE_DAGS = ("ingest", "features", "monitor", "train", "evaluate_register", "deploy")
LIFECYCLE = ("ingest", "features", "monitor", "train", "evaluate_register", "deploy")


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    from mlops_demo.airflow_stack.distributed import (
        DistributedServices,
        pg_url_from_environment,
        redis_url_from_environment,
    )
    from mlops_demo.airflow_stack.services import ServiceError

    try:
        services = DistributedServices.create(
            tmp_path_factory.mktemp("celery-mlflow") / "artifacts",
            postgres_url=pg_url_from_environment(),
            redis_url=redis_url_from_environment(),
            timeout=300,
        )
    except ServiceError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the distributed stack needs PostgreSQL and Redis in CI: {exc}")
        pytest.skip(f"PostgreSQL or Redis unavailable (scripts/ensure_services.sh starts them): {exc}")
    try:
        yield services
    finally:
        services.close()


class WorkerKiller:
    """Watches the task instances and SIGKILLs the worker of one running lifecycle task (see the module doc)."""

    def __init__(self, stack) -> None:
        self.stack = stack
        self.killed: dict | None = None
        self.error: str | None = None
        self.done = threading.Event()
        self.seen_success: set[str] = set()

    def _running_candidates(self, client):
        for run in client.runs_of(KILLABLE_DAGS, states=["running"]):
            for ti in client.task_instances(run["dag_id"], run["dag_run_id"]):
                if ti["state"] == "running" and ti.get("hostname") in WORKERS:
                    yield ti

    def _note_successes(self, client) -> None:
        for run in client.runs_of(KILLABLE_DAGS):
            for ti in client.task_instances(run["dag_id"], run["dag_run_id"]):
                if ti["state"] == "success" and ti.get("hostname") in WORKERS:
                    self.seen_success.add(ti["hostname"])

    def watch(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        try:
            while not self.done.is_set() and time.monotonic() < deadline:
                if not self.stack.running:
                    time.sleep(1)
                    continue
                try:
                    client = self.stack.client
                    if len(self.seen_success) < len(WORKERS):
                        self._note_successes(client)
                    else:
                        for ti in self._running_candidates(client):
                            pids = self.stack.kill_worker(ti["hostname"])
                            self.killed = {**ti, "killed_at": time.time(), "pids": sorted(pids)}
                            return
                except Exception as exc:  # the stack is (re)starting: look again
                    self.error = f"{type(exc).__name__}: {exc}"
                time.sleep(0.5)
        finally:
            self.done.set()


@pytest.fixture(scope="module")
def demo(tmp_path_factory, services):
    from mlops_demo.airflow_stack.distributed import celery_stack
    from mlops_demo.run import DemoOptions, LifecycleDemo, print_summary

    home = tmp_path_factory.mktemp("celery-lifecycle")
    stack = celery_stack(
        home / "airflow",
        REPO / "dags",
        services,
        workers=len(WORKERS),
        concurrency=2,
        task_instance_heartbeat_timeout=HEARTBEAT_TIMEOUT,
        plugins_folder=REPO / "plugins",
    )
    saved = dict(os.environ)
    for name in ("MLOPS_HOME", "MLOPS_ENV", "MLOPS_DROP_ZONE", "MLOPS_CONTRACT", "MLFLOW_TRACKING_URI"):
        os.environ.pop(name, None)
    runner = LifecycleDemo(
        DemoOptions(
            home=home / "demo",
            rows=ROWS,
            phase_timeout=1500,  # features alone took 2 minutes on a loaded 2-core machine
            start_timeout=900,
            stop_when_done=False,
            promote=False,
            stop_after="initial",
            extra_env=services.task_environment(),  # the tasks' MLflow is the tracking server
        ),
        stack=stack,
    )
    killer = WorkerKiller(stack)
    watcher = threading.Thread(target=killer.watch, args=(1500,), daemon=True)
    watcher.start()
    try:
        result = runner.run()
        print_summary(result)
        killer.done.set()
        watcher.join(timeout=30)
        assert result.ok, result.failures
        runner.killer = killer  # type: ignore[attr-defined]
        # wait for the killed task's retry (the lifecycle may have finished around it)
        if killer.killed:
            k = killer.killed
            runner.client.wait_until(
                lambda: runner.client.run(k["dag_id"], k["dag_run_id"])["state"] in ("success", "failed"),
                timeout=HEARTBEAT_TIMEOUT + 300,
                interval=2,
                message="the run of the killed task",
            )
            runner.client.wait_until(lambda: not runner._busy(), timeout=600, interval=2, message="an idle lifecycle")
        yield runner
    finally:
        killer.done.set()
        runner.stop()
        stack.stop()
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def client(demo):
    return demo.stack.client


@pytest.fixture(scope="module")
def killed(demo):
    k = demo.killer.killed
    assert k is not None, f"no lifecycle task was running on a worker to kill (last error: {demo.killer.error})"
    return k


def _tries(client, ti):
    path = f"/dags/{ti['dag_id']}/dagRuns/{ti['dag_run_id']}/taskInstances/{ti['task_id']}/tries"
    return sorted(client.request("GET", path)["task_instances"], key=lambda t: t["try_number"])


def test_no_lifecycle_run_failed(client):
    for dag_id in LIFECYCLE:
        assert client.runs(dag_id, state=["success"]), f"{dag_id} never succeeded"
        failed = client.runs(dag_id, state=["failed"])
        assert not failed, f"{dag_id}: {[r['dag_run_id'] for r in failed]}"


def test_tasks_ran_on_both_workers(client):
    hosts = Counter(
        t["hostname"]
        for run in client.runs_of(LIFECYCLE)
        for ti in client.task_instances(run["dag_id"], run["dag_run_id"])
        for t in _tries(client, {**ti, "dag_run_id": run["dag_run_id"]})
        if t["state"] == "success"
    )
    assert set(WORKERS) <= set(hosts), hosts


def test_the_killed_try_failed_and_the_retry_succeeded_on_the_other_worker(client, killed):
    tries = _tries(client, killed)
    first, last = tries[0], tries[-1]
    assert first["try_number"] == killed["try_number"] == 1
    assert first["hostname"] == killed["hostname"]
    assert first["state"] == "failed", f"the killed try is recorded as {first['state']}: {tries}"
    assert last["try_number"] >= 2 and last["state"] == "success", tries
    assert last["hostname"] in WORKERS and last["hostname"] != killed["hostname"], tries
    assert _ts(first["end_date"]) >= killed["killed_at"] - 1, "the killed try ended before the kill"


def test_the_killed_worker_left_no_process(killed):
    import psutil

    alive = [p for p in killed["pids"] if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive


def _ts(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_every_row_is_stored_once_as_in_the_local_run(demo):
    store = demo.dataset_store()
    versions = store.list_versions()
    keys = [k for v in versions for k in store.read_version(v["version_id"], columns=["_row_key"])["_row_key"]]
    assert len(keys) == len(set(keys)), "a row is stored in two versions"
    # The local run's numbers for the same days: three good days, the good rows of the bad-rows file.
    assert len(keys) == 3 * ROWS + BAD_ROWS_FILE_ROWS - 3
    assert sum(r.get("rows_rejected", 0) for r in store.list_quarantine()) == 3


def test_one_mlflow_run_and_model_version_per_training(demo, client, services):
    from mlflow import MlflowClient

    from mlops_core.settings import load_settings

    settings = load_settings("dev")
    assert settings.registry.tracking_uri == services.mlflow.url
    mlflow = MlflowClient(tracking_uri=services.mlflow.url, registry_uri=services.mlflow.url)
    experiment = mlflow.get_experiment_by_name(settings.registry.experiment)
    runs = mlflow.search_runs([experiment.experiment_id])
    trainings = client.runs("train", state=["success"])
    assert len(trainings) == 1  # the initial training, as in the local run's initial phase
    assert len(runs) == len(trainings), [r.info.run_id for r in runs]
    versions = mlflow.search_model_versions(f"name='{settings.registered_model_name}'")
    assert len(versions) == 1 and versions[0].run_id == runs[0].info.run_id


def test_the_tasks_used_the_mlflow_server_on_postgresql(services):
    import psycopg

    with psycopg.connect(services.mlflow_db.url("postgresql"), connect_timeout=5) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
