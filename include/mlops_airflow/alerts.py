"""Send alerts through Airflow's notifiers: a webhook and email, each on an Airflow connection.

The webhook is the HTTP provider's ``HttpNotifier`` on the connection ``alerts.webhook_conn_id``
(its URL, auth and headers live there), posting the alert as JSON (``text`` for chat tools, and
every field for machines); email is the SMTP provider's ``SmtpNotifier`` on
``alerts.smtp_conn_id``. What an alert says is decided in :mod:`mlops_core.alerts`.

Two callers: the ``alerts`` DAG (outcomes that arrive as asset events) and
:func:`notify_failed_run`, the DAG-level ``on_failure_callback`` of every lifecycle DAG, which
Airflow 3 runs in the dag processor (the notifiers' synchronous ``notify`` is what runs there;
connections are read through the dag processor like in a task).

The notifiers are called with ``notify`` directly, not through ``__call__``: ``__call__`` renders
the template fields with Jinja first, and an alert's text comes from event contents (file names,
reasons) that must never be rendered as a template (``{{ conn.x.password }}`` in a file name
would put a secret into the message). The path and query of a webhook connection's URL are
masked in every log line: chat webhooks carry their token there.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:
    from mlops_core.alerts import Alert
    from mlops_core.settings import AlertSettings

log = logging.getLogger(__name__)

CHANNELS = ("webhook", "email")


class AlertNotSent(Exception):
    """An alert could not be sent on a channel; the message says which, through which connection, and why."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent  # a retry cannot help (a connection that is not defined)


def run_link(dag_id: str, run_id: str) -> str:
    """The run's page in the Airflow UI, on the API server's ``[api] base_url``."""
    from airflow.sdk.configuration import conf

    base = conf.get("api", "base_url", fallback="http://localhost:8080/") or "http://localhost:8080/"
    return f"{base.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def configured_channels(alerts: AlertSettings) -> list[str]:
    """The channels an environment's ``alerts:`` settings turn on (none by default)."""
    found = []
    if alerts.webhook_conn_id:
        found.append("webhook")
    if alerts.smtp_conn_id and alerts.email_to:
        found.append("email")
    return found


def send_alert(alert: Alert, alerts: AlertSettings, channel: str, context: Mapping[str, Any]) -> None:
    """Send ``alert`` on ``channel`` (``webhook`` or ``email``); raises :class:`AlertNotSent`."""
    conn_id = alerts.webhook_conn_id if channel == "webhook" else alerts.smtp_conn_id
    setting = "alerts.webhook_conn_id" if channel == "webhook" else "alerts.smtp_conn_id"
    if not conn_id:
        raise AlertNotSent(f"{channel} alert not sent: {setting} is not set", permanent=True)
    where = f"{channel} alert ({alert.kind}) not sent through Airflow connection {conn_id!r} ({setting})"
    conn = _connection(conn_id, where, setting)
    secrets = _url_secrets(conn) + ([conn.password] if conn.password else [])
    try:
        if channel == "webhook":
            _webhook(alert, alerts, conn_id).notify(dict(context))
        else:
            _email(alert, alerts, conn_id).notify(dict(context))
    except Exception as exc:
        raise AlertNotSent(f"{where}: {type(exc).__name__}: {_said(exc, secrets)}") from None
    log.info("%s alert (%s) sent through connection %r", channel, alert.kind, conn_id)


def send_everywhere(alert: Alert, alerts: AlertSettings, context: Mapping[str, Any]) -> list[AlertNotSent]:
    """Send ``alert`` on every configured channel; the errors of the channels that failed."""
    errors = []
    for channel in configured_channels(alerts):
        try:
            send_alert(alert, alerts, channel, context)
        except AlertNotSent as exc:
            errors.append(exc)
    return errors


def notify_failed_run(context: Mapping[str, Any]) -> None:
    """The DAG-level ``on_failure_callback`` of every lifecycle DAG: a ``dag_failed`` (or, for ``deploy``,
    ``deployment_failed``) alert on the channels of the run's environment.

    Never raises: a bad setting or connection is logged as a clear error (in the dag processor's
    log, where Airflow runs DAG callbacks) and the failed run stays what it was.
    """
    dag_id = getattr(context.get("dag"), "dag_id", None) or str(context.get("dag_id") or "?")
    run_id = str(context.get("run_id") or "?")
    try:
        from mlops_core.alerts import alert_for_failed_run, wanted
        from mlops_core.environments import ENVIRONMENTS, current_env
        from mlops_core.settings import load_settings

        params = context.get("params") or {}
        env = params.get("env") if isinstance(params, Mapping) else None
        env = env if env in ENVIRONMENTS else current_env()
        settings = load_settings(env)
        ti = context.get("ti")
        alert = alert_for_failed_run(
            dag_id,
            run_id,
            env=env,
            reason=str(context.get("reason") or "") or None,
            task_id=getattr(ti, "task_id", None),
            run_url=run_link(dag_id, run_id),
            log_url=_log_url(ti),
        )
        if not wanted(alert, settings.alerts.kinds) or not configured_channels(settings.alerts):
            log.info("Run %s of %s failed; no alert (alerts.kinds / channels of %s)", run_id, dag_id, env)
            return
        for error in send_everywhere(alert, settings.alerts, context):
            log.error("Run %s of %s failed and the alert about it was not sent: %s", run_id, dag_id, error)
    except Exception as exc:
        log.error("Run %s of %s failed and no alert was sent: %s: %s", run_id, dag_id, type(exc).__name__, _said(exc))


