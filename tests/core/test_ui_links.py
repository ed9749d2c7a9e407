"""Links from what a stage recorded: the exact thing, or nothing (never a half-made URL)."""

from __future__ import annotations

import pytest

from mlops_core import ui_links

UI = "http://127.0.0.1:5000/"


def test_training_run_link():
    record = {"mlflow_run_id": "0123abcd", "mlflow_experiment_id": "4"}
    assert ui_links.run_link(record, UI) == "http://127.0.0.1:5000/#/experiments/4/runs/0123abcd"
    assert ui_links.run_link({"mlflow_run_id": "0123abcd"}, UI) is None  # no experiment: no guess
    assert ui_links.run_link(record, None) is None  # no MLflow UI configured


def test_model_version_link():
    record = {"model_name": "prod.churn", "version": "3", "env": "prod"}
    assert ui_links.model_version_link(record, UI) == "http://127.0.0.1:5000/#/models/prod.churn/versions/3"
    assert ui_links.model_version_link({"model_name": "a b/c", "version": 2}, UI).endswith(
        "/#/models/a%20b%2Fc/versions/2"
    )
    assert ui_links.model_version_link({"model_name": "prod.churn", "version": None}, UI) is None


def test_drift_report_link_points_at_the_plugin_route():
    verdict = {"report": "file:///home/u/mlops/store/reports/drift/monitor-abc123.html", "retrain": False}
    base = "http://127.0.0.1:8080/"
    assert ui_links.report_link(verdict, base) == "http://127.0.0.1:8080/mlops/reports/monitor-abc123"
    assert ui_links.report_link({"report": "s3://b/reports/drift/r1.html"}, base).endswith("/mlops/reports/r1")
    assert ui_links.report_link({"report": None}, base) is None  # no report (e.g. no champion yet)
    assert ui_links.report_link(verdict, "/") is None  # no absolute api base URL


def test_endpoint_link_is_the_newest_deployment_with_a_url():
    deployed = {
        "deployments": [
            {"env": "dev", "url": "http://127.0.0.1:5101"},
            {"env": "staging", "url": "http://127.0.0.1:5102/"},
        ]
    }
    assert ui_links.endpoint_link(deployed) == "http://127.0.0.1:5102"
    assert ui_links.endpoint_link({"deployments": [{"env": "prod", "url": "churn-prod"}]}) is None  # a cloud name
    assert ui_links.endpoint_link({"deployments": []}) is None


@pytest.mark.parametrize(
    "record",
    [None, "not a record", {}, {"mlflow_run_id": "../../etc", "mlflow_experiment_id": "1"}, {"mlflow_run_id": True}],
)
def test_nothing_to_point_at_is_no_link(record):
    assert ui_links.run_link(record, UI) is None
    assert ui_links.model_version_link(record, UI) is None
    assert ui_links.report_link(record, UI) is None
    assert ui_links.endpoint_link(record) is None


@pytest.mark.parametrize(
    "base",
    ["", "javascript:alert(1)", "file:///tmp", "http://user:pw@host:5000", "http://host/?q=1", "http://h st", None],
)
def test_only_plain_web_bases_make_links(base):
    assert ui_links.web_base(base) is None
    assert ui_links.mlflow_run_url(base, "1", "abc") is None


def test_mlflow_ui_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("MLFLOW_UI_URL", "https://mlflow.example.com/")
    assert ui_links.mlflow_ui_url() == "https://mlflow.example.com"
    monkeypatch.delenv("MLFLOW_UI_URL")
    assert ui_links.mlflow_ui_url() is None
