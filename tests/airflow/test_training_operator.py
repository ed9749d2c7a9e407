"""TrainingJobOperator and TrainingJobTrigger on the local compute service: real detached training jobs.

Deferral is driven the way Airflow drives it: ``execute`` raises ``TaskDeferred``; the trigger is
rebuilt from its ``serialize()`` (as the triggerer does), run until its first event, and the
event is handed to ``execute_complete`` with the deferral's kwargs.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import json
import threading
import time
import types
from datetime import timedelta
from typing import Any

import pandas as pd
import pendulum
import pytest
from airflow.sdk.exceptions import TaskDeferred

from mlops_airflow.operators.training import TrainingJobOperator
from mlops_airflow.triggers.training import TrainingJobTrigger


def _training_set(settings, key: str, single_class: bool = False) -> dict:
    from mlops_core.backends import object_store
    from mlops_core.demo_data import generate_day
    from mlops_core.validation import validate

    contract = settings.load_contract()
    frames = []
    for day in range(2):
        raw = generate_day(day, rows=300, seed=5).astype(str).replace({"nan": "", "<NA>": "", "NaT": ""})
        raw["event_time"] = generate_day(day, rows=300, seed=5)["event_time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        frames.append(
            validate(raw, contract, source=f"d{day}", ingested_at=pd.Timestamp("2026-02-01", tz="UTC")).accepted
        )
    train, holdout = frames
    if single_class:
        train = train.assign(churned=pd.array([0] * len(train), dtype="Int64"))
    store = object_store(settings)
    for name, df in (("train", train), ("holdout", holdout)):
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        store.put_bytes(f"training_sets/{key}/{name}.parquet", buf.getvalue())
    return {"key": f"training_sets/{key}", "dataset_versions": ["v1"], "digest": key}


def _context(run_id: str) -> dict:
    return {
        "params": {"env": "dev"},
        "run_id": run_id,
        "dag": types.SimpleNamespace(dag_id="train"),
        "logical_date": pendulum.datetime(2026, 2, 1, tz="UTC"),
    }


def _trained_algorithm(result: dict) -> str:
    """The algorithm of the model the job left in object storage (its ``model_meta.json``)."""
    from mlops_core.backends import object_store
    from mlops_core.compute import object_key
    from mlops_core.settings import load_settings

    store = object_store(load_settings("dev"))
    return json.loads(store.get_bytes(object_key(store, result["model_uri"]) + "model_meta.json"))["algorithm"]


def rebuilt(trigger: TrainingJobTrigger) -> TrainingJobTrigger:
    """The trigger as the triggerer gets it: from its class path and serialized kwargs."""
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**kwargs)


def first_event(trigger: TrainingJobTrigger, timeout: float = 180) -> dict:
    async def first() -> dict:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(asyncio.wait_for(first(), timeout))


def run_task(op: TrainingJobOperator, context: dict) -> dict:
    """One try of the task as Airflow runs it, deferral included."""
    try:
        return op.execute(context)
    except TaskDeferred as deferred:
        event = first_event(rebuilt(deferred.trigger))
        return getattr(op, deferred.method_name)(context, event=event, **(deferred.kwargs or {}))


def execute_in_worker(op, context: dict, started: str, timeout: float = 60) -> tuple[Any, threading.Thread, dict]:
    """``op.execute(context)`` on a thread of its own (a worker running the task, which Airflow may kill),
    once ``op.<started>`` is set (the job or execution it started): that value, the thread, and the
    outcome the thread leaves when it ends (``result`` or ``error``)."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = op.execute(context)
        except Exception as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + timeout
    while getattr(op, started) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return getattr(op, started), worker, outcome


def submitted_jobs(home) -> list[str]:
    """Every job the local service ever accepted (one folder per accepted submission)."""
    jobs = home / "jobs"
    return sorted(p.name for p in jobs.iterdir() if p.is_dir() and not p.name.startswith(".")) if jobs.exists() else []


def compute():
    from mlops_core.backends import compute_backend
    from mlops_core.settings import load_settings

    return compute_backend(load_settings("dev"))


