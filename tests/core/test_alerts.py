"""Which outcome alerts, and what the alert says (mlops_core.alerts: plain Python, events as the DAGs emit them)."""

from __future__ import annotations

import json

import pytest

from mlops_core.alerts import (
    DEPLOYMENT_ASSET,
    EVALUATION_ASSET,
    KIND_TITLES,
    QUARANTINE_ASSET,
    RETRAIN_ASSET,
    Alert,
    alert_for_failed_run,
    alerts_from_event,
    safe_link,
    store_location,
    wanted,
)
from mlops_core.settings import ALERT_KINDS

RUN = {"dag_id": "monitor", "run_id": "asset_triggered__2026-02-01T00:00:00+00:00", "run_url": "http://af:8080/x"}

# Events shaped as the DAGs emit them (dags/monitor.py, mlops_airflow.runtime.announce_ingest,
# stages.evaluate.evaluate_candidate, dags/deploy.py).
DRIFT = {
    "env": "staging",
    "reason": "drift",
    "version_ids": ["a1b2c3d4e5f60718"],
    "drift_share": 0.5,
    "metric_drop": None,
    "summary": "4 of 8 columns drifted (share 0.50 >= 0.30)",
    "report": "s3://bucket/mlops/staging/reports/drift/monitor-20260201T000000-abc.html",
}
DECAY = {**DRIFT, "reason": "decay", "drift_share": 0.0, "metric_drop": 0.12, "summary": "roc_auc dropped by 0.1200"}
QUARANTINED = {
    "dataset": "churn",
    "run_id": "manual__1",
    "rejected_rows": 3,
    "duplicate_rows": 0,
    "files_quarantined": [
        {
            "file": "bad.csv",
            "reason_code": "missing_columns",
            "reason": "bad.csv: columns 'plan' and 'region' are missing",
            "quarantine": "quarantine/churn/manual__1/bad.csv.json",
        }
    ],
    "note": "2 files: 1 accepted (3 rows quarantined), 1 quarantined (missing_columns) -> new dataset version x",
}
REJECTED = {
    "env": "dev",
    "model_name": "dev.churn",
    "version": "7",
    "mlflow_run_id": "0123456789abcdef",
    "promote": False,
    "reasons": ["roc_auc 0.581 is below the threshold 0.6."],
    "challenger_metrics": {"roc_auc": 0.581},
    "champion_metrics": {"roc_auc": 0.71},
    "champion_version": "6",
}
ROLLED_BACK = {
    "deployments": [
        {"env": "prod", "model_name": "prod.churn", "version": "4", "previous_version": "3", "rolled_back": True},
        {"env": "dev", "model_name": "dev.churn", "version": "9", "rolled_back": False},
    ]
}


def test_every_kind_has_a_title_and_a_setting():
    assert set(KIND_TITLES) == set(ALERT_KINDS)


@pytest.mark.parametrize(("extra", "kind"), [(DRIFT, "drift"), (DECAY, "decay")])
def test_drift_and_decay_alert_with_the_verdict_and_the_report(extra, kind):
    [alert] = alerts_from_event(RETRAIN_ASSET, extra, env="dev", **RUN)
    assert alert.kind == kind and alert.env == "staging"  # the event's environment wins
    assert alert.verdict == extra["summary"]
    assert alert.report_url == extra["report"]
    assert alert.run_url == RUN["run_url"] and alert.dag_id == "monitor"
    text = alert.text()
    assert f"Verdict: {extra['summary']}" in text and f"Report: {extra['report']}" in text
    assert f"Run: {RUN['run_url']}" in text
    assert alert.subject.startswith(f"[mlops staging] {KIND_TITLES[kind]}")


@pytest.mark.parametrize("reason", ["no_champion", "forced", "none"])
def test_a_first_or_forced_training_is_no_alert(reason):
    assert alerts_from_event(RETRAIN_ASSET, {**DRIFT, "reason": reason}, **RUN) == []


def test_an_event_without_a_report_says_so():
    [alert] = alerts_from_event(RETRAIN_ASSET, {k: v for k, v in DRIFT.items() if k != "report"}, **RUN)
    assert alert.report_url is None and "Report: none" in alert.text()


def test_quarantine_links_the_record_in_the_store(tmp_path):
    [alert] = alerts_from_event(QUARANTINE_ASSET, QUARANTINED, env="dev", store_root=str(tmp_path / "store"), **RUN)
    assert alert.kind == "quarantine" and alert.env == "dev"  # quarantine events name no environment
    assert alert.verdict == QUARANTINED["note"]
    assert alert.report_url == (tmp_path / "store" / "quarantine/churn/manual__1/bad.csv.json").as_uri()
    assert alert.details["files"] == ["bad.csv: bad.csv: columns 'plan' and 'region' are missing"]
    assert alert.details["rejected_rows"] == 3
    on_s3 = alerts_from_event(QUARANTINE_ASSET, QUARANTINED, env="dev", store_root="s3://b/mlops/dev", **RUN)
    assert on_s3[0].report_url == "s3://b/mlops/dev/quarantine/churn/manual__1/bad.csv.json"


def test_quarantine_without_a_note_counts_what_was_quarantined():
    extra = {**QUARANTINED, "note": None, "rejected_rows": 1200}
    [alert] = alerts_from_event(QUARANTINE_ASSET, extra, env="dev", **RUN)
    assert alert.verdict == "1 file(s) quarantined (missing_columns); 1,200 row(s) quarantined"


def test_many_quarantined_files_are_counted_not_listed():
    files = [{"file": f"f{i}.csv", "reason_code": "bad_types", "reason": "x"} for i in range(25)]
    [alert] = alerts_from_event(QUARANTINE_ASSET, {"files_quarantined": files}, env="dev", **RUN)
    assert len(alert.details["files"]) == 11 and alert.details["files"][-1] == "... and 15 more"


