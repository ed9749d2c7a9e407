"""Stage 6: compare recent data with the champion's training reference; request retraining.

Three reasons to retrain, checked in this order: there is no champion yet (``no_champion``);
the feature distributions drifted (``drift``: the new rows streamed against the champion's
reference profile, :func:`mlops_core.drift.detect_drift_streaming`); or the champion's quality on the
newly labelled rows fell by more than ``monitoring.max_metric_drop`` (``decay``: catches concept
drift that leaves the inputs unchanged). The human-readable report (Evidently on a bounded sample,
``monitoring.report_sample_rows``) is kept in object storage and logged to MLflow. The same
evidence asks once (:func:`claim_retrain_request`): a later run on it says ``already_requested``.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from mlops_core.backends import Backends
    from mlops_core.drift import DriftResult
    from mlops_core.drift_profile import ProfileThresholds, ReferenceProfile
    from mlops_core.registry import ModelVersionInfo
    from mlops_core.settings import Settings
    from mlops_core.storage import ObjectStore

log = logging.getLogger(__name__)

#: The monitor run's tag that names its report in the environment's store (``mlops_core.drift_reports``).
REPORT_KEY_TAG = "mlops.report_key"
MAX_SUMMARY_TAG = 4000  # MLflow keeps tag values up to 8000 characters


def check_for_retraining(
    settings: Settings, version_ids: list[str], backends: Backends, *, run_key: str, force: bool = False
) -> dict[str, Any]:
    """The verdict on ``version_ids``: read from ``backends.store``, the drift report kept there too."""
    import io

    import pandas as pd

    from mlops_core.datasets import DatasetStore
    from mlops_core.drift import DriftThresholds, detect_drift, detect_drift_streaming
    from mlops_core.drift_reports import report_key as drift_report_key
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
        "report_key": None,
        "drifted_columns": [],
    }
    champion = registry.champion(name)
    if champion is None:
        log.info("No @champion for %s yet: requesting the first training", name)
        return {**base, "retrain": True, "reason": "no_champion", "summary": f"{name} has no champion yet"}

    reference_key = champion.tags.get("mlops.drift_reference")
    if not reference_key:
        raise ValueError(
            f"{name} version {champion.version} has no 'mlops.drift_reference' tag (it was not registered by "
            "evaluate_register); retrain with the train DAG or trigger monitor with force_retrain"
        )
    reference = pd.read_parquet(io.BytesIO(objects.get_bytes(reference_key)))
    m = settings.monitoring
    profile = _champion_profile(settings, champion, reference, objects)
    store = DatasetStore(objects, contract.name)
    features = [c for c in contract.feature_columns if c in profile.columns]
    result, sample = detect_drift_streaming(
        profile,
        store.iter_batches(list(version_ids), columns=features, batch_rows=m.drift_batch_rows),
        contract,
        profile_thresholds(settings),
        sample_rows=m.report_sample_rows,
    )
    # The human-readable report: Evidently on the reference sample and a bounded sample of the new rows.
    _, evidently_html = detect_drift(
        reference,
        sample if sample is not None else pd.DataFrame({c: pd.Series(dtype=object) for c in features}),
        contract,
        DriftThresholds(drift_share=m.drift_share_threshold, column_p_value=m.column_p_value, min_rows=m.min_rows),
    )
    html = _with_decision(evidently_html, result, 0 if sample is None else len(sample))
    report_key = drift_report_key(run_key)
    objects.put_bytes(report_key, html.encode("utf-8"))
    log.info("Drift: %s (report: %s)", result.reason, objects.uri(report_key))

    primary = settings.evaluation.primary_metric
    metric_drop = None
    baseline = _as_float(champion.tags.get(f"mlops.holdout_{primary}"))
    now = None
    if baseline is not None and result.current_rows >= m.min_rows:
        current = store.read_versions(list(version_ids))
        # load_model verifies the champion's files against the digest recorded when it was logged
        # (ModelIntegrityError stops the run: a changed artifact is never scored).
        now = _as_float(score_model(registry.load_model(name, champion.version), current, contract).get(primary))
    if baseline is not None and now is not None:
        sign = 1.0 if settings.evaluation.greater_is_better else -1.0
        metric_drop = round(sign * (baseline - now), 6)
        log.info("Champion %s on new rows: %.4f (at evaluation: %.4f, drop %.4f)", primary, now, baseline, metric_drop)

    decayed = metric_drop is not None and metric_drop > m.max_metric_drop
    # Live decay on delayed labels, serving health and staleness (mlops_core.decay): reported, and decay retrains.
    live = _live(settings, backends, champion, baseline, profile)
    decayed = decayed or live["decay"]["decayed"]
    predictions_drifted = bool(live["prediction_drift"]["drifted"])
    if force:
        reason = "forced"
    elif result.drifted or predictions_drifted:
        reason = "drift"
    elif decayed:
        reason = "decay"
    else:
        reason = None
    summary = result.reason + (
        f"; {primary} dropped by {metric_drop:.4f} (limit {m.max_metric_drop})" if metric_drop is not None else ""
    )
    summary += f"; live {primary} on delayed labels: {live['decay']['why']}"  # mlops_core.decay
    if live["prediction_drift"]["checked"]:
        summary += f"; predictions: {live['prediction_drift']['why']}"
    if reason in ("drift", "decay"):
        earlier = claim_retrain_request(objects, name, str(champion.version), reason, version_ids, run_key=run_key)
        if earlier is not None:
            log.info("Retraining was already requested on this evidence by %s: not again", earlier["run_key"])
            summary += (
                f"; retraining ({reason}) was already requested for v{champion.version} on this evidence by "
                f"{earlier['run_key']} at {earlier['at']}: not again (force_retrain to insist)"
            )
            reason = "already_requested"
    requested = reason not in (None, "already_requested")
    # The MLflow run keeps the verdict with the report: the lifecycle view reads the last one per environment.
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
                "mlops.predictions_drifted": str(predictions_drifted),
                "mlops.decayed": str(decayed),
                "mlops.verdict": reason or "none",
                "mlops.summary": summary[:MAX_SUMMARY_TAG],
                REPORT_KEY_TAG: report_key,
            },
        )
    return {
        **base,
        "retrain": requested,
        "reason": reason or "none",
        "summary": summary,
        "drift_share": result.share_drifted,
        "drifted_columns": result.drifted_columns,
        "metric_drop": metric_drop,
        "report": objects.uri(report_key),  # where it is stored (the Airflow task adds the UI's link, report_url)
        "report_key": report_key,
        "live": live,
    }


def claim_retrain_request(
    objects: ObjectStore,
    model: str,
    champion_version: str,
    reason: str,
    version_ids: list[str],
    *,
    run_key: str,
    today: date | None = None,
) -> dict[str, Any] | None:
    """Record that ``run_key`` requests retraining of ``model`` on this evidence, or return the
    earlier request of *another* run on the same evidence (then nothing is requested again).

    The evidence of a ``drift`` request is the champion version and the dataset versions checked;
    of a ``decay`` request, the champion version and the day (the labels are a moving window). So a
    scheduled monitor that keeps finding the same drifted version, while a retrained challenger was
    rejected, asks once, not on every tick. The same run asking again (a retried task whose event
    was never emitted) is answered with ``None``: its request stands.
    """
    import hashlib
    import json
    from datetime import UTC, datetime

    from mlops_core.storage import ObjectNotFound

    day = (today or datetime.now(UTC).date()).isoformat()
    evidence = ",".join(sorted(version_ids)) if reason == "drift" else day
    digest = hashlib.sha256(f"{reason}\n{evidence}".encode()).hexdigest()[:32]
    key = f"monitor/retrain_requests/{model}/v{champion_version}/{digest}.json"
    try:
        earlier = json.loads(objects.get_bytes(key))
    except ObjectNotFound:
        earlier = None
    if earlier is not None and earlier.get("run_key") != run_key:
        return dict(earlier)
    record = {"run_key": run_key, "at": datetime.now(UTC).isoformat(timespec="seconds"), "reason": reason}
    objects.put_bytes(key, json.dumps({**record, "evidence": evidence}, sort_keys=True).encode())
    return None


def profile_thresholds(settings: Settings) -> ProfileThresholds:
    """The drift decision's thresholds from ``settings.monitoring``."""
    from mlops_core.drift_profile import ProfileThresholds

    m = settings.monitoring
    return ProfileThresholds(
        drift_share=m.drift_share_threshold,
        numeric_method=m.numeric_drift_method,
        wasserstein=m.wasserstein_threshold,
        psi=m.psi_threshold,
        jensenshannon=m.jensenshannon_threshold,
        missing_rate_change=m.missing_rate_change,
        min_rows=m.min_rows,
    )


