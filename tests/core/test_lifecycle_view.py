"""The lifecycle view's data (mlops_core.lifecycle_view) on a real MLflow store, and drift report ids."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from conftest import INGESTED_AT, churn_row, register_toy_model, to_csv, toy_frame

from mlops_core.backends import backends_for
from mlops_core.datasets import DatasetStore
from mlops_core.drift_reports import UnknownReport, key_for_id, read_report, report_id, report_key
from mlops_core.lifecycle_view import environment_view
from mlops_core.settings import load_settings
from mlops_core.stages.monitor import REPORT_KEY_TAG
from mlops_core.storage import LocalObjectStore, ObjectNotFound
from mlops_core.validation import read_source, validate

RUN_KEY = "monitor-20260105T000000-0123456789"
REPORT = "<html><body><h1>Data drift</h1></body></html>"


def _labels(frame: pd.DataFrame) -> np.ndarray:
    return (frame["charges"] > frame["charges"].median()).astype(int).to_numpy()


@pytest.fixture
def dev(mlops_home):
    settings = load_settings("dev")
    return settings, backends_for(settings)


def _monitor_run(backends, env: str, tmp_path, **tags: str) -> str:
    """A monitor run as the monitor stage logs it (its report kept in the store and in MLflow)."""
    key = report_key(RUN_KEY)
    backends.store.put_bytes(key, REPORT.encode())
    path = tmp_path / "drift_report.html"
    path.write_text(REPORT)
    return backends.registry.log_artifact_run(
        f"monitor-{RUN_KEY}",
        {"drift_report.html": path},
        {"drift_share": 0.5, "roc_auc_drop": 0.07},
        {
            "mlops.env": env,
            "mlops.champion_version": "1",
            "mlops.dataset_versions": "ab12",
            "mlops.drifted": "True",
            "mlops.decayed": "True",
            "mlops.verdict": "drift",
            "mlops.summary": "4 of 8 columns drifted",
            REPORT_KEY_TAG: key,
            **tags,
        },
    )


def test_an_empty_environment_says_there_is_nothing_yet(dev):
    settings, backends = dev
    view = environment_view(settings, backends)
    assert view["env"] == "dev" and view["model_name"] == settings.registered_model_name
    for part in ("champion", "challenger", "evaluation", "monitor", "retrain_request", "dataset", "deployment"):
        assert view[part] is None, part
    assert view["approvals"] == [] and view["errors"] == {}
    # reading created nothing in MLflow: no experiment for a view
    assert backends.registry.client.get_experiment_by_name(settings.registry.experiment) is None


def test_champion_challenger_verdict_dataset_and_events(dev, tmp_path, churn):
    settings, backends = dev
    registry, name = backends.registry, settings.registered_model_name
    data = toy_frame(60, seed=1)
    v1 = register_toy_model(registry, name, data, _labels(data), run_name="train-1")
    registry.set_version_tags(name, v1, {"mlops.holdout_roc_auc": "0.81", "mlops.dataset_versions": "aa11,bb22"})
    registry.set_champion(name, v1)
    v2 = register_toy_model(registry, name, data, _labels(data), run_name="train-2")
    registry.set_version_tags(name, v2, {"mlops.holdout_roc_auc": "0.78", "mlops.promotion_decision": "reject"})
    _monitor_run(backends, "dev", tmp_path)
    _monitor_run(backends, "staging", tmp_path)  # another environment's run is not ours (same experiment)
    frame = validate(read_source(to_csv([churn_row("c1"), churn_row("c2")]), "a.csv"), churn, "a.csv", INGESTED_AT)
    committed = DatasetStore(backends.store, churn.name).commit_version(
        frame.accepted, churn, [{"key": "a.csv", "sha256": "0" * 64}], "run1", "2026-01-05T00:00:00+00:00"
    )
    evaluation = {"env": "dev", "version": v2, "promote": False, "reasons": ["roc_auc 0.78 < 0.81 + 0.01"]}
    evaluation |= {"challenger_metrics": {"roc_auc": 0.78}, "champion_metrics": {"roc_auc": 0.81}}
    evaluation["champion_version"] = v1
    events = [  # newest first, as mlops_airflow.ui.airflow_records reads them
        {"asset": "model_evaluation", "timestamp": "2026-01-06T00:00:00+00:00", "extra": {**evaluation, "env": "prod"}},
        {"asset": "model_evaluation", "timestamp": "2026-01-05T12:00:00+00:00", "extra": evaluation, "dag_id": "e"},
        {"asset": "retrain_requested", "timestamp": "2026-01-05T10:00:00Z", "extra": {"env": "dev", "reason": "x"}},
        {
            "asset": "deployment",
            "timestamp": "2026-01-04T00:00:00+00:00",
            "extra": {"deployments": [{"env": "dev", "version": v1, "url": "http://127.0.0.1:5001"}]},
        },
    ]
    approvals = [{"env": "prod", "subject": "Promote?"}, {"env": "dev", "subject": f"Make {name} v{v2} the champion?"}]

    view = environment_view(settings, backends, events=events, approvals=approvals)

    assert view["errors"] == {}
    champion, challenger = view["champion"], view["challenger"]
    assert (champion["version"], champion["is_champion"], champion["holdout"]) == (v1, True, {"roc_auc": 0.81})
    assert champion["dataset_versions"] == ["aa11", "bb22"] and champion["run_id"]
    assert (challenger["version"], challenger["is_champion"], challenger["decision"]) == (v2, False, "reject")
    assert view["evaluation"]["version"] == v2 and view["evaluation"]["at"] == "2026-01-05T12:00:00+00:00"
    assert view["evaluation"]["champion_metrics"] == {"roc_auc": 0.81}
    monitor = view["monitor"]
    assert monitor["report_id"] == f"dev/{RUN_KEY}"
    assert (monitor["verdict"], monitor["drifted"], monitor["decayed"]) == ("drift", True, True)
    assert (monitor["drift_share"], monitor["metric_drop"]) == (0.5, 0.07)
    assert view["retrain_request"]["reason"] == "x"
    assert view["last_deployment"]["version"] == v1 and view["last_deployment"]["url"] == "http://127.0.0.1:5001"
    assert view["deployment"] is None  # the event says what was deployed; nothing serves now
    assert view["dataset"]["version_id"] == committed.version_id and view["dataset"]["rows"] == 2
    assert [a["subject"] for a in view["approvals"]] == [f"Make {name} v{v2} the champion?"]
    # the report the view links is the one the monitor stored
    assert read_report(backends.store, key_for_id("dev", RUN_KEY)) == REPORT.encode()


def test_an_unreadable_part_is_reported_and_the_rest_still_shown(mlops_home, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////proc/no-such-folder/mlflow.db")  # cannot be created
    settings = load_settings("dev")
    backends = backends_for(settings)
    view = environment_view(settings, backends)
    assert set(view["errors"]) == {"champion", "challenger", "monitor"}
    assert "/proc/no-such-folder" in view["errors"]["champion"]
    assert view["dataset"] is None and view["deployment"] is None  # read from the store and the serving target


def test_report_ids_name_only_reports():
    key = report_key(RUN_KEY)
    assert key == f"reports/drift/{RUN_KEY}.html"
    assert report_id("dev", key) == f"dev/{RUN_KEY}" and key_for_id("dev", RUN_KEY) == key
    for env, run_key in [
        ("dev", "../../etc/passwd"),
        ("dev", "..%2F..%2Fetc%2Fpasswd"),
        ("dev", "/etc/passwd"),
        ("dev", "monitor-1.html"),
        ("dev", ".."),
        ("dev", ""),
        ("dev", "a\\b"),
        ("..", RUN_KEY),
        ("qa", RUN_KEY),
    ]:
        with pytest.raises(UnknownReport):
            key_for_id(env, run_key)
    with pytest.raises(UnknownReport):
        report_id("dev", "datasets/churn/manifest.json")


def test_a_report_that_leads_out_of_the_store_is_refused(tmp_path):
    store = LocalObjectStore(tmp_path / "store")
    secret = tmp_path / "secret.html"
    secret.write_text("not a report")
    link = store.path(report_key("monitor-link"))
    link.parent.mkdir(parents=True)
    os.symlink(secret, link)
    with pytest.raises(ObjectNotFound):
        read_report(store, report_key("monitor-link"))
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "monitor-x.html").write_text("not a report")
    os.symlink(outside, store.path("reports/linked"))
    with pytest.raises(ObjectNotFound):
        read_report(store, "reports/linked/monitor-x.html")
    with pytest.raises(ObjectNotFound):
        read_report(store, report_key("monitor-missing"))
