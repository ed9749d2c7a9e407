"""Alerts reach people: the alerts DAG's tasks and the DAG-level failure callback, sending through the HTTP
provider's HttpNotifier and the SMTP provider's SmtpNotifier to a real HTTP receiver and a real SMTP server
(aiosmtpd), both on loopback and started here. Connections come from ``AIRFLOW_CONN_<ID>`` as in production.
"""

from __future__ import annotations

import email
import json
import logging
import threading
import types
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from mlops_core.ports import free_port
from mlops_core.settings import DEFAULT_CONF_DIR
from tests.conftest import DAGS

HOOK_CONN = "mlops_alerts_hook"
SMTP_CONN = "mlops_alerts_smtp"
HOOK_PASSWORD = "hook-password-7f3a9c"
SMTP_PASSWORD = "smtp-password-51be02"


class Receiver:
    """A webhook receiver: records every POST, answers ``status``."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def payloads(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.requests]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    receiver = Receiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def smtp():
    """A real SMTP server (aiosmtpd) on loopback that takes AUTH PLAIN/LOGIN with the test password."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    class Inbox:
        def __init__(self):
            self.messages: list[dict] = []
            self.logins: list[str] = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append(
                {
                    "from": envelope.mail_from,
                    "to": list(envelope.rcpt_tos),
                    "message": email.message_from_bytes(envelope.content),
                    "raw": envelope.content,
                }
            )
            return "250 OK"

    inbox = Inbox()

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"alerts" and auth_data.password == SMTP_PASSWORD.encode()
        if ok:
            inbox.logins.append(auth_data.login.decode())
        return AuthResult(success=ok)

    controller = Controller(
        inbox, hostname="127.0.0.1", port=free_port(), authenticator=authenticate, auth_require_tls=False
    )
    controller.start()
    inbox.port = controller.port
    yield inbox
    controller.stop()


