"""What the monitor learns from serving itself: live decay on delayed labels, serving health, staleness.

**Decay** (:func:`live_decay`): the captured predictions of the champion (``mlops_core.capture``)
joined to the delayed labels (``mlops_core.labels``) give (prediction, label) pairs; the
champion's primary metric (``evaluation.primary_metric``) on them is compared with the metric the
champion had on its holdout when it was registered (its ``mlops.holdout_<metric>`` tag). Decay
fires when the metric fell by more than ``monitoring.max_metric_drop`` (in the metric's
direction), and only on at least ``monitoring.min_labelled_pairs`` pairs: a handful of labels
never fires it.

The metric is computed from the answers the clients got when it can be (class labels give
``accuracy``/``f1``, a binary classifier answering probabilities also ``roc_auc``/``log_loss``,
a regressor ``rmse``/``mae``/``r2``). A metric that needs probabilities the served answers do not
hold (``roc_auc`` of a model answering class labels) is computed by scoring the captured inputs
of the pairs with the champion (its files verified, as everywhere): same rows, same labels.

Pairs are the champion's: predictions answered by another model version are counted
(``other_versions``) and left out; a capture without a version (SageMaker's) counts as the
champion's.

**Serving health**: :func:`mlops_core.capture.serving_health_verdict` over the captures of the
last ``monitoring.health_window_hours``. It is reported, never a reason to retrain (a new model
does not fix a slow or failing server).

**Staleness** (:func:`staleness`): the age of the newest committed dataset version and of the
newest captured request against ``monitoring.max_staleness_hours``, so a scheduled monitor run
with no new data says that nothing is arriving.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

    import numpy as np
    import pandas as pd

    from mlops_core.contract import DatasetContract
    from mlops_core.settings import Settings
    from mlops_core.storage import ObjectStore

log = logging.getLogger(__name__)

SCORE_METRICS = ("roc_auc", "log_loss")  # classification metrics that need probabilities


def _utc(instant: datetime) -> datetime:
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


# ----------------------------------------------------------------------------- metrics on pairs
def _classes(contract: DatasetContract) -> list[Any]:
    spec = contract.column(contract.target)
    if spec.allowed:
        return sorted(spec.allowed, key=str)
    if spec.type == "bool":
        return [False, True]
    return []


def _served(pairs: pd.DataFrame, contract: DatasetContract) -> tuple[Any, Any, np.ndarray]:
    """``(y_pred, y_score, usable)`` from the served answers: predictions in the target's type (or
    the positive-class probability of a binary classifier); ``usable`` marks rows that have one."""
    import numpy as np
    import pandas as pd

    from mlops_core.training.model import prepare_target

    raw = pairs["prediction"]
    scalar = raw.map(lambda v: v is None or isinstance(v, (str, int, float, bool, np.number, np.bool_)))
    numbers = pd.to_numeric(raw.where(scalar), errors="coerce")
    finite = numbers.notna() & np.isfinite(numbers.astype("float64"))
    spec = contract.column(contract.target)
    if contract.task == "regression":
        return numbers.to_numpy(dtype="float64"), None, finite.to_numpy()
    classes = _classes(contract)
    numeric_classes = spec.type in ("int", "float")
    if numeric_classes and finite.all() and len(classes) == 2:
        values = numbers.astype("float64")
        if ((values > 0) & (values < 1)).any() and ((values >= 0) & (values <= 1)).all():  # probabilities
            y_pred = np.where(values.to_numpy() >= 0.5, classes[1], classes[0])
            return y_pred, values.to_numpy(), np.ones(len(values), dtype=bool)
    if numeric_classes:
        usable = finite & (numbers == numbers.round())
        filled = numbers.where(usable, 0)
        return prepare_target(filled, contract), None, usable.to_numpy()
    texts = raw.where(scalar).map(lambda v: None if v is None else str(v))
    if spec.type == "bool":
        tokens = {"true": True, "1": True, "false": False, "0": False}
        lowered = [None if t is None else t.strip().lower() for t in texts]
        known = np.array([t in tokens for t in lowered], dtype=bool)
        return np.array([tokens.get(t or "", False) for t in lowered], dtype=bool), None, known
    return np.array([str(t) for t in texts], dtype=object), None, texts.notna().to_numpy()


def pair_metrics(
    pairs: pd.DataFrame,
    contract: DatasetContract,
    primary: str,
    *,
    load_model: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """The metrics of ``pairs`` (joined rows with ``prediction`` and ``label``): ``metrics``,
    ``source`` (``served`` or ``rescored``), ``pairs`` used and ``unusable`` predictions."""
    import pandas as pd

    from mlops_core.evaluation import score_model
    from mlops_core.training.model import compute_metrics, prepare_target

    out: dict[str, Any] = {"metrics": {}, "source": None, "pairs": 0, "unusable": 0, "why": None}
    if not len(pairs):
        out["why"] = "no labelled pairs"
        return out
    y_pred, y_score, usable = _served(pairs, contract)
    out["unusable"] = int((~usable).sum())
    kept = pairs[usable]
    out["pairs"] = len(kept)
    if not len(kept):
        out["why"] = "no served answer could be read as a prediction"
        return out
    y_true = prepare_target(pd.Series(kept["label"].to_numpy()), contract)
    classes = _classes(contract) or None
    metrics = compute_metrics(
        contract.task,
        y_true,
        y_pred[usable],
        None if y_score is None else y_score[usable],
        classes=classes if contract.task == "classification" else None,
    )
    out.update(metrics=metrics, source="served")
    if primary in metrics or load_model is None:
        if primary not in metrics:
            out["why"] = f"{primary} cannot be computed from the served answers"
        return out
    missing = [c for c in contract.feature_columns if c not in kept.columns]
    if missing:
        out["why"] = f"{primary} needs the model's scores and the captures lack input column(s) {missing}"
        return out
    frame = kept[contract.feature_columns].copy()
    frame[contract.target] = kept["label"].to_numpy()
    try:
        rescored = score_model(load_model(), frame.reset_index(drop=True), contract)
    except (ValueError, TypeError, KeyError) as exc:  # captured inputs the model cannot take
        out["why"] = f"rescoring the captured inputs failed: {str(exc)[:300]}"
        return out
    out.update(metrics=rescored, source="rescored")
    if primary not in rescored:
        out["why"] = f"{primary} is undefined on these pairs (one class only?)"
    return out


def judge_decay(
    live: float | None,
    baseline: float | None,
    *,
    greater_is_better: bool,
    max_drop: float,
    pairs: int,
    min_pairs: int,
) -> tuple[bool, float | None, str]:
    """``(decayed, drop, why)``: ``drop`` is how much worse ``live`` is than ``baseline`` (positive: worse)."""
    if baseline is None:
        return False, None, "the champion has no holdout metric to compare with"
    if live is None:
        return False, None, "no live metric"
    drop = round((1.0 if greater_is_better else -1.0) * (baseline - live), 6)
    if pairs < min_pairs:
        return False, drop, f"{pairs} labelled pair(s), fewer than the {min_pairs} a verdict needs"
    if drop > max_drop:
        return True, drop, f"live metric {live:.4f} is {drop:.4f} worse than {baseline:.4f} (limit {max_drop})"
    return False, drop, f"live metric {live:.4f} within {max_drop} of {baseline:.4f} (drop {drop:.4f})"


# ----------------------------------------------------------------------------- the monitor's checks
def live_decay(
    settings: Settings,
    store: ObjectStore,
    records: list[dict[str, Any]],
    *,
    champion_version: str,
    baseline: float | None,
    now: datetime,
    load_model: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Decay of the champion on the delayed labels of the last ``decay_window_days``; ``records`` are
    the capture records from ``decay_window_days + label_join_days`` before ``now`` (see the module doc)."""
    from mlops_core.capture import capture_rows
    from mlops_core.labels import join_labels, labels_prefix, read_labels

    m = settings.monitoring
    contract = settings.load_contract()
    primary = settings.evaluation.primary_metric
    now = _utc(now)
    verdict: dict[str, Any] = {
        "metric": primary,
        "baseline": baseline,
        "live": None,
        "drop": None,
        "pairs": 0,
        "min_pairs": m.min_labelled_pairs,
        "decayed": False,
        "source": None,
        "why": None,
    }
    if not contract.entity_key or not contract.event_time:
        verdict["why"] = "the contract has no entity_key or event_time: delayed labels cannot be joined"
        return verdict
    read = read_labels(
        store,
        contract,
        labels_prefix(m.labels_prefix, contract.name),
        now - timedelta(days=m.decay_window_days),
        now,
        max_file_bytes=settings.dataset.max_file_mb * 1024 * 1024,
    )
    joined = join_labels(capture_rows(records), read.labels, join_days=m.label_join_days)
    pairs = joined.pairs
    versions = pairs["model_version"] if len(pairs) else None
    mine = versions.isna() | (versions.astype(str) == str(champion_version)) if versions is not None else None
    other = 0 if mine is None else int((~mine).sum())
    if mine is not None:
        pairs = pairs[mine]
    scored = pair_metrics(pairs, contract, primary, load_model=load_model)
    live = scored["metrics"].get(primary)
    live = float(live) if live is not None and math.isfinite(live) else None
    decayed, drop, why = judge_decay(
        live,
        baseline,
        greater_is_better=settings.evaluation.greater_is_better,
        max_drop=m.max_metric_drop,
        pairs=scored["pairs"],
        min_pairs=m.min_labelled_pairs,
    )
    verdict.update(
        live=None if live is None else round(live, 6),
        drop=drop,
        pairs=scored["pairs"],
        decayed=decayed,
        source=scored["source"],
        why=scored["why"] if live is None and scored["why"] else why,
        unusable_predictions=scored["unusable"],
        other_versions=other,
        labels=read.summary(),
        join=joined.summary(),
    )
    log.info("Live decay of version %s: %s", champion_version, verdict["why"])
    return verdict


