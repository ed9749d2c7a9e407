"""Tests of the promotion gate and holdout split (mlops_core.evaluation)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_core.contract import DatasetContract
from mlops_core.evaluation import (
    FALLBACK_HOLDOUT_FRACTION,
    PromotionDecision,
    PromotionPolicy,
    decide_promotion,
    score_model,
    split_holdout,
)
from mlops_core.settings import METRIC_DIRECTIONS, REPO_ROOT, EvaluationSettings

CONTRACT_PATH = REPO_ROOT / "include" / "contracts" / "churn.yaml"


def roc_policy(min_improvement: float = 0.0, **thresholds: float) -> PromotionPolicy:
    return PromotionPolicy("roc_auc", True, thresholds or {"roc_auc": 0.65}, min_improvement)


def rmse_policy(min_improvement: float = 0.0, **thresholds: float) -> PromotionPolicy:
    return PromotionPolicy("rmse", False, thresholds or {"rmse": 10.0}, min_improvement)


# --------------------------------------------------------------------------- policy
def test_policy_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="greater_is_better"):
        PromotionPolicy("rmse", True, {}, 0.0)
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['auc'\]"):
        PromotionPolicy("roc_auc", True, {"auc": 0.5}, 0.0)
    with pytest.raises(ValueError, match="min_improvement"):
        PromotionPolicy("roc_auc", True, {}, -0.1)
    with pytest.raises(ValueError, match="finite"):
        PromotionPolicy("roc_auc", True, {"roc_auc": float("nan")}, 0.0)
    policy = PromotionPolicy.from_settings(
        EvaluationSettings(primary_metric="rmse", thresholds={"rmse": 3, "r2": 0.5}, min_improvement=0.1)
    )
    assert policy == PromotionPolicy("rmse", False, {"rmse": 3.0, "r2": 0.5}, 0.1)


# --------------------------------------------------------------------------- thresholds
def test_thresholds_in_both_directions() -> None:
    assert decide_promotion({"roc_auc": 0.70}, None, roc_policy()).promote
    assert decide_promotion({"roc_auc": 0.65}, None, roc_policy()).promote  # the bound itself passes
    low = decide_promotion({"roc_auc": 0.60}, None, roc_policy())
    assert not low.promote
    assert any("roc_auc = 0.6000 fails the threshold >= 0.6500" in r for r in low.reasons), low.reasons

    assert decide_promotion({"rmse": 9.5}, None, rmse_policy()).promote
    high = decide_promotion({"rmse": 12.0}, None, rmse_policy())
    assert not high.promote and any("rmse = 12.0000 fails the threshold <= 10.0000" in r for r in high.reasons)

    # every threshold counts, not only the primary metric's
    mixed = decide_promotion({"roc_auc": 0.9, "log_loss": 0.8}, None, roc_policy(roc_auc=0.6, log_loss=0.5))
    assert not mixed.promote and any("log_loss = 0.8000 fails" in r for r in mixed.reasons)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), None, "0.9"])
def test_missing_or_non_finite_metrics_reject(value) -> None:
    missing = decide_promotion({"accuracy": 0.9}, None, roc_policy())
    assert not missing.promote and "has no roc_auc" in missing.reasons[0]
    bad = decide_promotion({"roc_auc": value}, None, roc_policy())
    assert not bad.promote and "not a finite number" in bad.reasons[0]
    # the primary metric is needed even without a threshold on it
    unthresholded = decide_promotion({"accuracy": 0.9}, None, PromotionPolicy("roc_auc", True, {"accuracy": 0.5}, 0.0))
    assert not unthresholded.promote


# --------------------------------------------------------------------------- champion
def test_no_champion_promotes_a_challenger_that_passes() -> None:
    decision = decide_promotion({"roc_auc": 0.8}, None, roc_policy())
    assert decision.promote and decision.champion is None
    assert "no champion" in decision.reasons[-1] and "0.8000" in decision.reasons[-1]


def test_min_improvement_against_the_champion() -> None:
    policy = roc_policy(min_improvement=0.01)
    better = decide_promotion({"roc_auc": 0.83}, {"roc_auc": 0.82}, policy)  # 0.0099999... in floating point
    assert better.promote and "improves on the champion's 0.8200 by 0.0100" in better.reasons[-1]
    slightly = decide_promotion({"roc_auc": 0.825}, {"roc_auc": 0.82}, policy)
    assert not slightly.promote and "less than the required 0.0100" in slightly.reasons[-1]
    worse = decide_promotion({"roc_auc": 0.81}, {"roc_auc": 0.82}, policy)
    assert not worse.promote and "worse than the champion's 0.8200" in worse.reasons[-1]
    # min_improvement 0: a tie promotes, any loss does not
    assert decide_promotion({"roc_auc": 0.82}, {"roc_auc": 0.82}, roc_policy()).promote
    assert not decide_promotion({"roc_auc": 0.82 - 1e-13}, {"roc_auc": 0.82}, roc_policy()).promote
    # lower is better: rmse 7 beats 8 by 1
    assert decide_promotion({"rmse": 7.0}, {"rmse": 8.0}, rmse_policy(min_improvement=1.0)).promote
    assert not decide_promotion({"rmse": 7.5}, {"rmse": 8.0}, rmse_policy(min_improvement=1.0)).promote
    assert not decide_promotion({"rmse": 8.5}, {"rmse": 8.0}, rmse_policy()).promote


def test_a_champion_without_the_metric_cannot_block_but_is_reported() -> None:
    decision = decide_promotion({"roc_auc": 0.8}, {"accuracy": 0.9}, roc_policy())
    assert decision.promote and "cannot be compared" in decision.reasons[-1]
    # thresholds still apply
    assert not decide_promotion({"roc_auc": 0.5}, {"accuracy": 0.9}, roc_policy()).promote


def test_decision_to_dict_is_json_safe() -> None:
    decision = decide_promotion({"roc_auc": 0.9, "log_loss": float("nan")}, {"roc_auc": 0.8}, roc_policy())
    out = decision.to_dict()
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    assert out["promote"] is True and out["challenger"]["log_loss"] is None and out["champion"] == {"roc_auc": 0.8}
    assert isinstance(decision, PromotionDecision) and out["reasons"] == decision.reasons


# --------------------------------------------------------------------------- properties
metric_values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    metric=st.sampled_from(sorted(METRIC_DIRECTIONS)),
    champion=metric_values,
    worse_by=st.floats(min_value=1e-9, max_value=1e3, allow_nan=False),
    min_improvement=st.floats(min_value=0, max_value=1, allow_nan=False),
)
def test_a_worse_challenger_is_never_promoted(
    metric: str, champion: float, worse_by: float, min_improvement: float
) -> None:
    greater = METRIC_DIRECTIONS[metric]
    challenger = champion - worse_by if greater else champion + worse_by
    if challenger == champion:  # the difference vanished in floating point: not worse
        return
    policy = PromotionPolicy(metric, greater, {}, min_improvement)
    decision = decide_promotion({metric: challenger}, {metric: champion}, policy)
    assert not decision.promote, decision.reasons


@settings(max_examples=300, deadline=None)
@given(
    metric=st.sampled_from(sorted(METRIC_DIRECTIONS)),
    threshold=metric_values,
    miss_by=st.floats(min_value=1e-6, max_value=1e3, allow_nan=False),
    champion=st.none() | metric_values,
    primary=st.sampled_from(sorted(METRIC_DIRECTIONS)),
    primary_value=metric_values,
)
def test_a_failed_threshold_never_promotes(
    metric: str, threshold: float, miss_by: float, champion: float | None, primary: str, primary_value: float
) -> None:
    greater = METRIC_DIRECTIONS[metric]
    value = threshold - miss_by if greater else threshold + miss_by
    if value == threshold:
        return
    metrics = {primary: primary_value, metric: value}  # metric may be the primary one: value wins
    policy = PromotionPolicy(primary, METRIC_DIRECTIONS[primary], {metric: threshold}, 0.0)
    champion_metrics = None if champion is None else {primary: champion}
    assert not decide_promotion(metrics, champion_metrics, policy).promote


# --------------------------------------------------------------------------- scoring
def _labelled(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 120, n)
    calls = rng.poisson(2, n)
    autopay = rng.random(n) < 0.5
    churned = (rng.random(n) < 1 / (1 + np.exp(0.03 * tenure - 0.6 * calls + autopay))).astype(int)
    return pd.DataFrame(
        {
            "tenure_months": pd.array(tenure, dtype="Int64"),
            "monthly_charges": rng.uniform(10, 100, n),
            "usage_hours": rng.uniform(0, 300, n),
            "support_calls": pd.array(calls, dtype="Int64"),
            "plan": pd.array(rng.choice(["basic", "standard", "premium"], n), dtype="string"),
            "region": rng.choice(["north", "south", "east", "west"], n),
            "autopay": pd.array(autopay, dtype="boolean"),
            "last_payment_delay_days": np.where(rng.random(n) < 0.2, np.nan, rng.exponential(4, n)),
            "churned": pd.array(churned, dtype="Int64"),
        }
    )


def test_score_model_on_a_pipeline_and_on_a_predict_only_model() -> None:
    from mlops_core.training.model import build_pipeline, prepare_features, prepare_target

    contract = DatasetContract.from_yaml(CONTRACT_PATH)
    train, holdout = _labelled(300, seed=1), _labelled(120, seed=2)
    pipeline = build_pipeline(contract, "logistic_regression", {}).fit(
        prepare_features(train, contract), prepare_target(train["churned"], contract)
    )
    metrics = score_model(pipeline, holdout, contract)
    assert set(metrics) == {"roc_auc", "accuracy", "f1", "log_loss"}
    assert metrics["roc_auc"] > 0.7

    class PredictOnly:  # e.g. an MLflow pyfunc model: predict returns a DataFrame
        def predict(self, X: pd.DataFrame) -> pd.DataFrame:
            return pd.DataFrame({"prediction": pipeline.predict(X)})

    class PyfuncLike(PredictOnly):  # MLflow's sklearn pyfunc wrapper exposes the estimator
        def get_raw_model(self):
            return pipeline

    assert score_model(PyfuncLike(), holdout, contract) == metrics
    hard = score_model(PredictOnly(), holdout, contract)
    assert set(hard) == {"accuracy", "f1"} and hard["accuracy"] == metrics["accuracy"]
    assert not decide_promotion(hard, None, roc_policy()).promote  # no roc_auc: the gate rejects
    with pytest.raises(ValueError, match="holdout is empty"):
        score_model(pipeline, holdout.iloc[:0], contract)
    with pytest.raises(ValueError, match="no target column 'churned'"):
        score_model(pipeline, holdout.drop(columns="churned"), contract)


# --------------------------------------------------------------------------- holdout split
def _timed(days: list[int], hours: list[int] | None = None) -> pd.DataFrame:
    hours = hours or [12] * len(days)
    times = [
        pd.Timestamp("2025-03-01", tz="UTC") + pd.Timedelta(days=d, hours=h) for d, h in zip(days, hours, strict=True)
    ]
    return pd.DataFrame(
        {"_event_time": times, "_row_key": [f"k{i:03d}" for i in range(len(days))], "x": range(len(days))}
    )


def test_split_holds_out_the_last_calendar_days_in_utc() -> None:
    df = _timed([0, 0, 1, 2, 3, 3, 3], hours=[1, 23, 5, 0, 0, 12, 23])
    train, holdout = split_holdout(df, holdout_days=1)
    assert holdout["x"].tolist() == [4, 5, 6] and train["x"].tolist() == [0, 1, 2, 3]
    train2, holdout2 = split_holdout(df, holdout_days=2)
    assert holdout2["x"].tolist() == [3, 4, 5, 6] and len(train2) == 3
    # a non-UTC timezone is converted first: 2025-03-04 00:30+02:00 is 2025-03-03 22:30 UTC
    local = df.assign(_event_time=df["_event_time"].dt.tz_convert("Europe/Helsinki"))
    assert split_holdout(local, 1)[1]["x"].tolist() == [4, 5, 6]


def test_split_is_deterministic_and_loses_no_row() -> None:
    rng = np.random.default_rng(3)
    df = _timed(list(rng.integers(0, 10, 200)), hours=list(rng.integers(0, 24, 200)))
    train, holdout = split_holdout(df, 3)
    _, again_holdout = split_holdout(df.sample(frac=1, random_state=7), 3)
    assert set(holdout["_row_key"]) == set(again_holdout["_row_key"])
    assert sorted(train.index.tolist() + holdout.index.tolist()) == list(range(200))
    assert train["_event_time"].max() < holdout["_event_time"].min()


def test_split_falls_back_to_the_newest_20_percent() -> None:
    assert FALLBACK_HOLDOUT_FRACTION == 0.2
    df = _timed([5] * 10, hours=[9, 1, 2, 3, 3, 4, 5, 6, 7, 8])  # every event on one day
    _, holdout = split_holdout(df, holdout_days=1)
    assert len(holdout) == 2 and holdout["x"].tolist() == [0, 9]  # 09:00 and 08:00 are the newest
    # ties on time are broken by _row_key, so shuffled input gives the same split
    tied = _timed([5] * 10, hours=[3] * 10)
    first = split_holdout(tied, 1)[1]["_row_key"].tolist()
    assert first == ["k008", "k009"]
    assert sorted(split_holdout(tied.iloc[::-1], 1)[1]["_row_key"]) == first
    assert len(split_holdout(_timed([0, 0, 0]), 1)[1]) == 1  # at least one row held out


def test_split_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="holdout_days"):
        split_holdout(_timed([0, 1]), 0)
    with pytest.raises(ValueError, match="_event_time"):
        split_holdout(pd.DataFrame({"x": [1, 2]}), 1)
    with pytest.raises(ValueError, match="at least 2"):
        split_holdout(_timed([0]), 1)
    with pytest.raises(ValueError, match="no _event_time"):
        split_holdout(_timed([0, 1]).assign(_event_time=[pd.NaT, pd.Timestamp("2025-01-01", tz="UTC")]), 1)
