"""The approval bodies an approver reads, built from a real MLflow registry (SQLite store)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.core.conftest import register_toy_model, toy_frame

MLFLOW_UI = "http://mlflow.example:5000"


def _register(registry, name: str, run_name: str, scores: dict[str, float], datasets: str) -> str:
    from mlops_core.registry import holdout_tags

    data = toy_frame(60, seed=len(run_name))
    labels = np.arange(60) % 2
    version = register_toy_model(registry, name, data, labels, run_name=run_name)
    registry.set_version_tags(name, version, {**holdout_tags(scores), "mlops.dataset_versions": datasets})
    registry.set_champion(name, version)
    return version


@pytest.fixture
def registries(mlops_home):
    from mlops_core.backends import model_registry
    from mlops_core.settings import load_settings

    staging, prod = load_settings("staging"), load_settings("prod")
    return {"staging": (staging, model_registry(staging)), "prod": (prod, model_registry(prod))}


def test_promotion_body_compares_every_score_with_the_target_champion(registries):
    from mlops_core.approval_text import promotion_approval_text
    from mlops_core.backends import backends_for
    from mlops_core.stages.promote import plan_promotion

    staging, staging_registry = registries["staging"]
    prod, prod_registry = registries["prod"]
    candidate = {"roc_auc": 0.8312, "log_loss": 0.41, "accuracy": 0.78}
    _register(staging_registry, staging.registered_model_name, "cand", candidate, "aaaa000011112222,bbbb000011112222")
    _register(prod_registry, prod.registered_model_name, "champ", {"roc_auc": 0.8001, "log_loss": 0.45}, "cccc")

    plan = plan_promotion("staging", None, backends_for)
    body = promotion_approval_text(plan, MLFLOW_UI)
    print(body)

    assert plan["requires_approval"] is True  # prod asks a person
    assert body.startswith("### Promote staging.churn version 1 to prod")
    assert "in place of version 1." in body
    # every held-out score, side by side, the gate's metric first, with the change and its direction
    rows = [line for line in body.splitlines() if line.startswith("| ")]
    assert rows[0] == "| metric | candidate (staging v1) | prod champion (v1) | change |"
    assert rows[1] == "| **roc_auc** (gate) | 0.8312 | 0.8001 | +0.0311 better |"
    assert "| log_loss | 0.4100 | 0.4500 | -0.0400 better |" in rows  # lower is better
    assert "| accuracy | 0.7800 | - | - |" in rows  # the champion never recorded it
    assert "`aaaa000011112222`, `bbbb000011112222`" in body
    assert "trained on `cccc`" in body
    # links: the training run (with its real experiment), both model versions
    run = staging_registry.client.get_run(plan["source_run_id"])
    run_url = f"{MLFLOW_UI}/#/experiments/{run.info.experiment_id}/runs/{plan['source_run_id']}"
    assert f"[open in MLflow]({run_url})" in body
    assert f"({MLFLOW_UI}/#/models/staging.churn/versions/1)" in body
    assert f"({MLFLOW_UI}/#/models/prod.churn/versions/1)" in body


def test_promotion_body_without_a_target_champion_or_mlflow_ui(registries):
    from mlops_core.approval_text import promotion_approval_text
    from mlops_core.backends import backends_for
    from mlops_core.stages.promote import plan_promotion

    staging, staging_registry = registries["staging"]
    _register(staging_registry, staging.registered_model_name, "only", {"roc_auc": 0.7}, "dddd")

    plan = plan_promotion("staging", None, backends_for)
    body = promotion_approval_text(plan, None)

    assert "(it has no champion yet)" in body
    assert "| **roc_auc** (gate) | 0.7000 | - | - |" in body
    assert f"`{plan['source_run_id']}`" in body  # no UI: the id, to look up
    assert "](" not in body  # and no link


def test_evaluation_body_shows_scores_on_the_same_rows_and_the_gate():
    from mlops_core.approval_text import evaluation_approval_text

    evaluation = {
        "env": "prod",
        "model_name": "prod.churn",
        "version": "4",
        "mlflow_run_id": "abc123",
        "mlflow_experiment_id": "7",
        "dataset_versions": ["v1"],
        "primary_metric": "rmse",
        "challenger_metrics": {"rmse": 1.5, "r2": 0.5},
        "champion_metrics": {"rmse": 2.0, "r2": 0.6},
        "champion_version": "3",
        "reasons": ["rmse improved by 0.5."],
    }
    body = evaluation_approval_text(evaluation, MLFLOW_UI + "/")

    assert "| **rmse** (gate) | 1.5000 | 2.0000 | -0.5000 better |" in body
    assert "| r2 | 0.5000 | 0.6000 | -0.1000 worse |" in body
    assert "- **Gate:** rmse improved by 0.5." in body
    assert f"[open in MLflow]({MLFLOW_UI}/#/experiments/7/runs/abc123)" in body
    assert f"[champion v3]({MLFLOW_UI}/#/models/prod.churn/versions/3)" in body
