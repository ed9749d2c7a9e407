"""The lifecycle page's HTML (mlops_airflow.ui.page): stable anchors, every value escaped, no unsafe link."""

from __future__ import annotations

from mlops_airflow.ui.page import render_lifecycle

HOSTILE = '<script>alert("x")</script>'


def _view(**parts) -> dict:
    base = {
        "env": "dev",
        "model_name": "dev.churn",
        "backends": {"storage": "local", "compute": "local", "serving": "local", "registry_mirror": "none"},
        "requires_approval": False,
        "champion": None,
        "challenger": None,
        "evaluation": None,
        "monitor": None,
        "retrain_request": None,
        "dataset": None,
        "deployment": None,
        "last_deployment": None,
        "approvals": [],
        "errors": {},
    }
    return base | parts


def test_each_environment_has_its_heading_and_section():
    page = render_lifecycle(
        {"generated_at": "now", "environments": [_view(), _view(env="prod", model_name="prod.churn")]}
    )
    assert '<main id="lifecycle">' in page
    assert '<section class="env" id="env-dev" data-env="dev">' in page and "<h2>dev.churn in dev</h2>" in page
    assert "<h2>prod.churn in prod</h2>" in page
    assert "no champion yet" in page and "nothing deployed" in page and "no monitor run yet" in page


def test_values_are_escaped_and_only_web_links_become_links():
    monitor = {"at": "t", "verdict": "drift", "drifted": True, "decayed": False, "drift_share": 0.5}
    monitor |= {"metric_drop": None, "summary": HOSTILE, "champion_version": "1", "report_id": "dev/monitor-x"}
    view = _view(
        monitor=monitor,
        retrain_request={"reason": HOSTILE, "at": "t", "report": "javascript:alert(1)"},
        deployment={
            "model_version": "2",
            "target": "local:dev",
            "endpoint": HOSTILE,
            "deployed_at": "t",
            "healthy": True,
        },
        approvals=[{"subject": HOSTILE, "dag_id": "promote", "run_id": "r"}],
        errors={"deployment": HOSTILE},
    )
    page = render_lifecycle({"generated_at": "now", "environments": [view], "approvals": view["approvals"]})
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "javascript:" not in page
    assert '<a class="drift-report" href="reports/dev/monitor-x">drift report</a>' in page
    assert page.count(">drift report</a>") == 1  # the event's unsafe link is not one
    assert 'class="health ok">healthy<' in page


def test_an_environment_whose_settings_cannot_be_read_says_why():
    page = render_lifecycle({"generated_at": "now", "environments": [{"env": "prod", "errors": {"settings": "bad"}}]})
    assert "<h2>(settings not readable) in prod</h2>" in page and "settings: bad" in page