def test_a_rejected_challenger_alerts_with_the_gates_reasons_and_the_mlflow_run():
    [alert] = alerts_from_event(EVALUATION_ASSET, REJECTED, mlflow_ui="http://mlflow:5000/", **RUN)
    assert alert.kind == "rejected_challenger" and alert.env == "dev"
    assert alert.verdict == (
        "dev.churn v7 registered but not promoted (champion v6 kept): roc_auc 0.581 is below the threshold 0.6."
    )
    assert alert.report_url == "http://mlflow:5000/#/runs/0123456789abcdef"
    assert alert.details["challenger_metrics"] == {"roc_auc": 0.581}


def test_a_promoted_challenger_is_no_alert():
    assert alerts_from_event(EVALUATION_ASSET, {**REJECTED, "promote": True}, **RUN) == []
    assert alerts_from_event(EVALUATION_ASSET, {k: v for k, v in REJECTED.items() if k != "promote"}, **RUN) == []


def test_a_rolled_back_deployment_alerts_for_its_environment_only():
    [alert] = alerts_from_event(DEPLOYMENT_ASSET, ROLLED_BACK, env="dev", **RUN)
    assert alert.kind == "deployment_failed" and alert.env == "prod"
    assert alert.verdict == "prod.churn v4 was rolled back in prod to v3"
    healthy = {"deployments": [ROLLED_BACK["deployments"][1]]}
    assert alerts_from_event(DEPLOYMENT_ASSET, healthy, **RUN) == []


def test_a_failed_deploy_run_is_a_failed_deployment_and_any_other_a_failed_dag_run():
    deploy = alert_for_failed_run(
        "deploy",
        "asset_triggered__1",
        env="prod",
        reason="task_failure",
        task_id="deploy_champion",
        run_url="http://af:8080/dags/deploy/runs/asset_triggered__1",
        log_url="http://af:8080/dags/deploy/runs/asset_triggered__1/tasks/deploy_champion?try_number=2",
    )
    assert deploy.kind == "deployment_failed"
    assert deploy.verdict.startswith("DAG deploy run asset_triggered__1 failed at task deploy_champion (task_failure)")
    # The report of a failed run is its failed task's log; a query string is never part of a link.
    assert deploy.report_url == "http://af:8080/dags/deploy/runs/asset_triggered__1/tasks/deploy_champion"
    other = alert_for_failed_run("train", "r", env="dev", reason=None, task_id=None)
    assert other.kind == "dag_failed" and other.verdict == "DAG train run r failed"


def test_kinds_switch_alerts_off():
    [alert] = alerts_from_event(RETRAIN_ASSET, DRIFT, **RUN)
    assert wanted(alert, ("drift", "decay"))
    assert not wanted(alert, ("quarantine",))


def test_other_assets_and_broken_events_make_no_alert():
    assert alerts_from_event("dataset_version", {"version_id": "x"}, **RUN) == []
    assert alerts_from_event(DEPLOYMENT_ASSET, {"deployments": "nonsense"}, **RUN) == []
    assert alerts_from_event(QUARANTINE_ASSET, {}, env="dev", **RUN)[0].verdict == "data quarantined"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:secret@host.example:8443/path?sig=abc#frag", "https://host.example:8443/path"),
        ("s3://bucket/key.html", "s3://bucket/key.html"),
        (
            "https://acct.blob.core.windows.net/c/r.html?sv=2024&sig=SECRET",
            "https://acct.blob.core.windows.net/c/r.html",
        ),
        ("javascript:alert(1)", None),
        ("http://host/a b", None),
        ("http://host/\nX-Injected: 1", None),
        (None, None),
    ],
)
def test_links_keep_no_credentials_and_only_known_schemes(url, expected):
    assert safe_link(url) == expected


def test_store_locations_stay_inside_the_store():
    assert store_location("/srv/store", "quarantine/a.json") == "file:///srv/store/quarantine/a.json"
    assert store_location("/srv/store", "../../etc/passwd") is None
    assert store_location("/srv/store", "/etc/passwd") is None
    assert store_location(None, "quarantine/a.json") is None


def test_untrusted_event_text_is_one_short_line_and_escaped_in_html():
    hostile = {
        "files_quarantined": [
            {"file": "<script>alert(1)</script>.csv", "reason_code": "x\r\nBcc: all@example.com", "reason": "y" * 5000}
        ]
    }
    [alert] = alerts_from_event(QUARANTINE_ASSET, hostile, env="dev", **RUN)
    assert "\n" not in alert.verdict and "\r" not in alert.verdict and "\n" not in alert.subject
    body = alert.html()
    assert "<script>" not in body and "&lt;script&gt;" in body
    assert all(len(line) <= 500 + 300 for line in alert.details["files"])


def test_the_webhook_payload_is_json_with_the_text_and_every_field():
    [alert] = alerts_from_event(RETRAIN_ASSET, DRIFT, **RUN)
    payload = json.loads(json.dumps(alert.payload()))
    assert payload["text"] == alert.text()
    assert {k: payload[k] for k in ("kind", "env", "verdict", "report_url", "run_url", "dag_id")} == {
        "kind": "drift",
        "env": "staging",
        "verdict": DRIFT["summary"],
        "report_url": DRIFT["report"],
        "run_url": RUN["run_url"],
        "dag_id": "monitor",
    }
    assert payload["details"]["drift_share"] == 0.5


def test_an_alert_survives_the_xcom_round_trip():
    import dataclasses

    [alert] = alerts_from_event(EVALUATION_ASSET, REJECTED, **RUN)
    assert Alert(**json.loads(json.dumps(dataclasses.asdict(alert)))) == alert
