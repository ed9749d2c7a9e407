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


def _trained_algorithm(result: dict) -> str:
    import json
    from pathlib import Path

    config = Path(result["ml_root"]) / "input" / "config" / "hyperparameters.json"
    return json.loads(config.read_text())["algorithm"]


def test_templated_algorithm_is_rendered_and_trained(mlops_home):
    from mlops_core.settings import load_settings

    ts = _training_set(load_settings("dev"), "tpl")
    op = TrainingJobOperator(task_id="train_model", training_set=ts, algorithm="{{ params.algorithm }}")
    context = {**_context("manual__tpl"), "params": {"env": "dev", "algorithm": "logistic_regression"}}
    op.render_template_fields(context)
    result = op.execute(context)
    assert _trained_algorithm(result) == "logistic_regression"


def test_retry_reattaches_and_changed_settings_train_anew(mlops_home):
    from mlops_core.settings import load_settings

    ts = _training_set(load_settings("dev"), "ok")
    op = TrainingJobOperator(task_id="train_model", training_set=ts, algorithm="logistic_regression")
    first = op.execute(_context("manual__1"))
    assert first["status"] == "Completed" and first["reattached"] is False
    assert 0.5 < first["metrics"]["test_roc_auc"] <= 1.0

    # A retry of the same run with the same settings re-attaches to the finished job.
    again = TrainingJobOperator(task_id="train_model", training_set=ts, algorithm="logistic_regression").execute(
        _context("manual__1")
    )
    assert again["reattached"] is True and again["job_name"] == first["job_name"]
    assert again["metrics"] == first["metrics"]

    # The same run retried after the settings changed must not return the old model.
    changed = TrainingJobOperator(task_id="train_model", training_set=ts, algorithm="random_forest").execute(
        _context("manual__1")
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
        op.execute(_context("manual__2"))


def test_unbuilt_backend_override_fails_clearly(mlops_home):
    from mlops_core.backends import BackendNotAvailable
    from mlops_core.settings import load_settings

    ts = _training_set(load_settings("dev"), "aws")
    op = TrainingJobOperator(task_id="train_model", training_set=ts, compute_backend="aws")
    with pytest.raises(BackendNotAvailable, match=r"backends\.compute = 'aws'"):
        op.execute(_context("manual__3"))
