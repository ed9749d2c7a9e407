"""TrainingJobOperator on the local compute backend: a real training subprocess."""

from __future__ import annotations

import io
import types

import pandas as pd
import pendulum
import pytest

from mlops_airflow.operators.training import TrainingJobOperator


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


def test_template_fields():
    assert set(TrainingJobOperator.template_fields) == {
        "training_set",
        "job_name",
        "env",
        "algorithm",
        "compute_backend",
    }
    op = TrainingJobOperator(task_id="t", training_set="{{ ti.xcom_pull('x') }}", algorithm="{{ params.algorithm }}")
    assert op.algorithm == "{{ params.algorithm }}"  # stored as given, rendered at run time


def test_trains_then_reattaches_on_retry(mlops_home):
    from mlops_core.settings import load_settings

    ts = _training_set(load_settings("dev"), "ok")
    op = TrainingJobOperator(task_id="train_model", training_set=ts, algorithm="logistic_regression")
    first = op.execute(_context("manual__1"))
    assert first["status"] == "Completed" and first["reattached"] is False
    assert 0.5 < first["metrics"]["test_roc_auc"] <= 1.0
    again = TrainingJobOperator(task_id="train_model", training_set=ts).execute(_context("manual__1"))
    assert again["reattached"] is True and again["job_name"] == first["job_name"]
    assert again["metrics"] == first["metrics"]


def test_failed_job_raises_with_its_reason(mlops_home):
    from mlops_core.settings import load_settings
    from mlops_core.stages.train import TrainingJobFailed

    ts = _training_set(load_settings("dev"), "bad", single_class=True)
    op = TrainingJobOperator(task_id="train_model", training_set=ts)
    with pytest.raises(TrainingJobFailed, match="single class"):
        op.execute(_context("manual__2"))


def test_unbuilt_backend_override_fails_clearly(mlops_home):
    from mlops_core.backends import BackendNotAvailable
    from mlops_core.settings import load_settings

    ts = _training_set(load_settings("dev"), "aws")
    op = TrainingJobOperator(task_id="train_model", training_set=ts, compute_backend="aws")
    with pytest.raises(BackendNotAvailable, match=r"backends\.compute = 'aws'"):
        op.execute(_context("manual__3"))
