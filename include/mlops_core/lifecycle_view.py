"""What the lifecycle view shows for one environment: champion, last challenger, verdicts, deployment.

Plain data, gathered from the system of record of each fact, whatever the backends:

- MLflow (the registry of every backend): ``@champion`` and the newest registered version with
  their runs' metrics and lineage tags; the newest monitor run of the environment (its verdict,
  drift share, metric drop and the key of its drift report, tagged by the monitor stage);
- the environment's object store: the newest dataset manifest;
- the serving target (``Serving.live()``): what is live, where, and whether it answers now;
- the asset events and pending approvals the caller read from Airflow (passed in as plain
  mappings, so this module never imports Airflow): the last evaluation, retraining request and
  deployment of the environment.

Each part is read on its own: a part that cannot be read (MLflow unreachable, a serving target
that times out) becomes an entry of ``errors`` and the rest is still shown.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlops_core.drift_reports import REPORT_PREFIX, UnknownReport, report_id, report_key

if TYPE_CHECKING:
    from mlops_core.backends import Backends
    from mlops_core.registry import ModelRegistry, ModelVersionInfo
    from mlops_core.settings import Settings

log = logging.getLogger(__name__)

#: Asset names whose events the view reads (``mlops_airflow.assets``).
EVENT_ASSETS = ("model_evaluation", "retrain_requested", "deployment", "champion_model")
MONITOR_RUN_PREFIX = "monitor-"
HOLDOUT = "mlops.holdout_"  # the evaluate stage's tag of a version's score on its held-out rows


def environment_view(
    settings: Settings,
    backends: Backends,
    *,
    events: Sequence[Mapping[str, Any]] = (),
    approvals: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The lifecycle of ``settings.env``'s model as a JSON-ready dict.

    :param events: asset events, newest first, each ``{"asset": name, "timestamp": ISO 8601,
        "extra": {...}, "dag_id": ..., "run_id": ...}``; only those of this environment are used.
    :param approvals: pending approvals, each with ``env``, ``subject``, ``dag_id``, ``run_id``,
        ``task_id``, ``created_at``; only those of this environment are used.
    """
    env = settings.env
    name = settings.registered_model_name
    errors: dict[str, str] = {}

    def part(label: str, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except Exception as exc:  # one unreadable part must not hide the others
            log.warning("Lifecycle view, %s of %s: %s: %s", label, env, type(exc).__name__, exc)
            errors[label] = f"{type(exc).__name__}: {exc}"[:500]
            return None

    registry = backends.registry
    ours = [e for e in events if _event_env(e) == env]
    view: dict[str, Any] = {
        "env": env,
        "model_name": name,
        "dataset": settings.load_contract().name,
        "primary_metric": settings.evaluation.primary_metric,
        "backends": {
            "storage": settings.backends.storage,
            "compute": settings.backends.compute,
            "serving": settings.backends.serving,
            "registry_mirror": settings.backends.registry_mirror,
        },
        "requires_approval": settings.promotion.require_approval,
    }
    view["champion"] = part("champion", lambda: _champion(registry, name))
    view["challenger"] = part("challenger", lambda: _challenger(registry, name))
    view["evaluation"] = _last(ours, "model_evaluation", _evaluation)
    view["monitor"] = part("monitor", lambda: _monitor(registry, env))
    view["retrain_request"] = _last(ours, "retrain_requested", _retrain_request)
    view["dataset"] = part("dataset", lambda: _dataset(backends, view["dataset"]))
    view["deployment"] = part("deployment", lambda: _live(backends))
    view["last_deployment"] = _last(ours, "deployment", lambda e: _deployment_event(e, env))
    view["approvals"] = [dict(a) for a in approvals if a.get("env") == env]
    view["errors"] = errors
    return view


# ----------------------------------------------------------------------------- MLflow
def _version(info: ModelVersionInfo, champion_version: str | None) -> dict[str, Any]:
    tags = info.tags
    return {
        "version": info.version,
        "run_id": info.run_id,
        "is_champion": info.version == champion_version,
        "metrics": {k: _number(v) for k, v in sorted(info.metrics.items())},
        "holdout": {
            k.removeprefix("mlops.holdout_"): _number(v)
            for k, v in sorted(tags.items())
            if k.startswith("mlops.holdout_")
        },
        "dataset_versions": [v for v in tags.get("mlops.dataset_versions", "").split(",") if v],
        "decision": tags.get("mlops.promotion_decision"),
        "approved_by": tags.get("mlops.approved_by"),
        "promoted_from": tags.get("mlops.promoted_from"),
    }


def _champion(registry: ModelRegistry, name: str) -> dict[str, Any] | None:
    champion = registry.champion(name)
    if champion is None:
        return None
    return _version(registry.version_info(name, champion.version), champion.version)


def _challenger(registry: ModelRegistry, name: str) -> dict[str, Any] | None:
    """The newest registered version (it may have become the champion since)."""
    versions = registry.versions(name)
    if not versions:
        return None
    newest = versions[-1]
    champion = next((v.version for v in versions if "champion" in v.aliases), None)
    return _version(registry.version_info(name, newest.version), champion)


def _monitor(registry: ModelRegistry, env: str) -> dict[str, Any] | None:
    """The newest monitor run of ``env``: its verdict and the id of its drift report."""
    run = registry.last_run(MONITOR_RUN_PREFIX, {"mlops.env": env})
    if run is None:
        return None
    tags = dict(run.data.tags)
    metrics = dict(run.data.metrics)
    key = tags.get("mlops.report_key")
    if key is None:  # runs logged before the monitor tagged its report: the run name holds the run key
        try:
            key = report_key(str(run.info.run_name).removeprefix(MONITOR_RUN_PREFIX))
        except UnknownReport:
            key = None
    try:
        rid = report_id(env, key) if key and key.startswith(REPORT_PREFIX) else None
    except UnknownReport:
        rid = None
    drop = next((v for k, v in metrics.items() if k.endswith("_drop")), None)
    return {
        "at": _iso_ms(run.info.start_time),
        "run_id": run.info.run_id,
        "verdict": tags.get("mlops.verdict") or ("drift" if tags.get("mlops.drifted") == "True" else None),
        "drifted": tags.get("mlops.drifted") == "True",
        "decayed": tags.get("mlops.decayed") == "True" if "mlops.decayed" in tags else None,
        "drift_share": _number(metrics.get("drift_share")),
        "metric_drop": _number(drop),
        "summary": tags.get("mlops.summary"),
        "champion_version": tags.get("mlops.champion_version"),
        "dataset_versions": [v for v in tags.get("mlops.dataset_versions", "").split(",") if v],
        "report_id": rid,
    }


# ----------------------------------------------------------------------------- store and serving
def _dataset(backends: Backends, dataset: str) -> dict[str, Any] | None:
    from mlops_core.datasets import DatasetStore

    manifest = DatasetStore(backends.store, dataset).latest_version()
    if manifest is None:
        return None
    return {
        "version_id": manifest.get("version_id"),
        "rows": manifest.get("row_count"),
        "created_at": manifest.get("created_at"),
        "event_time_min": manifest.get("event_time_min"),
        "event_time_max": manifest.get("event_time_max"),
    }


def _live(backends: Backends) -> dict[str, Any] | None:
    live = backends.serving.live()
    return None if live is None else live.to_dict()


# ----------------------------------------------------------------------------- asset events
def _event_env(event: Mapping[str, Any]) -> str | None:
    extra = event.get("extra") or {}
    if not isinstance(extra, Mapping):
        return None
    if isinstance(extra.get("env"), str):
        return str(extra["env"])
    listed = extra.get("deployments")  # the deploy DAG's event: one entry per environment deployed
    if isinstance(listed, list):
        envs = {d.get("env") for d in listed if isinstance(d, Mapping)}
        return envs.pop() if len(envs) == 1 else None
    return None


def _last(
    events: Sequence[Mapping[str, Any]], asset: str, shape: Callable[[Mapping[str, Any]], dict[str, Any] | None]
) -> dict[str, Any] | None:
    for event in events:
        if event.get("asset") == asset:
            shaped = shape(event)
            if shaped is not None:
                return {
                    **shaped,
                    "at": event.get("timestamp"),
                    "dag_id": event.get("dag_id"),
                    "run_id": event.get("run_id"),
                }
    return None


def _evaluation(event: Mapping[str, Any]) -> dict[str, Any]:
    extra = event.get("extra") or {}
    return {
        "version": extra.get("version"),
        "promote": extra.get("promote"),
        "reasons": [str(r) for r in extra.get("reasons") or []],
        "challenger_metrics": _numbers(extra.get("challenger_metrics")),
        "champion_metrics": _numbers(extra.get("champion_metrics")),
        "champion_version": extra.get("champion_version"),
    }


def _retrain_request(event: Mapping[str, Any]) -> dict[str, Any]:
    extra = event.get("extra") or {}
    return {
        "reason": extra.get("reason"),
        "summary": extra.get("summary"),
        "drift_share": _number(extra.get("drift_share")),
        "metric_drop": _number(extra.get("metric_drop")),
        "report": extra.get("report"),
    }


def _deployment_event(event: Mapping[str, Any], env: str) -> dict[str, Any] | None:
    extra = event.get("extra") or {}
    listed = extra.get("deployments")
    for d in listed if isinstance(listed, list) else [extra]:
        if isinstance(d, Mapping) and d.get("env") == env:
            return {
                "version": d.get("version"),
                "url": d.get("url"),
                "rolled_back": d.get("rolled_back"),
                "previous_version": d.get("previous_version"),
            }
    return None


# ----------------------------------------------------------------------------- values
def _number(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return round(f, 6) if math.isfinite(f) else None


def _numbers(values: Any) -> dict[str, float | None]:
    return {str(k): _number(v) for k, v in sorted(values.items())} if isinstance(values, Mapping) else {}


def _iso_ms(ms: Any) -> str | None:
    try:
        return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).isoformat(timespec="seconds")
    except (TypeError, ValueError, OverflowError):
        return None
