"""The whole lifecycle through the real Airflow 3 scheduler, as ``make demo`` runs it.

One run of :class:`mlops_demo.run.LifecycleDemo` on a temporary home (scheduler, dag-processor,
triggerer and api-server on loopback, SQLite metadata DB, real Feast/MLflow/Evidently, MLflow
scoring servers), then one assertion per outcome.
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from mlops_demo.run import DemoOptions, LifecycleDemo, print_summary

    saved = dict(os.environ)  # the demo points this process at its own home: undo that afterwards
    for name in ("MLOPS_HOME", "MLOPS_ENV", "MLOPS_DROP_ZONE", "MLOPS_CONTRACT", "MLFLOW_TRACKING_URI"):
        os.environ.pop(name, None)
    try:
        result = LifecycleDemo(
            DemoOptions(home=tmp_path_factory.mktemp("e2e") / "demo", rows=600, phase_timeout=480)
        ).run()
        print_summary(result)
        yield result
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_every_phase_succeeded(demo):
    assert demo.ok, demo.failures
    assert all(p.get("ok") for p in demo.phases.values()), demo.phases


def test_champion_has_lineage_to_a_dataset_version(demo):
    versions = {v["version_id"] for v in demo.summary["dataset_versions"]}
    champion = demo.summary["champions"]["dev"]
    assert champion["dataset_versions"]
    assert set(champion["dataset_versions"].split(",")) <= versions


def test_serving_endpoint_answers(demo):
    sample = demo.summary["sample_prediction"]
    assert sample["status"] == 200, sample
    assert sample["response"]["predictions"][0] in (0, 1)


def test_no_drift_no_retrain(demo):
    assert demo.phases["no-drift"]["retrained"] is False
    calm = [d for d in demo.summary["drift_verdicts"] if d and d["reason"] == "none"]
    assert calm, demo.summary["drift_verdicts"]


def test_drift_triggers_retraining(demo):
    assert demo.phases["drift"]["retrained"] is True
    reasons = {d["reason"] for d in demo.summary["drift_verdicts"] if d}
    assert {"no_champion"} < reasons and reasons & {"drift", "decay"}
    assert len(demo.summary["training_runs"]) == 2


def test_rerunning_ingest_creates_no_new_version_or_duplicates(demo):
    rerun = demo.phases["re-run"]
    assert rerun["versions_before"] == rerun["versions_after"]
    assert rerun["cleared_task_state"] == "skipped"
    assert rerun["duplicate_file_quarantined"] is True


def test_quarantine_records_reasons(demo):
    reasons = " ".join(str(q) for q in demo.summary["quarantine"])
    assert "missing_columns" in reasons and "duplicate_file" in reasons


def test_promotion_reaches_prod_after_approval(demo):
    assert demo.phases["promote"]["from_dev"] == "success"
    assert demo.phases["promote"]["from_staging"] == "success"
    assert {"dev", "staging", "prod"} <= set(demo.summary["champions"])
