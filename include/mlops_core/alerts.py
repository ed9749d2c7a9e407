"""Which outcomes alert, and what the alert says: plain Python, no Airflow.

An alert is one of six kinds (``mlops_core.settings.ALERT_KINDS``), decided from an asset
event's ``extra`` (:func:`alerts_from_event`) or from a failed DAG run
(:func:`alert_for_failed_run`):

==================== ======================================================================
kind                 when
==================== ======================================================================
drift                a ``retrain_requested`` event with reason ``drift``
decay                a ``retrain_requested`` event with reason ``decay``
quarantine           a ``quarantine`` event (files or rows quarantined by an ingest run)
rejected_challenger  a ``model_evaluation`` event with ``promote: false`` (the gate said no)
deployment_failed    a ``deployment`` event with ``rolled_back: true``, or a failed ``deploy`` run
dag_failed           any other failed DAG run
==================== ======================================================================

Every alert carries the verdict (one line a person can act on), the report link (the drift
report, the quarantine records, the MLflow run, the failed task's log) and the link to the
Airflow run that produced the outcome. Event contents are treated as untrusted text: they are
shortened, stripped of control characters and, in HTML, escaped; links keep no user name,
password, query string or fragment (where SAS tokens and presigned signatures live).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# The asset names (mlops_airflow.assets) whose events can alert; a test keeps the two in step.
QUARANTINE_ASSET = "quarantine"
RETRAIN_ASSET = "retrain_requested"
EVALUATION_ASSET = "model_evaluation"
DEPLOYMENT_ASSET = "deployment"
ALERTING_ASSETS = (QUARANTINE_ASSET, RETRAIN_ASSET, EVALUATION_ASSET, DEPLOYMENT_ASSET)

KIND_TITLES = {
    "drift": "data drift: retraining requested",
    "decay": "model decay: retraining requested",
    "quarantine": "data quarantined",
    "rejected_challenger": "challenger rejected",
    "deployment_failed": "deployment failed",
    "dag_failed": "DAG run failed",
}
MAX_TEXT = 500  # characters of one untrusted value
MAX_ITEMS = 10  # list entries shown (files, columns); the rest are counted
LINK_SCHEMES = ("http", "https", "s3", "file", "abfs", "abfss", "wasbs", "gs")


@dataclass(frozen=True)
class Alert:
    """One notification: what happened (kind, verdict), where to look (report, run), and the facts."""

    kind: str
    env: str | None
    verdict: str
    report_url: str | None = None
    run_url: str | None = None
    dag_id: str | None = None
    run_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def subject(self) -> str:
        """``[mlops dev] data drift: retraining requested (monitor)``."""
        where = f" ({self.dag_id})" if self.dag_id else ""
        return _one_line(f"[mlops {self.env or '?'}] {KIND_TITLES.get(self.kind, self.kind)}{where}", 200)

    def text(self) -> str:
        """The alert as plain text (the webhook's ``text``, chat tools show it as it is)."""
        lines = [self.subject, f"Verdict: {self.verdict}"]
        lines.append(f"Report: {self.report_url or 'none'}")
        lines.append(f"Run: {self.run_url or 'none'}")
        lines += [f"{key}: {_shown(value)}" for key, value in self.details.items()]
        return "\n".join(lines)

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON body: the fields for machines, ``text`` for chat tools."""
        return {
            "text": self.text(),
            "kind": self.kind,
            "env": self.env,
            "title": self.subject,
            "verdict": self.verdict,
            "report_url": self.report_url,
            "run_url": self.run_url,
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "details": json.loads(json.dumps(dict(self.details), default=str)),
        }

    def html(self) -> str:
        """The alert as an HTML email body; every value is escaped."""

        def link(url: str | None) -> str:
            return f'<a href="{html.escape(url, quote=True)}">{html.escape(url)}</a>' if url else "none"

        rows = "".join(
            f"<tr><td>{html.escape(str(key))}</td><td>{html.escape(_shown(value))}</td></tr>"
            for key, value in self.details.items()
        )
        return (
            f"<h3>{html.escape(self.subject)}</h3>"
            f"<p><b>Verdict:</b> {html.escape(self.verdict)}</p>"
            f"<p><b>Report:</b> {link(self.report_url)}<br><b>Run:</b> {link(self.run_url)}</p>"
            + (f"<table>{rows}</table>" if rows else "")
        )


def alerts_from_event(
    asset: str,
    extra: Mapping[str, Any],
    *,
    env: str | None = None,
    dag_id: str | None = None,
    run_id: str | None = None,
    run_url: str | None = None,
    store_root: str | None = None,
    mlflow_ui: str | None = None,
) -> list[Alert]:
    """The alerts one asset event calls for (none for a healthy outcome).

    ``env`` is used when the event does not name its environment (quarantine events do not);
    ``dag_id``/``run_id``/``run_url`` name the run that emitted the event; ``store_root`` turns a
    store key in the event into a location; ``mlflow_ui`` links an MLflow run.
    """
    extra = extra if isinstance(extra, Mapping) else {}
    source = {"dag_id": _opt(dag_id, 250), "run_id": _opt(run_id, 250), "run_url": safe_link(run_url)}
    env = _opt(extra.get("env"), 20) or env
    if asset == RETRAIN_ASSET:
        reason = str(extra.get("reason") or "")
        if reason not in ("drift", "decay"):
            return []
        details = _pick(extra, ("version_ids", "drift_share", "metric_drop", "drifted_columns"))
        verdict = _one_line(extra.get("summary") or f"retraining requested ({reason})")
        report = safe_link(_first_text(extra, ("report", "report_uri", "report_url")))
        return [Alert(reason, env, verdict, report, details=details, **source)]
    if asset == QUARANTINE_ASSET:
        return [_quarantine_alert(extra, env, store_root, source)]
    if asset == EVALUATION_ASSET:
        if extra.get("promote") is not False:
            return []
        name, version = _opt(extra.get("model_name"), 100), _opt(extra.get("version"), 40)
        reasons = " ".join(_one_line(r) for r in _items(extra.get("reasons")))
        champion = _opt(extra.get("champion_version"), 40)
        verdict = f"{name} v{version} registered but not promoted (champion v{champion} kept)"
        if reasons:
            verdict += f": {reasons}"
        details = _pick(extra, ("model_name", "version", "champion_version", "challenger_metrics", "champion_metrics"))
        report = _mlflow_run_link(mlflow_ui, extra.get("mlflow_run_id"))
        return [Alert("rejected_challenger", env, _one_line(verdict, 1000), report, details=details, **source)]
    if asset == DEPLOYMENT_ASSET:
        listed = extra.get("deployments")
        deployments = listed if isinstance(listed, list) else [extra]
        found = []
        for d in deployments:
            if not isinstance(d, Mapping) or d.get("rolled_back") is not True:
                continue
            where = _opt(d.get("env"), 20) or env
            verdict = (
                f"{_opt(d.get('model_name'), 100)} v{_opt(d.get('version'), 40)} was rolled back in {where}"
                f"{' to v' + str(_opt(d.get('previous_version'), 40)) if d.get('previous_version') else ''}"
            )
            details = _pick(d, ("model_name", "version", "previous_version", "target", "reason"))
            found.append(Alert("deployment_failed", where, verdict, safe_link(d.get("url")), details=details, **source))
        return found
    return []


def alert_for_failed_run(
    dag_id: str,
    run_id: str,
    *,
    env: str | None,
    reason: str | None = None,
    task_id: str | None = None,
    run_url: str | None = None,
    log_url: str | None = None,
) -> Alert:
    """A failed DAG run: ``deployment_failed`` for ``deploy`` (it rolled back, or had nothing to roll back to),
    ``dag_failed`` for every other DAG. The report link is the failed task's log."""
    kind = "deployment_failed" if dag_id == "deploy" else "dag_failed"
    what = f"DAG {_one_line(dag_id, 250)} run {_one_line(run_id, 250)} failed"
    if task_id:
        what += f" at task {_one_line(task_id, 250)}"
    if reason:
        what += f" ({_one_line(reason, 200)})"
    if kind == "deployment_failed":
        what += "; the previous champion is served again where there was one (see the task log)"
    details = {"failed_task": _one_line(task_id, 250)} if task_id else {}
    return Alert(kind, env, what, safe_link(log_url), safe_link(run_url), _one_line(dag_id, 250), run_id, details)


def wanted(alert: Alert, kinds: Sequence[str]) -> bool:
    """Whether the settings turn this kind on (``alerts.kinds``)."""
    return alert.kind in kinds


def safe_link(url: Any) -> str | None:
    """A link fit for a message: a known scheme, no user name or password, no query or fragment; else None."""
    if not isinstance(url, str) or not url or len(url) > 2000 or not url.isprintable() or " " in url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in LINK_SCHEMES:
        return None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def store_location(store_root: str | None, key: Any) -> str | None:
    """``key`` of the object store rooted at ``store_root`` (a folder or ``s3://...``) as a link; None if unsafe."""
    if not store_root or not isinstance(key, str) or not key:
        return None
    path = PurePosixPath(key)
    if path.is_absolute() or ".." in path.parts or not key.isprintable():
        return None
    if "://" in store_root:
        return safe_link(f"{store_root.rstrip('/')}/{path}")
    root = PurePosixPath(store_root)
    return (root / path).as_uri() if root.is_absolute() else None


def _quarantine_alert(
    extra: Mapping[str, Any], env: str | None, store_root: str | None, source: Mapping[str, Any]
) -> Alert:
    files = [f for f in _items(extra.get("files_quarantined")) if isinstance(f, Mapping)]
    rows = _int(extra.get("rejected_rows"))
    parts = []
    if files:
        reasons = sorted({_one_line(f.get("reason_code") or "rejected", 60) for f in files})
        parts.append(f"{len(files)} file(s) quarantined ({', '.join(reasons[:MAX_ITEMS])})")
    if rows:
        parts.append(f"{rows:,} row(s) quarantined")
    duplicates = _int(extra.get("duplicate_rows"))
    if duplicates:
        parts.append(f"{duplicates:,} duplicate row(s) ignored")
    verdict = _one_line(extra.get("note")) if extra.get("note") else ("; ".join(parts) or "data quarantined")
    records = [str(f["quarantine"]) for f in files if isinstance(f.get("quarantine"), str)]
    details: dict[str, Any] = {"dataset": _one_line(extra.get("dataset"), 100)} if extra.get("dataset") else {}
    if files:
        shown = [f"{_one_line(f.get('file'), 200)}: {_one_line(f.get('reason'), 300)}" for f in files[:MAX_ITEMS]]
        more = len(files) - len(shown)
        details["files"] = shown + ([f"... and {more} more"] if more else [])
    if rows:
        details["rejected_rows"] = rows
    if records:
        details["quarantine_records"] = [_one_line(r, 300) for r in records[:MAX_ITEMS]]
    # The report: the first quarantine record (its folder holds the others of the run).
    report = next((loc for loc in (store_location(store_root, r) for r in records) if loc), None)
    return Alert("quarantine", env, verdict, report, details=details, **source)


def _mlflow_run_link(mlflow_ui: str | None, run_id: Any) -> str | None:
    if not mlflow_ui or not isinstance(run_id, str) or not run_id.isalnum():
        return None
    base = safe_link(mlflow_ui.rstrip("/"))
    return f"{base}/#/runs/{run_id}" if base else None


def _pick(extra: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {k: _bounded(extra[k]) for k in keys if extra.get(k) not in (None, "", [], {})}


def _bounded(value: Any, depth: int = 0) -> Any:
    """A JSON-able copy of ``value`` with texts shortened and lists cut to ``MAX_ITEMS``."""
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, Mapping) and depth < 2:
        return {_one_line(k, 100): _bounded(v, depth + 1) for k, v in list(value.items())[:30]}
    if isinstance(value, list | tuple) and depth < 2:
        items = [_bounded(v, depth + 1) for v in value[:MAX_ITEMS]]
        return items + ([f"... and {len(value) - MAX_ITEMS} more"] if len(value) > MAX_ITEMS else [])
    return _one_line(value)


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(_shown(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_shown(v)}" for k, v in value.items())
    return str(value)


def _items(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _int(value: Any) -> int:
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        return 0


def _first_text(extra: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    return next((extra[k] for k in keys if isinstance(extra.get(k), str) and extra[k]), None)


def _opt(value: Any, limit: int = MAX_TEXT) -> str | None:
    return None if value in (None, "") else _one_line(value, limit)


def _one_line(value: Any, limit: int = MAX_TEXT) -> str:
    """``value`` as one printable line of at most ``limit`` characters."""
    text = " ".join("".join(c if c.isprintable() else " " for c in str(value)).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