def test_templated_algorithm_is_rendered_and_trained(mlops_home):
    from mlops_core.settings import load_settings

    ts = _training_set(load_settings("dev"), "tpl")
    op = TrainingJobOperator(task_id="train_model", training_set=ts, algorithm="{{ params.algorithm }}")
    context = {**_context("manual__tpl"), "params": {"env": "dev", "algorithm": "logistic_regression"}}
    op.render_template_fields(context)
    result = run_task(op, context)
    assert _trained_algorithm(result) == "logistic_regression"


def test_retry_reattaches_and_changed_settings_train_anew(mlops_home):
    from mlops_core.settings import load_settings

    ts = _training_set(load_settings("dev"), "ok")
    op = TrainingJobOperator(task_id="train_model", training_set=ts, algorithm="logistic_regression")
    first = run_task(op, _context("manual__1"))
    assert first["status"] == "Completed" and first["reattached"] is False
    assert 0.5 < first["metrics"]["test_roc_auc"] <= 1.0

    # A retry of the same run with the same settings re-attaches to the finished job.
    again = run_task(
        TrainingJobOperator(task_id="train_model", training_set=ts, algorithm="logistic_regression"),
        _context("manual__1"),
    )
    assert again["reattached"] is True and again["job_name"] == first["job_name"]
    assert again["metrics"] == first["metrics"]

    # The same run retried after the settings changed must not return the old model.
    changed = run_task(
        TrainingJobOperator(task_id="train_model", training_set=ts, algorithm="random_forest"), _context("manual__1")
    )
    assert changed["reattached"] is False and changed["job_name"] != first["job_name"]
    assert _trained_algorithm(changed) == "random_forest"
    assert _trained_algorithm(first) == "logistic_regression"  # the first job's output is untouched


def test_failed_job_raises_with_its_reason(mlops_home):
    from mlops_core.settings import load_settings
    from mlops_core.stages.train import TrainingJobFailed

    ts = _training_set(load_settings("dev"), "bad", single_class=True)
    op = TrainingJobOperator(task_id="train_model", training_set=ts)
    with pytest.raises(TrainingJobFailed, match="single class"):
        run_task(op, _context("manual__2"))


def test_a_compute_override_the_environment_cannot_run_fails_clearly(mlops_home):
    """aws needs the environment's SageMaker settings (failing at once, no retry); azure is not built yet."""
    from airflow.sdk.exceptions import AirflowFailException

    from mlops_core.backends import BackendNotAvailable
    from mlops_core.settings import load_settings

    ts = _training_set(load_settings("dev"), "aws")
    op = TrainingJobOperator(task_id="train_model", training_set=ts, compute_backend="aws")
    with pytest.raises(
        AirflowFailException, match=r"aws\.sagemaker_role_arn: is required when backends\.compute is aws"
    ):
        run_task(op, _context("manual__3"))
    op = TrainingJobOperator(task_id="train_model", training_set=ts, compute_backend="azure")
    with pytest.raises(BackendNotAvailable, match=r"backends\.compute = 'azure'"):
        run_task(op, _context("manual__3"))


def test_the_task_defers_while_its_job_runs_and_completes_from_the_event(mlops_home, capsys):
    from mlops_core.settings import load_settings

    settings = load_settings("dev")
    ts = _training_set(settings, "defer")
    op = TrainingJobOperator(task_id="train_model", training_set=ts, algorithm="logistic_regression")
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(_context("manual__defer"))
    trigger = deferred.value.trigger
    assert isinstance(trigger, TrainingJobTrigger)
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.kwargs == {"reattached": False}
    assert deferred.value.timeout == timedelta(minutes=settings.training.timeout_minutes + 10)
    [name] = submitted_jobs(mlops_home)
    classpath, kwargs = trigger.serialize()
    assert classpath == "mlops_airflow.triggers.training.TrainingJobTrigger"
    assert kwargs == {
        "job_name": name,
        "env": "dev",
        "compute_backend": None,
        "poll_interval": settings.training.poll_seconds,
    }
    assert json.loads(json.dumps(kwargs)) == kwargs  # primitives only
    assert rebuilt(trigger).serialize() == (classpath, kwargs)

    capsys.readouterr()
    event = first_event(rebuilt(trigger))
    assert event == {"status": "success", "job_name": name, "message": None}
    # The job's own log reaches the task's log (the trigger's logger) while it is waited for.
    assert f"[{name}] METRIC test_roc_auc=" in capsys.readouterr().out

    result = op.execute_complete(_context("manual__defer"), event=event, reattached=False)
    assert result["status"] == "Completed" and result["reattached"] is False and result["job_name"] == name
    assert 0.5 < result["metrics"]["test_roc_auc"] <= 1.0
    assert submitted_jobs(mlops_home) == [name]


