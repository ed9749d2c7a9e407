"""Prediction drift: the champion's scores on what it was asked in production, against its training profile.

The reference profile made at training time (:mod:`mlops_core.drift_profile`) holds, besides the
features, the distribution of the model's *scores* on the reference sample
(:func:`mlops_core.evaluation.prediction_scores`: the positive class's probability for a binary
classifier, the prediction for regression). A served answer is not always that number (MLflow's
scoring server answers a classifier's class, not its probability), so the captured *inputs* of
the window are scored again with the champion -- the model that answered them -- and those scores
are binned against the profile exactly like a feature column (:func:`drift_profile.column_drift`:
Wasserstein or PSI with the monitoring thresholds, and the missing-rate change).

Only answered requests of the champion's own version count (2xx, ``model_version`` equal); the
most recent ``max_rows`` of them are scored, so the memory is bounded whatever the traffic.
Fewer than ``min_rows`` such rows, a profile without predictions (a model that cannot give
scores), captures without the model's input columns, or inputs the model refuses: no verdict,
with the reason -- never an exception that would stop the monitor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlops_core.contract import DatasetContract
    from mlops_core.drift_profile import ProfileThresholds, ReferenceProfile

log = logging.getLogger(__name__)


def prediction_drift(
    profile: ReferenceProfile,
    records: Iterable[dict[str, Any]],
    contract: DatasetContract,
    thresholds: ProfileThresholds,
    *,
    champion_version: str,
    load_model: Callable[[], Any],
    min_rows: int,
    max_rows: int,
) -> dict[str, Any]:
    """``{"checked", "drifted", "rows", "method", "score", "threshold", "why"}`` for the champion's scores."""
    import numpy as np
    import pyarrow as pa

    from mlops_core.capture import capture_rows
    from mlops_core.drift_profile import PREDICTION, ProfileCounter, column_drift
    from mlops_core.evaluation import prediction_scores

    out: dict[str, Any] = {
        "checked": False,
        "drifted": False,
        "rows": 0,
        "method": None,
        "score": None,
        "threshold": None,
        "why": None,
    }
    if profile.prediction is None:
        out["why"] = "the champion's drift profile has no profile of its scores"
        return out
    rows = capture_rows(records)
    if len(rows):
        status = rows["status"].astype("string")
        answered = status.str.startswith("2").fillna(False).astype(bool)
        own = rows["model_version"].astype("string") == str(champion_version)
        rows = rows[answered & own.fillna(False).astype(bool)]
    missing = [c for c in contract.feature_columns if c not in rows.columns]
    if len(rows) and missing:
        out["why"] = f"the captures lack the model's input column(s) {missing}"
        return out
    rows = rows.sort_values("captured_at", kind="stable").tail(max_rows)
    out["rows"] = len(rows)
    if len(rows) < min_rows:
        out["why"] = f"{len(rows)} captured answer(s) of version {champion_version}, fewer than {min_rows}"
        return out
    try:
        scores = prediction_scores(load_model(), rows[contract.feature_columns].reset_index(drop=True), contract)
    except (ValueError, TypeError, KeyError) as exc:  # captured inputs the model cannot take
        out["why"] = f"scoring the captured inputs failed: {str(exc)[:300]}"
        return out
    if scores is None:
        out["why"] = "the champion gives no score to compare (a classifier without probabilities?)"
        return out
    counter = ProfileCounter(profile, columns=[PREDICTION])
    counter.add(pa.table({PREDICTION: pa.array(np.asarray(scores, dtype=np.float64))}))
    verdict = column_drift(PREDICTION, profile.prediction, counter.columns[PREDICTION], thresholds)
    out.update(
        checked=True,
        drifted=bool(verdict.drifted),
        method=verdict.method,
        score=None if verdict.score != verdict.score else round(float(verdict.score), 6),  # NaN -> None
        threshold=verdict.threshold,
        why=verdict.why,
    )
    log.info("Prediction drift on %d captured answers: %s", len(rows), verdict.why)
    return out
