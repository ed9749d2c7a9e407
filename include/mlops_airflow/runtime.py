"""Helpers DAG tasks use at run time (never at parse time): settings and triggering events."""

from __future__ import annotations

import hashlib
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


def triggering_extras(context: Context, asset: Asset) -> list[dict[str, Any]]:
    """The ``extra`` of every event of ``asset`` that triggered this run, oldest first."""
    events = context.get("triggering_asset_events") or {}
    try:
        found = events[asset]
    except KeyError:
        return []
    return [dict(e.extra or {}) for e in sorted(found, key=lambda e: e.timestamp)]


def run_key(context: Context, prefix: str) -> str:
    """A stable, file-name-safe key of this DAG run: the same on every retry of every task."""
    run_id = context["run_id"]
    digest = hashlib.sha256(f"{context['dag'].dag_id}/{run_id}".encode()).hexdigest()[:10]
    stamp = context.get("logical_date") or context["dag_run"].run_after
    return f"{prefix}-{stamp:%Y%m%dT%H%M%S}-{digest}"


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


def announce_dataset_version(context: Context, report: dict[str, Any]) -> dict[str, Any]:
    """Emit the ``dataset_version`` event for an ingestion report, or skip the task.

    A run that produced no version is skipped (no event). A version that already existed is
    still announced: an earlier try may have committed it and died before its event was
    emitted; consumers are idempotent per version.
    """
    from airflow.sdk.exceptions import AirflowSkipException

    from mlops_airflow.assets import DATASET

    if report["version_id"] is None:
        raise AirflowSkipException(f"no new dataset version: {report['reason']}")
    context["outlet_events"][DATASET].extra = {k: report[k] for k in DATASET_EVENT_KEYS}
    return report