def staleness(settings: Settings, store: ObjectStore, now: datetime) -> dict[str, Any]:
    """How old the newest dataset version and the newest captured request are, against ``max_staleness_hours``."""
    from mlops_core.capture import read_captures
    from mlops_core.datasets import DatasetStore

    now = _utc(now)
    bound = settings.monitoring.max_staleness_hours
    out: dict[str, Any] = {"max_hours": bound, "stale": False, "reasons": []}
    latest = DatasetStore(store, settings.load_contract().name).latest_version()
    newest = None
    if latest is not None:
        try:
            newest = _utc(datetime.fromisoformat(str(latest["created_at"]).replace("Z", "+00:00")))
        except ValueError:
            newest = None
    age = None if newest is None else round((now - newest).total_seconds() / 3600, 3)
    out["dataset"] = {"newest": None if newest is None else newest.isoformat(), "age_hours": age}
    if age is None or age > bound:
        out["reasons"].append(
            "no dataset version yet" if latest is None else f"newest dataset version is {age} h old (limit {bound} h)"
        )
    if settings.capture.enabled:
        recent = read_captures(
            store,
            settings.training.model_name,
            settings.env,
            now - timedelta(hours=bound),
            now + timedelta(seconds=1),
            entity_key=settings.contract.entity_key,
        )
        last = str(recent[-1]["captured_at"]) if recent else None
        last_at = _utc(datetime.fromisoformat(last.replace("Z", "+00:00"))) if last else None
        out["captures"] = {
            "newest": last,
            "age_hours": None if last_at is None else round((now - last_at).total_seconds() / 3600, 3),
        }
        if last is None:
            out["reasons"].append(f"no request captured in the last {bound} h")
    out["stale"] = bool(out["reasons"])
    return out