def test_a_retry_reattaches_to_the_running_then_the_completed_job(mlops_home):
    from mlops_core.settings import load_settings

    ts = _training_set(load_settings("dev"), "retry")
    context = _context("manual__retry")

    def attempt() -> TrainingJobOperator:
        return TrainingJobOperator(task_id="train_model", training_set=ts, algorithm="logistic_regression")

    with pytest.raises(TaskDeferred) as first:
        attempt().execute(context)
    name = first.value.trigger.job_name
    # The first try is lost while deferred; its retry starts while the job still runs.
    retry = attempt()
    again: TaskDeferred | None = None
    try:
        result = retry.execute(context)
    except TaskDeferred as deferred:  # the usual case: the job is still running
        again = deferred
    if again is not None:
        assert again.trigger.job_name == name and again.kwargs == {"reattached": True}
        result = retry.execute_complete(context, event=first_event(rebuilt(again.trigger)), **again.kwargs)
    assert result["job_name"] == name and result["reattached"] is True
    assert submitted_jobs(mlops_home) == [name]  # one job for the run, however many tries

    # A later retry finds it completed and reuses its outputs without deferring.
    reused = attempt().execute(context)
    assert reused["reattached"] is True and reused["metrics"] == result["metrics"]
    assert submitted_jobs(mlops_home) == [name]


def test_after_a_stopped_job_the_retry_runs_a_new_attempt_under_a_new_name(mlops_home):
    from mlops_core.settings import load_settings
    from mlops_core.stages.train import TrainingJobFailed

    ts = _training_set(load_settings("dev"), "stopped")
    context = _context("manual__stopped")

    def attempt() -> TrainingJobOperator:
        return TrainingJobOperator(task_id="train_model", training_set=ts, algorithm="logistic_regression")

    first = attempt()
    with pytest.raises(TaskDeferred) as deferred:
        first.execute(context)
    name = deferred.value.trigger.job_name
    compute().stop(name)  # e.g. stopped by an operator of the platform
    event = first_event(rebuilt(deferred.value.trigger))
    assert event == {"status": "stopped", "job_name": name, "message": "stopped on request"}
    with pytest.raises(TrainingJobFailed, match=f"training job {name} stopped: stopped on request"):
        first.execute_complete(context, event=event, **deferred.value.kwargs)

    retry = attempt()
    with pytest.raises(TaskDeferred) as again:
        retry.execute(context)
    assert again.value.trigger.job_name == f"{name}-a2" and again.value.kwargs == {"reattached": False}
    result = retry.execute_complete(context, event=first_event(rebuilt(again.value.trigger)), **again.value.kwargs)
    assert result["job_name"] == f"{name}-a2" and result["status"] == "Completed"
    assert submitted_jobs(mlops_home) == [name, f"{name}-a2"]
    # Never two jobs at once: the stopped attempt had ended before the next was submitted.
    jobs = mlops_home / "jobs"
    ended = json.loads((jobs / name / "status.json").read_text())["ended_at"]
    assert ended <= json.loads((jobs / f"{name}-a2" / "status.json").read_text())["submitted_at"]

    assert attempt().execute(context)["job_name"] == f"{name}-a2"  # the next retry reuses attempt 2
    assert submitted_jobs(mlops_home) == [name, f"{name}-a2"]