def _champion_profile(
    settings: Settings, champion: ModelVersionInfo, reference: pd.DataFrame, objects: ObjectStore
) -> ReferenceProfile:
    """The champion's reference profile (validated); versions trained before profiles existed get
    one made from their reference sample."""
    from mlops_core.drift_profile import ReferenceProfile, contract_profile

    key = champion.tags.get("mlops.drift_profile")
    if key:
        return ReferenceProfile.from_json(objects.get_bytes(key), source=objects.uri(key))
    log.info(
        "%s version %s has no drift profile (trained before profiles): profiling its reference sample",
        settings.registered_model_name,
        champion.version,
    )
    return contract_profile(reference, settings.load_contract(), settings.monitoring)


def _with_decision(page: str, result: DriftResult, sample_rows: int) -> str:
    """Evidently's page with the decision on top: it was made on every row, the page on a sample."""
    import html

    note = (
        '<div style="font-family:sans-serif;padding:8px;border:1px solid #888;margin:8px">'
        f"<b>Drift decision</b> (every one of the {result.current_rows} new rows against the reference "
        f"profile): {html.escape(result.reason)}<br>The report below is Evidently's, on a uniform sample "
        f"of {sample_rows} of those rows and the {result.reference_rows}-row reference's sample; its "
        "per-column verdicts may differ where a statistic is near its threshold.</div>"
    )
    at = page.find("<body")
    if at < 0:
        return note + page
    end = page.find(">", at)
    return page[: end + 1] + note + page[end + 1 :]


def _live(
    settings: Settings, backends: Backends, champion: Any, baseline: float | None, profile: ReferenceProfile
) -> dict[str, Any]:
    """:func:`mlops_core.decay.live_checks` for the champion (its files verified when it must be rescored)."""
    from mlops_core.decay import live_checks

    name, version = settings.registered_model_name, champion.version
    return live_checks(
        settings,
        backends.store,
        champion_version=str(version),
        baseline=baseline,
        load_model=lambda: backends.registry.load_model(name, version),
        profile=profile,
        thresholds=profile_thresholds(settings),
    )


def _as_float(value: Any) -> float | None:
    """A finite float, or None (missing tag, metric not computable on these rows)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if f == f and f not in (float("inf"), float("-inf")) else None