def live_checks(
    settings: Settings,
    store: ObjectStore,
    *,
    champion_version: str,
    baseline: float | None,
    now: datetime | None = None,
    load_model: Callable[[], Any] | None = None,
    profile: Any = None,
    thresholds: Any = None,
) -> dict[str, Any]:
    """Everything the monitor reports from serving: ``decay`` (:func:`live_decay`), ``serving_health``,
    ``prediction_drift`` (the champion's scores on the window's captured inputs against ``profile``,
    :mod:`mlops_core.prediction_drift`; skipped without a profile) and ``staleness``. One read of the
    captures serves them all."""
    from mlops_core.capture import environment_captures, serving_health_verdict

    m = settings.monitoring
    now = _utc(now or datetime.now(UTC))
    health_start = now - timedelta(hours=m.health_window_hours)
    start = min(now - timedelta(days=m.decay_window_days + m.label_join_days), health_start)
    records = environment_captures(settings, store, start, now)
    decay = live_decay(
        settings, store, records, champion_version=champion_version, baseline=baseline, now=now, load_model=load_model
    )
    recent = [r for r in records if str(r.get("captured_at", "")) >= health_start.isoformat(timespec="microseconds")]
    health = serving_health_verdict(recent, settings.serving_health)
    predictions: dict[str, Any] = {"checked": False, "drifted": False, "why": "no reference profile given"}
    if profile is not None and thresholds is not None and load_model is not None:
        from mlops_core.prediction_drift import prediction_drift

        predictions = prediction_drift(
            profile,
            recent,
            settings.load_contract(),
            thresholds,
            champion_version=champion_version,
            load_model=load_model,
            min_rows=m.min_rows,
            max_rows=m.report_sample_rows,
        )
    return {
        "decay": decay,
        "serving_health": {
            "healthy": health.healthy,
            "reasons": health.reasons,
            "window_hours": m.health_window_hours,
            **health.health.to_dict(),
        },
        "prediction_drift": predictions,
        "staleness": staleness(settings, store, now),
    }