def test_a_retry_right_after_a_stop_waits_for_the_stopping_job(mlops_home):
    from mlops_core.settings import load_settings

    ts = _training_set(load_settings("dev"), "stopping")
    context = _context("manual__stopping")
    op = TrainingJobOperator(task_id="train_model", training_set=ts, algorithm="logistic_regression")
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    name = deferred.value.trigger.job_name
    compute().stop(name)
    with pytest.raises(TaskDeferred) as again:  # at once, while the first may still be stopping
        TrainingJobOperator(task_id="train_model", training_set=ts, algorithm="logistic_regression").execute(context)
    assert again.value.trigger.job_name == f"{name}-a2"
    jobs = mlops_home / "jobs"
    ended = json.loads((jobs / name / "status.json").read_text())["ended_at"]
    assert ended <= json.loads((jobs / f"{name}-a2" / "status.json").read_text())["submitted_at"]
    compute().stop(f"{name}-a2")


@pytest.fixture
def stop_calls(monkeypatch) -> list[str]:
    """Every ``stop`` the local compute service receives."""
    from mlops_core.compute import LocalJobCompute

    calls: list[str] = []
    original = LocalJobCompute.stop

    def counting(self, name: str) -> None:
        calls.append(name)
        original(self, name)

    monkeypatch.setattr(LocalJobCompute, "stop", counting)
    return calls


def test_on_kill_in_the_worker_stops_the_job_exactly_once(mlops_home, stop_calls):
    from mlops_core.settings import load_settings
    from mlops_core.stages.train import TrainingJobFailed

    ts = _training_set(load_settings("dev"), "kill")
    op = TrainingJobOperator(
        task_id="train_model", training_set=ts, algorithm="logistic_regression", deferrable=False, poll_interval=0.2
    )
    name, worker, outcome = execute_in_worker(op, _context("manual__kill"), "_running_job")
    assert name is not None and compute().describe(name).status == "InProgress"
    op.on_kill()
    worker.join(timeout=120)
    assert not worker.is_alive()
    assert stop_calls == [name]
    assert isinstance(outcome.get("error"), TrainingJobFailed), outcome
    assert f"training job {name} stopped: stopped on request" in str(outcome["error"])
    assert compute().describe(name).status == "Stopped"


def test_on_kill_while_deferred_stops_the_job_through_the_trigger(mlops_home, stop_calls):
    from mlops_core.settings import load_settings
    from mlops_core.stages.train import TrainingJobFailed

    ts = _training_set(load_settings("dev"), "killdeferred")
    op = TrainingJobOperator(task_id="train_model", training_set=ts, algorithm="logistic_regression")
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(_context("manual__killdeferred"))
    name = deferred.value.trigger.job_name
    asyncio.run(rebuilt(deferred.value.trigger).on_kill())  # what the triggerer calls on mark-failed / clear
    assert stop_calls == [name]
    event = first_event(rebuilt(deferred.value.trigger))
    assert event["status"] == "stopped"
    with pytest.raises(TrainingJobFailed, match="stopped on request"):
        op.execute_complete(_context("manual__killdeferred"), event=event, **deferred.value.kwargs)
    assert stop_calls == [name]


def test_not_deferrable_polls_in_the_worker_and_logs_the_job(mlops_home, capsys):
    from mlops_core.settings import load_settings

    ts = _training_set(load_settings("dev"), "worker")
    op = TrainingJobOperator(task_id="train_model", training_set=ts, algorithm="logistic_regression", deferrable=False)
    capsys.readouterr()
    result = op.execute(_context("manual__worker"))
    assert result["status"] == "Completed" and result["reattached"] is False
    assert f"[{result['job_name']}] METRIC test_roc_auc=" in capsys.readouterr().out
    assert submitted_jobs(mlops_home) == [result["job_name"]]


def test_trigger_reports_a_job_that_does_not_exist(mlops_home):
    event = first_event(TrainingJobTrigger(job_name="never-submitted", env="dev", poll_interval=0.1))
    assert event["status"] == "error" and "no training job 'never-submitted'" in event["message"]
