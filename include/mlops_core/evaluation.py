"""The promotion gate: score models on held-out rows and decide whether a challenger replaces the champion.

Pure Python over dicts and DataFrames (no MLflow, no Airflow): the registry code scores the
challenger and the current champion on the same holdout with ``score_model``, asks
``decide_promotion`` and only then moves the MLflow alias.

Rules of the gate (``decide_promotion``):

1. Every metric the policy needs (the primary metric and every thresholded metric) must be present
   in the challenger's metrics and be a finite number; otherwise the challenger is rejected.
2. Every absolute threshold must hold: ``value >= threshold`` for metrics where larger is better,
   ``value <= threshold`` otherwise (directions: ``settings.METRIC_DIRECTIONS``).
3. Without a champion, a challenger that passes 1 and 2 is promoted.
4. With a champion, the challenger is promoted only if it is not worse on the primary metric and
   improves on it by at least ``min_improvement``. With ``min_improvement == 0`` a tie promotes
   (the challenger is trained on fresher data and is as good on the same holdout); a challenger
   worse by any amount, however small, is never promoted. If the champion has no finite value for
   the primary metric it cannot be compared, and a challenger passing 1 and 2 is promoted (the
   reasons say so).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np
import pandas as pd

from mlops_core.contract import EVENT_TIME_COLUMN, ROW_KEY_COLUMN
from mlops_core.settings import METRIC_DIRECTIONS

if TYPE_CHECKING:
    from mlops_core.contract import DatasetContract

log = logging.getLogger(__name__)

#: Share of rows (the most recent by event time) held out when the calendar-day split leaves a side empty.
FALLBACK_HOLDOUT_FRACTION = 0.2

# A rounding allowance when comparing an improvement with ``min_improvement``
# (0.83 - 0.82 is 0.00999... in floating point). It never lets a worse challenger through.
_IMPROVEMENT_TOLERANCE = 1e-12


@dataclass(frozen=True)
class PromotionPolicy:
    """What a challenger must achieve to be promoted.

    ``thresholds`` maps metric names (keys of ``settings.METRIC_DIRECTIONS``) to absolute bounds;
    ``min_improvement`` is the margin, in units of the primary metric, by which the challenger must
    beat the champion.
    """

    primary_metric: str
    greater_is_better: bool
    thresholds: dict[str, float]
    min_improvement: float = 0.0

    def __post_init__(self) -> None:
        known = METRIC_DIRECTIONS.get(self.primary_metric)
        if known is not None and known != self.greater_is_better:
            raise ValueError(
                f"primary metric {self.primary_metric!r} is {'greater' if known else 'lower'}-is-better, "
                f"but the policy says greater_is_better={self.greater_is_better}; fix the policy"
            )
        unknown = sorted(set(self.thresholds) - set(METRIC_DIRECTIONS))
        if unknown:
            raise ValueError(f"threshold(s) on unknown metric(s) {unknown}; known metrics: {sorted(METRIC_DIRECTIONS)}")
        for name, value in self.thresholds.items():
            if not _is_finite_number(value):
                raise ValueError(f"threshold for {name!r} must be a finite number, got {value!r}")
        if not _is_finite_number(self.min_improvement) or self.min_improvement < 0:
            raise ValueError(f"min_improvement must be a finite number >= 0, got {self.min_improvement!r}")

    @classmethod
    def from_settings(cls, evaluation: Any) -> PromotionPolicy:
        """Build the policy from ``settings.EvaluationSettings`` (or anything with the same fields)."""
        return cls(
            primary_metric=evaluation.primary_metric,
            greater_is_better=METRIC_DIRECTIONS[evaluation.primary_metric],
            thresholds={k: float(v) for k, v in dict(evaluation.thresholds).items()},
            min_improvement=float(evaluation.min_improvement),
        )


@dataclass(frozen=True)
class PromotionDecision:
    """The gate's answer, with one human-readable sentence per check in ``reasons``."""

    promote: bool
    reasons: list[str]
    challenger: dict[str, float]
    champion: dict[str, float] | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (non-finite metric values become ``None``), e.g. for XCom or a run tag."""
        return {
            "promote": self.promote,
            "reasons": list(self.reasons),
            "challenger": _json_safe_metrics(self.challenger),
            "champion": None if self.champion is None else _json_safe_metrics(self.champion),
        }


def _is_finite_number(value: Any) -> TypeGuard[float | int | np.integer | np.floating]:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    return math.isfinite(float(value))


def _json_safe_metrics(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    return {k: (float(v) if _is_finite_number(v) else None) for k, v in metrics.items()}


def _fmt(value: float | np.integer | np.floating) -> str:
    number = float(value)
    if number == 0 or 1e-3 <= abs(number) < 1e6:
        return f"{number:.4f}"
    return f"{number:.4g}"


def _passes(value: float, threshold: float, greater_is_better: bool) -> bool:
    return value >= threshold if greater_is_better else value <= threshold


def decide_promotion(
    challenger_metrics: Mapping[str, Any],
    champion_metrics: Mapping[str, Any] | None,
    policy: PromotionPolicy,
) -> PromotionDecision:
    """Decide whether the challenger replaces the champion (rules in the module docstring).

    Both metric dicts use bare metric names (``roc_auc``, not ``test_roc_auc``) computed on the
    same held-out rows. Every check adds a sentence with the numbers to ``reasons``.
    """
    challenger = dict(challenger_metrics)
    champion = None if champion_metrics is None else dict(champion_metrics)
    reasons: list[str] = []
    ok = True

    needed = [policy.primary_metric] + [m for m in policy.thresholds if m != policy.primary_metric]
    for name in needed:
        if name not in challenger:
            ok = False
            reasons.append(
                f"The challenger has no {name} (its metrics: {sorted(challenger) or 'none'}); the gate needs it, "
                f"so the challenger is rejected. Check that the holdout can measure {name} "
                f"(e.g. roc_auc needs both classes in the holdout)."
            )
        elif not _is_finite_number(challenger[name]):
            ok = False
            reasons.append(
                f"The challenger's {name} is {challenger[name]!r}, not a finite number, so the challenger is rejected."
            )

    for name, threshold in policy.thresholds.items():
        value = challenger.get(name)
        if not _is_finite_number(value):
            continue  # already reported above
        greater = METRIC_DIRECTIONS[name]
        op = ">=" if greater else "<="
        if _passes(float(value), float(threshold), greater):
            reasons.append(f"{name} = {_fmt(value)} meets the threshold {op} {_fmt(threshold)}.")
        else:
            ok = False
            reasons.append(
                f"{name} = {_fmt(value)} fails the threshold {op} {_fmt(threshold)}, so the challenger is rejected."
            )

    if not ok:
        return PromotionDecision(False, reasons, challenger, champion)

    primary = policy.primary_metric
    value = float(challenger[primary])
    direction = "higher is better" if policy.greater_is_better else "lower is better"
    if champion is None:
        reasons.append(
            f"There is no champion yet; the challenger ({primary} = {_fmt(value)}) passes every threshold "
            "and is promoted."
        )
        return PromotionDecision(True, reasons, challenger, champion)

    champion_value = champion.get(primary)
    if not _is_finite_number(champion_value):
        reasons.append(
            f"The champion has no finite {primary} ({champion_value!r}) so it cannot be compared; the challenger "
            f"({primary} = {_fmt(value)}) passes every threshold and is promoted."
        )
        return PromotionDecision(True, reasons, challenger, champion)

    champion_value = float(champion_value)
    improvement = value - champion_value if policy.greater_is_better else champion_value - value
    if improvement < 0:
        reasons.append(
            f"The challenger's {primary} = {_fmt(value)} is worse than the champion's {_fmt(champion_value)} "
            f"({direction}), so the champion stays."
        )
        return PromotionDecision(False, reasons, challenger, champion)
    if improvement < policy.min_improvement - _IMPROVEMENT_TOLERANCE:
        reasons.append(
            f"The challenger's {primary} = {_fmt(value)} improves on the champion's {_fmt(champion_value)} by "
            f"{_fmt(improvement)} ({direction}), less than the required {_fmt(policy.min_improvement)}, "
            "so the champion stays."
        )
        return PromotionDecision(False, reasons, challenger, champion)
    reasons.append(
        f"The challenger's {primary} = {_fmt(value)} improves on the champion's {_fmt(champion_value)} by "
        f"{_fmt(improvement)} ({direction}; required at least {_fmt(policy.min_improvement)}), so it is promoted."
    )
    return PromotionDecision(True, reasons, challenger, champion)


def score_model(model: Any, df: pd.DataFrame, contract: DatasetContract) -> dict[str, float]:
    """Metrics of ``model`` on the labelled rows ``df`` (bare names: ``roc_auc``, ``rmse``, ...).

    ``model`` is anything with ``predict`` (a fitted pipeline, an MLflow pyfunc model); for
    classification ``predict_proba`` is used when the model has it, or when an MLflow pyfunc
    wrapper's ``get_raw_model()`` returns an estimator that has it. Without probabilities
    ``roc_auc`` and ``log_loss`` are left out, and a gate on them rejects. ``contract`` is the
    contract the model was trained with (saved in its ``model_meta.json``): it picks and casts
    the feature columns.
    """
    from mlops_core.training.model import compute_metrics, prepare_features, prepare_target

    if len(df) == 0:
        raise ValueError("no rows to score the model on; the holdout is empty (see split_holdout)")
    if contract.target not in df.columns:
        raise ValueError(f"the scoring rows have no target column {contract.target!r}; score labelled rows only")
    X = prepare_features(df, contract)
    y_true = prepare_target(df[contract.target], contract)
    y_pred = _as_1d(model.predict(X))
    y_score = None
    classes = None
    if contract.task == "classification":
        scorer = _probability_model(model)
        if scorer is None:
            log.warning("%s has no predict_proba: roc_auc and log_loss are left out", type(model).__name__)
        else:
            y_score = np.asarray(scorer.predict_proba(X))
            classes = list(getattr(scorer, "classes_", [])) or None
    return compute_metrics(contract.task, y_true, y_pred, y_score, classes=classes)


def prediction_scores(model: Any, df: pd.DataFrame, contract: DatasetContract) -> np.ndarray | None:
    """One number per row whose drift is worth watching: the positive class's probability for a
    binary classifier with ``predict_proba``, the prediction for regression; None otherwise."""
    from mlops_core.training.model import prepare_features

    if len(df) == 0:
        return None
    X = prepare_features(df, contract)
    if contract.task == "classification":
        scorer = _probability_model(model)
        if scorer is None:
            return None
        proba = np.asarray(scorer.predict_proba(X))
        return proba[:, 1].astype(np.float64) if proba.ndim == 2 and proba.shape[1] == 2 else None
    predictions = _as_1d(model.predict(X))
    return predictions.astype(np.float64) if np.issubdtype(predictions.dtype, np.number) else None


def _probability_model(model: Any) -> Any | None:
    """``model`` if it has ``predict_proba``, else the raw estimator of an MLflow pyfunc wrapper if that has it."""
    if hasattr(model, "predict_proba"):
        return model
    get_raw = getattr(model, "get_raw_model", None)
    if callable(get_raw):
        try:
            raw = get_raw()
        except NotImplementedError:  # pyfunc flavors without a raw model
            return None
        if hasattr(raw, "predict_proba"):
            return raw
    return None


def _as_1d(predictions: Any) -> np.ndarray:
    if isinstance(predictions, pd.DataFrame):
        if predictions.shape[1] != 1:
            raise ValueError(f"model.predict returned {predictions.shape[1]} columns; expected one prediction per row")
        predictions = predictions.iloc[:, 0]
    array = np.asarray(predictions)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"model.predict returned shape {array.shape}; expected one prediction per row")
    return array


def split_holdout(df: pd.DataFrame, holdout_days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``df`` into ``(train, holdout)`` by ``_event_time`` (UTC).

    The holdout is every row whose event falls on the last ``holdout_days`` calendar days (UTC)
    that end on the day of the newest event. If that leaves either side empty (all events on a
    few days), the newest ``FALLBACK_HOLDOUT_FRACTION`` of rows by time is held out instead, ties
    broken by ``_row_key`` (or by row position when there is none). Deterministic; rows keep their
    index; no row is lost or in both parts.
    """
    if isinstance(holdout_days, bool) or not isinstance(holdout_days, (int, np.integer)) or holdout_days < 1:
        raise ValueError(f"holdout_days must be an integer >= 1, got {holdout_days!r}")
    if EVENT_TIME_COLUMN not in df.columns:
        raise ValueError(f"cannot split by time: the rows have no {EVENT_TIME_COLUMN!r} column")
    if len(df) < 2:
        raise ValueError(f"cannot split {len(df)} row(s) into a training part and a holdout; need at least 2")
    times = pd.to_datetime(df[EVENT_TIME_COLUMN], utc=True)
    n_missing = int(times.isna().sum())
    if n_missing:
        raise ValueError(f"{n_missing} row(s) have no {EVENT_TIME_COLUMN}; validate the dataset before splitting")

    first_holdout_day = times.max().floor("D") - pd.Timedelta(days=int(holdout_days) - 1)
    in_holdout = (times >= first_holdout_day).to_numpy()
    if in_holdout.all() or not in_holdout.any():
        n_holdout = max(1, math.ceil(len(df) * FALLBACK_HOLDOUT_FRACTION))
        log.warning(
            "the last %s calendar day(s) (from %s) hold %s of %s rows, leaving one side empty; "
            "holding out the newest %s rows (%s%%) instead",
            holdout_days,
            first_holdout_day.date(),
            int(in_holdout.sum()),
            len(df),
            n_holdout,
            int(FALLBACK_HOLDOUT_FRACTION * 100),
        )
        keys = pd.DataFrame({"t": times.to_numpy(), "pos": np.arange(len(df))})
        sort_by = ["t"]
        if ROW_KEY_COLUMN in df.columns:
            keys["key"] = df[ROW_KEY_COLUMN].astype(str).to_numpy()
            sort_by.append("key")
        sort_by.append("pos")
        order = keys.sort_values(sort_by, kind="mergesort")["pos"].to_numpy()
        in_holdout = np.zeros(len(df), dtype=bool)
        in_holdout[order[-n_holdout:]] = True
    return df[~in_holdout], df[in_holdout]
