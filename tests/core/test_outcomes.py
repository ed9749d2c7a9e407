"""The one-line outcomes that become run notes say what a user must see."""

from __future__ import annotations

from mlops_core.outcomes import deploy_outcome, evaluation_outcome, ingest_outcome, monitor_outcome


def test_every_file_quarantined_is_said_plainly() -> None:
    report = {
        "version_id": None,
        "rows": 0,
        "rejected_rows": 0,
        "reason": "no accepted rows",
        "files": [
            {"file": "a.csv", "status": "rejected", "reason_code": "missing_columns"},
            {"file": "b.csv", "status": "rejected", "reason_code": "not_utf8"},
        ],
    }
    text = ingest_outcome(report)
    assert text.startswith("every file quarantined (2 files: missing_columns, not_utf8)")
    assert "no new dataset version" in text


def test_mixed_batch_names_the_version_and_what_was_quarantined() -> None:
    report = {
        "version_id": "0123456789abcdef",
        "created": True,
        "rows": 1997,
        "rejected_rows": 3,
        "duplicate_rows": 0,
        "files": [
            {"file": "a.csv", "status": "accepted"},
            {"file": "b.csv", "status": "accepted"},
            {"file": "c.csv", "status": "rejected", "reason_code": "missing_columns"},
        ],
    }
    assert ingest_outcome(report) == (
        "3 files, 2 accepted (3 rows quarantined), 1 quarantined (missing_columns) "
        "-> new dataset version 0123456789abcdef (1,997 rows)"
    )


def test_duplicate_delivery_is_not_called_a_rejection() -> None:
    report = {
        "version_id": None,
        "reason": "no accepted rows",
        "files": [{"file": "a.csv", "status": "duplicate_file"}],
    }
    text = ingest_outcome(report)
    assert "quarantined" not in text and "1 duplicate delivery ignored" in text


def test_sql_read_without_files() -> None:
    report = {"version_id": "v" * 16, "created": True, "rows": 10, "rejected_rows": 2, "duplicate_rows": 0}
    assert ingest_outcome(report).startswith("12 rows read, 2 quarantined -> new dataset version")


def test_gate_rejection_names_the_kept_champion_and_the_reason() -> None:
    text = evaluation_outcome(
        {
            "model_name": "dev.churn",
            "version": "3",
            "promote": False,
            "champion_version": "2",
            "reasons": ["roc_auc 0.61 is below the threshold 0.65."],
        }
    )
    assert (
        text == "dev.churn v3 registered but NOT promoted (champion v2 kept). roc_auc 0.61 is below the threshold 0.65."
    )


def test_promotion_waiting_for_approval() -> None:
    text = evaluation_outcome({"model_name": "prod.churn", "version": "4", "promote": True, "requires_approval": True})
    assert "waiting for approval" in text


def test_monitor_and_deploy() -> None:
    assert monitor_outcome({"retrain": True, "reason": "drift", "summary": "4 of 8 columns drifted"}) == (
        "retraining requested (drift): 4 of 8 columns drifted"
    )
    assert monitor_outcome({"retrain": False, "summary": "0 of 8 columns drifted"}).startswith("no retraining")
    assert (
        deploy_outcome(
            [
                {
                    "env": "dev",
                    "model_name": "dev.churn",
                    "version": "2",
                    "url": "http://127.0.0.1:5101",
                    "previous_version": "1",
                }
            ]
        )
        == "dev: dev.churn v2 live at http://127.0.0.1:5101 (was v1)"
    )


def test_monitor_outcome_links_the_report_as_the_ui_serves_it_first():
    url = "http://127.0.0.1:8080/mlops/reports/dev/monitor-20260105T000000-0123456789"
    note = monitor_outcome({"retrain": False, "summary": "x" * 2000, "report_url": url, "report": "file:///r.html"})
    assert note.startswith(f"no retraining: drift report: {url}; xxx")  # before a summary that may be cut
    stored_only = monitor_outcome({"retrain": True, "reason": "drift", "summary": "s", "report": "file:///r.html"})
    assert stored_only == "retraining requested (drift): s"  # a browser cannot open file://: no link