def _connections(monkeypatch, webhook, smtp, *, hook_host: str | None = None) -> None:
    hook = {
        "conn_type": "http",
        "host": hook_host or "127.0.0.1",
        "port": webhook.port,
        "schema": "http",
        "login": "alerts",
        "password": HOOK_PASSWORD,
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{HOOK_CONN.upper()}", json.dumps(hook))
    mail = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": smtp.port,
        "login": "alerts",
        "password": SMTP_PASSWORD,
        "extra": {"disable_ssl": True, "disable_tls": True, "timeout": 10, "retry_limit": 0},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{SMTP_CONN.upper()}", json.dumps(mail))


def _alert_settings(tmp_path: Path, monkeypatch, **alerts) -> None:
    """Every environment's shipped settings with ``alerts`` laid over (found through MLOPS_CONF_DIR)."""
    conf = tmp_path / "conf"
    conf.mkdir(exist_ok=True)
    for env in ("dev", "staging", "prod"):
        raw = yaml.safe_load((DEFAULT_CONF_DIR / f"{env}.yaml").read_text(encoding="utf-8"))
        raw["alerts"] = {**raw["alerts"], **alerts}
        (conf / f"{env}.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    monkeypatch.setenv("MLOPS_CONF_DIR", str(conf))


CHANNELS_ON = {
    "webhook_conn_id": HOOK_CONN,
    "webhook_endpoint": "hooks/mlops",
    "smtp_conn_id": SMTP_CONN,
    "email_to": ["ml-oncall@example.com", "data@example.com"],
    "email_from": "airflow@example.com",
}


@pytest.fixture
def channels(mlops_home, tmp_path, monkeypatch, webhook, smtp):
    _connections(monkeypatch, webhook, smtp)
    _alert_settings(tmp_path, monkeypatch, **CHANNELS_ON)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.example:8080/")
    return types.SimpleNamespace(webhook=webhook, smtp=smtp)


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def _event(asset, extra: dict, *, dag_id: str, run_id: str, minute: int = 0):
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult

    return AssetEventDagRunReferenceResult(
        asset={"name": asset.name, "uri": asset.uri, "extra": {}},
        extra=extra,
        source_task_id="t",
        source_dag_id=dag_id,
        source_run_id=run_id,
        source_map_index=-1,
        source_aliases=[],
        timestamp=datetime(2026, 2, 1, 0, minute, tzinfo=UTC),
    )


def _triggering(*events):
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    return TriggeringAssetEventsAccessor.build(events)


def _run_alerts_dag(dagbag, triggering, env: str = "dev") -> tuple[list[dict], int, int]:
    """The alerts DAG's three tasks, run for real (their Python callables) on one run's context."""
    dag = dagbag.dags["alerts"]
    context = {
        "params": {"env": env},
        "triggering_asset_events": triggering,
    }
    found = dag.get_task("decide").python_callable(**context)
    found = json.loads(json.dumps(found))  # through XCom
    sent_hooks = dag.get_task("send_webhook").python_callable(found)
    sent_mails = dag.get_task("send_email").python_callable(found)
    return found, sent_hooks, sent_mails


# Events as the lifecycle DAGs emit them.
def _lifecycle_events(quarantine_file: str = "bad.csv"):
    from mlops_airflow.assets import DEPLOYMENT, EVALUATION, QUARANTINE, RETRAIN_REQUESTED

    return _triggering(
        _event(
            QUARANTINE,
            {
                "dataset": "churn",
                "run_id": "manual__q",
                "rejected_rows": 0,
                "duplicate_rows": 0,
                "files_quarantined": [
                    {
                        "file": quarantine_file,
                        "reason_code": "missing_columns",
                        "reason": "columns 'plan' missing",
                        "quarantine": "quarantine/churn/manual__q/bad.csv.json",
                    }
                ],
                "note": "every file quarantined (1 file: missing_columns); no new dataset version",
            },
            dag_id="ingest",
            run_id="manual__q",
        ),
        _event(
            RETRAIN_REQUESTED,
            {
                "env": "dev",
                "reason": "drift",
                "version_ids": ["a1b2c3d4e5f60718"],
                "drift_share": 0.5,
                "metric_drop": None,
                "summary": "4 of 8 columns drifted",
                "report": "file:///srv/mlops/store/reports/drift/monitor-1.html",
            },
            dag_id="monitor",
            run_id="asset_triggered__d",
            minute=1,
        ),
        _event(
            RETRAIN_REQUESTED,
            {"env": "dev", "reason": "decay", "metric_drop": 0.2, "summary": "roc_auc dropped by 0.2000"},
            dag_id="monitor",
            run_id="asset_triggered__e",
            minute=2,
        ),
        _event(
            RETRAIN_REQUESTED,
            {"env": "dev", "reason": "no_champion", "summary": "no champion yet"},
            dag_id="monitor",
            run_id="asset_triggered__f",
            minute=3,
        ),
        _event(
            EVALUATION,
            {
                "env": "dev",
                "model_name": "dev.churn",
                "version": "7",
                "promote": False,
                "reasons": ["roc_auc 0.58 is below the threshold 0.6."],
                "champion_version": "6",
            },
            dag_id="evaluate_register",
            run_id="asset_triggered__g",
        ),
        _event(
            DEPLOYMENT,
            {"deployments": [{"env": "dev", "model_name": "dev.churn", "version": "6", "rolled_back": False}]},
            dag_id="deploy",
            run_id="asset_triggered__h",
        ),
    )


def test_the_alerts_dag_sends_each_alarming_outcome_by_webhook_and_email(dagbag, channels):
    found, sent_hooks, sent_mails = _run_alerts_dag(dagbag, _lifecycle_events())
    kinds = [a["kind"] for a in found]
    assert kinds == ["quarantine", "drift", "decay", "rejected_challenger"]  # no_champion and a good deploy: silent
    assert sent_hooks == 4 and sent_mails == 4

    requests = channels.webhook.requests
    assert [r["path"] for r in requests] == ["/hooks/mlops"] * 4
    assert all(r["headers"]["Content-Type"] == "application/json" for r in requests)
    assert all(r["headers"]["Authorization"].startswith("Basic ") for r in requests)  # the connection's login
    drift = channels.webhook.payloads[1]
    assert drift["kind"] == "drift" and drift["env"] == "dev"
    assert drift["verdict"] == "4 of 8 columns drifted"
    assert drift["report_url"] == "file:///srv/mlops/store/reports/drift/monitor-1.html"
    assert drift["run_url"] == "http://airflow.example:8080/dags/monitor/runs/asset_triggered__d"
    quarantine = channels.webhook.payloads[0]
    assert quarantine["run_url"] == "http://airflow.example:8080/dags/ingest/runs/manual__q"
    assert quarantine["report_url"].endswith("/store/quarantine/churn/manual__q/bad.csv.json")

    mails = channels.smtp.messages
    assert len(mails) == 4 and channels.smtp.logins == ["alerts"] * 4
    assert mails[0]["from"] == "airflow@example.com"
    assert mails[0]["to"] == ["ml-oncall@example.com", "data@example.com"]
    assert [m["message"]["Subject"] for m in mails] == [
        "[mlops dev] data quarantined (ingest)",
        "[mlops dev] data drift: retraining requested (monitor)",
        "[mlops dev] model decay: retraining requested (monitor)",
        "[mlops dev] challenger rejected (evaluate_register)",
    ]
    html = _html(mails[3]["message"])
    assert "dev.churn v7 registered but not promoted (champion v6 kept)" in html
    assert 'href="http://airflow.example:8080/dags/evaluate_register/runs/asset_triggered__g"' in html
    for secret in (HOOK_PASSWORD, SMTP_PASSWORD):
        assert all(secret.encode() not in r["body"] for r in requests)
        assert all(secret.encode() not in m["raw"] for m in mails)


def test_kinds_and_environments_decide_who_is_told(dagbag, channels, tmp_path, monkeypatch):
    _alert_settings(tmp_path, monkeypatch, **{**CHANNELS_ON, "kinds": ["decay"]})
    found, sent_hooks, sent_mails = _run_alerts_dag(dagbag, _lifecycle_events())
    assert len(found) == 4  # decided, but only decay is wanted
    assert sent_hooks == sent_mails == 1
    assert [p["kind"] for p in channels.webhook.payloads] == ["decay"]


def test_a_fresh_clone_sends_nothing(dagbag, mlops_home, webhook, smtp, monkeypatch):
    _connections(monkeypatch, webhook, smtp)  # the connections exist, but the shipped settings name none
    found, sent_hooks, sent_mails = _run_alerts_dag(dagbag, _lifecycle_events())
    assert len(found) == 4 and sent_hooks == sent_mails == 0
    assert webhook.requests == [] and smtp.messages == []


def test_event_text_is_never_rendered_as_a_template(dagbag, channels):
    """A file name is untrusted: `{{ conn... }}` in it must reach people as text, never as a connection's secret."""
    hostile = "{{ conn." + HOOK_CONN + ".password }}{{ 7 * 7 }}.csv"
    _run_alerts_dag(dagbag, _lifecycle_events(quarantine_file=hostile))
    quarantine = channels.webhook.payloads[0]
    assert hostile in quarantine["text"] and "49" not in quarantine["text"]
    assert HOOK_PASSWORD not in json.dumps(channels.webhook.payloads)
    html = _html(channels.smtp.messages[0]["message"])
    assert "{{ conn." in html and HOOK_PASSWORD not in html


def test_a_missing_connection_fails_the_task_once_with_what_to_do(dagbag, channels, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.delenv(f"AIRFLOW_CONN_{HOOK_CONN.upper()}")
    dag = dagbag.dags["alerts"]
    found = dag.get_task("decide").python_callable(params={"env": "dev"}, triggering_asset_events=_lifecycle_events())
    with pytest.raises(AirflowFailException) as info:
        dag.get_task("send_webhook").python_callable(found)
    message = str(info.value)
    assert message.startswith("4 of 4 webhook alert(s) not sent: webhook alert (quarantine) not sent through Airflow")
    assert (
        f"connection '{HOOK_CONN}' (alerts.webhook_conn_id): the connection is not defined; create it "
        f"(Admin > Connections, a secrets backend, or AIRFLOW_CONN_{HOOK_CONN.upper()}), or set "
        "alerts.webhook_conn_id to null" in message
    )
    # Email is its own task: a broken webhook does not keep the alerts from the inbox.
    assert dag.get_task("send_email").python_callable(found) == 4


def test_an_unreachable_or_refusing_receiver_is_retried_and_hides_the_urls_token(
    dagbag, channels, monkeypatch, webhook, smtp
):
    from airflow.sdk.exceptions import AirflowFailException

    from mlops_airflow.alerts import AlertNotSent

    token = "T0001/B0002/XoXoSecretToken99"
    dag = dagbag.dags["alerts"]
    found = dag.get_task("decide").python_callable(params={"env": "dev"}, triggering_asset_events=_lifecycle_events())
    webhook.status = 500
    with pytest.raises(AlertNotSent, match=r"not sent .*: AirflowException: 500:Internal Server Error") as info:
        dag.get_task("send_webhook").python_callable(found)
    assert not isinstance(info.value, AirflowFailException)  # retried: the receiver may come back

    closed = free_port()  # nothing listens there
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{HOOK_CONN.upper()}",
        json.dumps({"conn_type": "http", "host": f"http://127.0.0.1:{closed}/services/{token}"}),
    )
    with pytest.raises(AlertNotSent, match="ConnectionError") as info:
        dag.get_task("send_webhook").python_callable(found)
    assert token not in str(info.value) and "***" in str(info.value)


def test_failed_runs_alert_through_the_callback_the_dag_processor_runs(dagbag, channels):
    """Airflow 3 runs DAG-level callbacks in the dag processor: the same function, on the DagBag it parsed."""
    import structlog
    from airflow.callbacks.callback_requests import DagCallbackRequest
    from airflow.dag_processing.processor import _execute_dag_callbacks

    for dag_id in ("deploy", "train"):
        request = DagCallbackRequest(
            filepath=f"{dag_id}.py",
            bundle_name="dags-folder",
            bundle_version=None,
            dag_id=dag_id,
            run_id=f"manual__{dag_id}",
            is_failure_callback=True,
            msg="task_failure",
        )
        _execute_dag_callbacks(dagbag, request, structlog.get_logger())

    deploy, train = channels.webhook.payloads
    assert deploy["kind"] == "deployment_failed" and train["kind"] == "dag_failed"
    assert deploy["run_url"] == "http://airflow.example:8080/dags/deploy/runs/manual__deploy"
    assert deploy["verdict"].startswith("DAG deploy run manual__deploy failed (task_failure)")
    assert deploy["env"] == "dev"  # MLOPS_ENV of the deployment: the minimal context names no run Params
    assert [m["message"]["Subject"] for m in channels.smtp.messages] == [
        "[mlops dev] deployment failed (deploy)",
        "[mlops dev] DAG run failed (train)",
    ]


def test_the_callback_names_the_failed_task_and_links_its_log(channels):
    from mlops_airflow.dag_defaults import on_failed_run

    ti = types.SimpleNamespace(
        task_id="deploy_champion",
        log_url="http://airflow.example:8080/dags/deploy/runs/r1/tasks/deploy_champion?try_number=2",
    )
    on_failed_run({"dag": types.SimpleNamespace(dag_id="deploy"), "run_id": "r1", "params": {"env": "prod"}, "ti": ti})
    [payload] = channels.webhook.payloads
    assert payload["env"] == "prod" and payload["details"] == {"failed_task": "deploy_champion"}
    assert payload["report_url"] == "http://airflow.example:8080/dags/deploy/runs/r1/tasks/deploy_champion"


def test_a_broken_channel_never_breaks_the_callback(channels, monkeypatch, caplog):
    from mlops_airflow.dag_defaults import on_failed_run

    monkeypatch.delenv(f"AIRFLOW_CONN_{SMTP_CONN.upper()}")
    with caplog.at_level(logging.ERROR, logger="mlops_airflow.alerts"):
        on_failed_run({"dag": types.SimpleNamespace(dag_id="train"), "run_id": "r2", "params": {"env": "dev"}})
    assert [p["kind"] for p in channels.webhook.payloads] == ["dag_failed"]  # the other channel still works
    assert channels.smtp.messages == []
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "Run r2 of train failed and the alert about it was not sent: email alert (dag_failed) not sent" in (
        record.getMessage()
    )
    assert f"connection '{SMTP_CONN}' (alerts.smtp_conn_id): the connection is not defined" in record.getMessage()


def test_bad_settings_never_break_the_callback(mlops_home, tmp_path, monkeypatch, caplog):
    from mlops_airflow.dag_defaults import on_failed_run

    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "dev.yaml").write_text("alerts: {kinds: [pager]}\n", encoding="utf-8")
    monkeypatch.setenv("MLOPS_CONF_DIR", str(conf))
    with caplog.at_level(logging.ERROR, logger="mlops_airflow.alerts"):
        on_failed_run({"dag": types.SimpleNamespace(dag_id="train"), "run_id": "r3", "params": {"env": "dev"}})
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage().startswith("Run r3 of train failed and no alert was sent: SettingsError: ")


def test_the_alerts_dag_waits_for_every_alarming_asset(dagbag):
    from mlops_airflow.assets import DEPLOYMENT, EVALUATION, QUARANTINE, RETRAIN_REQUESTED
    from mlops_core.alerts import ALERTING_ASSETS

    condition = dagbag.dags["alerts"].timetable.asset_condition
    assert {a.name for a in condition.objects} == set(ALERTING_ASSETS)
    assert {a.name for a in (QUARANTINE, RETRAIN_REQUESTED, EVALUATION, DEPLOYMENT)} == set(ALERTING_ASSETS)


def _html(message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/html":
            return part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8")
    raise AssertionError("no HTML part")
