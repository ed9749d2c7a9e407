"""Stage 6: compare recent data with the champion's training reference; request retraining.

Three reasons to retrain, checked in this order: there is no champion yet (``no_champion``);
the feature distributions drifted (``drift``, Evidently); or the champion's quality on the
newly labelled rows fell by more than ``monitoring.max_metric_drop`` (``decay``: catches concept
drift that leaves the inputs unchanged). The Evidently HTML report is kept in object storage and
logged to MLflow.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlops_core.backends import Backends
    from mlops_core.settings import Settings

log = logging.getLogger(__name__)


def check_for_retraining(
    settings: Settings, version_ids: list[str], backends: Backends, *, run_key: str, force: bool = False
) -> dict[str, Any]:
    """The verdict on ``version_ids``: read from ``backends.store``, the drift report kept there too."""
    import io

    import pandas as pd

    from mlops_core.datasets import DatasetStore
    from mlops_core.drift import DriftThresholds, detect_drift
    from mlops_core.evaluation import score_model

    contract = settings.load_contract()
    objects = backends.store
    registry = backends.registry
    name = settings.registered_model_name
    base = {
        "env": settings.env,
        "version_ids": list(version_ids),
        "drift_share": None,
        "metric_drop": None,
        "report": None,
        "drifted_columns": [],
    }
    champion = registry.champion(name)
    if champion is None:
        log.info("No @champion for %s yet: requesting the first training", name)
        return {**base, "retrain": True, "reason": "no_champion", "summary": f"{name} has no champion yet"}

    current = DatasetStore(objects, contract.name).read_versions(list(version_ids))
    reference_key = champion.tags.get("mlops.drift_reference")
    if not reference_key:
        raise ValueError(
            f"{name} version {champion.version} has no 'mlops.drift_reference' tag (it was not registered by "
            "evaluate_register); retrain with the train DAG or trigger monitor with force_retrain"
        )
    reference = pd.read_parquet(io.BytesIO(objects.get_bytes(reference_key)))
    m = settings.monitoring
    result, html = detect_drift(
        reference,
        current,
        contract,
        DriftThresholds(drift_share=m.drift_share_threshold, column_p_value=m.column_p_value, min_rows=m.min_rows),
    )
    report_key = f"reports/drift/{run_key}.html"
    objects.put_bytes(report_key, html.encode("utf-8"))
    log.info("Drift: %s (report: %s)", result.reason, objects.uri(report_key))

    primary = settings.evaluation.primary_metric
    metric_drop = None
    baseline = _as_float(champion.tags.get(f"mlops.holdout_{primary}"))
    now = None
    if baseline is not None and len(current) >= m.min_rows:
        # load_model verifies the champion's files against the digest recorded when it was logged
        # (ModelIntegrityError stops the run: a changed artifact is never scored).
        now = _as_float(score_model(registry.load_model(name, champion.version), current, contract).get(primary))
    if baseline is not None and now is not None:
        sign = 1.0 if settings.evaluation.greater_is_better else -1.0
        metric_drop = round(sign * (baseline - now), 6)
        log.info("Champion %s on new rows: %.4f (at evaluation: %.4f, drop %.4f)", primary, now, baseline, metric_drop)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "drift_report.html"
        path.write_text(html, encoding="utf-8")
        metrics = {"drift_share": result.share_drifted}
        if metric_drop is not None:
            metrics[f"{primary}_drop"] = metric_drop
        registry.log_artifact_run(
            f"monitor-{run_key}",
            {"drift_report.html": path},
            metrics,
            {
                "mlops.env": settings.env,
                "mlops.dataset_versions": ",".join(version_ids),
                "mlops.champion_version": str(champion.version),
                "mlops.drifted": str(result.drifted),
            },
        )

    decayed = metric_drop is not None and metric_drop > m.max_metric_drop
    # Live decay on delayed labels, serving health and staleness (mlops_core.decay): reported, and decay retrains.
    live = _live(settings, backends, champion, baseline)
    decayed = decayed or live["decay"]["decayed"]
    if force:
        reason = "forced"
    elif result.drifted:
        reason = "drift"
    elif decayed:
        reason = "decay"
    else:
        reason = None
    summary = result.reason + (
        f"; {primary} dropped by {metric_drop:.4f} (limit {m.max_metric_drop})" if metric_drop is not None else ""
    )
    summary += f"; live {primary} on delayed labels: {live['decay']['why']}"  # mlops_core.decay
    return {
        **base,
        "retrain": reason is not None,
        "reason": reason or "none",
        "summary": summary,
        "drift_share": result.share_drifted,
        "drifted_columns": result.drifted_columns,
        "metric_drop": metric_drop,
        "report": objects.uri(report_key),
        "live": live,
    }


def _live(settings: Settings, backends: Backends, champion: Any, baseline: float | None) -> dict[str, Any]:
    """:func:`mlops_core.decay.live_checks` for the champion (its files verified when it must be rescored)."""
    from mlops_core.decay import live_checks

    name, version = settings.registered_model_name, champion.version
    return live_checks(
        settings,
        backends.store,
        champion_version=str(version),
        baseline=baseline,
        load_model=lambda: backends.registry.load_model(name, version),
    )


def _as_float(value: Any) -> float | None:
    """A finite float, or None (missing tag, metric not computable on these rows)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if f == f and f not in (float("inf"), float("-inf")) else None
