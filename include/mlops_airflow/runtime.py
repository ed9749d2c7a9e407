"""Helpers DAG tasks use at run time (never at parse time): settings, triggering events, errors."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Asset, Context

    from mlops_core.settings import Settings


def settings_for(context: Context, env: str | None = None, **overrides: dict[str, Any]) -> Settings:
    """The settings of the run's ``env`` Param (or ``env``), with typed per-run overrides."""
    from mlops_core.settings import load_settings, with_overrides

    settings = load_settings(env or context["params"].get("env"))
    overrides = {k: v for k, v in overrides.items() if v}
    return with_overrides(settings, **overrides) if overrides else settings


@contextmanager
def fail_fast() -> Iterator[None]:
    """Fail the task at once, without retries, on an error a retry cannot fix.

    Errors deriving from :class:`mlops_core.errors.PermanentError` (bad settings or contracts, a
    refused path, a missing version, a missing approval, ...) would fail the same way on every
    retry; retrying only delays the user's answer. Everything else is retried as configured.
    """
    from airflow.sdk.exceptions import AirflowFailException

    from mlops_core.errors import PermanentError

    try:
        yield
    except PermanentError as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


def triggering_extras(context: Context, asset: Asset) -> list[dict[str, Any]]:
    """The ``extra`` of every event of ``asset`` that triggered this run, oldest first."""
    events = context.get("triggering_asset_events") or {}
    try:
        found = events[asset]
    except KeyError:
        return []
    return [dict(e.extra or {}) for e in sorted(found, key=lambda e: e.timestamp)]


def run_key(context: Context, prefix: str, spec: Mapping[str, Any] | None = None) -> str:
    """A stable, file-name-safe key of this DAG run: the same on every retry of every task.

    With ``spec`` (what the output depends on: algorithm, window, ...), eight more hex characters
    change whenever the spec does, so a retry after a settings change builds anew instead of
    re-attaching to an output made with the old settings.
    """
    run_id = context["run_id"]
    digest = hashlib.sha256(f"{context['dag'].dag_id}/{run_id}".encode()).hexdigest()[:10]
    stamp = context.get("logical_date") or context["dag_run"].run_after
    key = f"{prefix}-{stamp:%Y%m%dT%H%M%S}-{digest}"
    if spec is not None:
        key += "-" + hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return key


DATASET_EVENT_KEYS = (
    "dataset",
    "version_id",
    "rows",
    "rejected_rows",
    "duplicate_rows",
    "sources",
    "event_time_min",
    "event_time_max",
)


QUARANTINE_EVENT_KEYS = ("dataset", "run_id", "rejected_rows", "duplicate_rows")


def announce_ingest(context: Context, report: dict[str, Any]) -> dict[str, Any]:
    """Emit what an ingest run produced, through the ``ingest_outcome`` alias, and note the outcome.

    A ``dataset_version`` event when there is a version (also one that already existed: an
    earlier try may have committed it and died before its event was emitted; consumers are
    idempotent per version); a ``quarantine`` event when anything was quarantined (files or
    rows), for consumers that alert or repair. The run's note says what happened, so a run
    whose every file was quarantined is not a silent green run.
    """
    from mlops_airflow.assets import DATASET, INGEST_OUTCOME, QUARANTINE
    from mlops_airflow.run_notes import record_note
    from mlops_core.outcomes import QUARANTINED_STATUSES, ingest_outcome

    note = ingest_outcome(report)
    record_note(context, note)
    events = context["outlet_events"][INGEST_OUTCOME]
    if report.get("version_id"):
        events.add(DATASET, extra={k: report.get(k) for k in DATASET_EVENT_KEYS})
    files = [f for f in report.get("files") or [] if f.get("status") in QUARANTINED_STATUSES]
    if files or report.get("rejected_rows") or report.get("duplicate_rows"):
        extra = {k: report.get(k) for k in QUARANTINE_EVENT_KEYS}
        extra["files_quarantined"] = [
            {k: f.get(k) for k in ("file", "reason_code", "reason", "quarantine") if f.get(k) is not None}
            for f in files
        ]
        extra["note"] = note
        events.add(QUARANTINE, extra=extra)
    return report