def _connection(conn_id: str, where: str, setting: str) -> Any:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise AlertNotSent(
            f"{where}: the connection is not defined; create it (Admin > Connections, a secrets backend, or "
            f"AIRFLOW_CONN_{conn_id.upper()}), or set {setting} to null",
            permanent=True,
        ) from None


def _url_secrets(conn: Any) -> list[str]:
    """The path and query of the connection's URL (a chat webhook's token is there), masked in every log line."""
    from airflow.sdk.log import mask_secret

    host = conn.host or ""
    if "://" not in host:
        return []
    parts = urlsplit(host)
    found = [s for s in (parts.path.strip("/"), parts.query) if len(s) >= 8]
    for secret in found:
        mask_secret(secret)
    return found


def _webhook(alert: Alert, alerts: AlertSettings, conn_id: str) -> Any:
    from airflow.providers.http.notifications.http import HttpNotifier

    return HttpNotifier(
        http_conn_id=conn_id,
        endpoint=alerts.webhook_endpoint or None,
        method="POST",
        json=alert.payload(),
        headers={"Content-Type": "application/json"},
        extra_options={"timeout": alerts.timeout_seconds, "allow_redirects": False},
    )


def _email(alert: Alert, alerts: AlertSettings, conn_id: str) -> Any:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    return SmtpNotifier(
        to=list(alerts.email_to),
        from_email=alerts.email_from,  # None: the connection's from_email
        subject=alert.subject,
        html_content=alert.html(),
        smtp_conn_id=conn_id,
    )


def _log_url(ti: Any) -> str | None:
    try:
        return str(ti.log_url) if ti is not None else None
    except Exception:  # a minimal context (the task was removed since the run) has no log URL
        return None


def _said(exc: BaseException, secrets: list[str] | None = None) -> str:
    """What an error says, on one line and short (a response body is not echoed whole), secrets replaced."""
    text = " ".join(str(exc).split())
    for secret in secrets or ():
        text = text.replace(secret, "***")
    return text if len(text) <= 300 else text[:297] + "..."


def alerts_from_triggering_events(context: Mapping[str, Any], default_env: str) -> list[Alert]:
    """The alerts the run's triggering events call for, oldest first, each with its producing run's link.

    An event that names no valid environment (quarantine events name none) belongs to ``default_env``.
    """
    import os
    from dataclasses import replace

    from mlops_airflow.assets import DEPLOYMENT, EVALUATION, QUARANTINE, RETRAIN_REQUESTED
    from mlops_core.alerts import alerts_from_event
    from mlops_core.environments import ENVIRONMENTS
    from mlops_core.settings import load_settings

    events = context.get("triggering_asset_events") or {}
    roots: dict[str, str] = {}
    found: list[Alert] = []
    for asset in (QUARANTINE, RETRAIN_REQUESTED, EVALUATION, DEPLOYMENT):
        try:
            received = events[asset]
        except KeyError:
            continue
        for event in sorted(received, key=lambda e: e.timestamp):
            extra = dict(event.extra or {})
            env = str(extra["env"]) if extra.get("env") in ENVIRONMENTS else default_env
            if env not in roots:
                roots[env] = load_settings(env).storage_root
            dag_id, run_id = getattr(event, "source_dag_id", None), getattr(event, "source_run_id", None)
            for alert in alerts_from_event(
                asset.name,
                extra,
                env=env,
                dag_id=dag_id,
                run_id=run_id,
                run_url=run_link(dag_id, run_id) if dag_id and run_id else None,
                store_root=roots[env],
                mlflow_ui=os.environ.get("MLFLOW_UI_URL"),
            ):
                found.append(alert if alert.env in ENVIRONMENTS else replace(alert, env=default_env))
    return found


def send_on_channel(alerts: list[Alert], channel: str) -> int:
    """Send each alert on ``channel`` where its environment turns the channel and the kind on; how many were sent.

    Every alert is tried; then one error lists what was not sent. It fails the task without retries
    when only a retry-proof cause failed (a connection that is not defined).
    """
    from airflow.sdk.exceptions import AirflowFailException

    from mlops_core.alerts import wanted
    from mlops_core.settings import load_settings

    sent, errors = 0, []
    for alert in alerts:
        settings = load_settings(alert.env).alerts
        if not wanted(alert, settings.kinds) or channel not in configured_channels(settings):
            continue
        try:
            send_alert(alert, settings, channel, {})
            sent += 1
        except AlertNotSent as exc:
            log.error("%s", exc)
            errors.append(exc)
    if errors:
        message = f"{len(errors)} of {len(errors) + sent} {channel} alert(s) not sent: " + "; ".join(map(str, errors))
        if all(e.permanent for e in errors):
            raise AirflowFailException(message)
        raise AlertNotSent(message)
    return sent
