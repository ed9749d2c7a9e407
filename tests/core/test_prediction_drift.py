"""Prediction drift: the champion's scores on captured inputs against its training profile.

Captures are written by the capture code itself (``capture_record`` + ``CaptureWriter`` into a real
store folder, read back by ``environment_captures``); the model is a real fitted pipeline of the
project and the profile is built by the training stage's own ``build_profile`` + ``prediction_scores``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from conftest import capture_request

from mlops_core.capture import CaptureWriter, capture_prefix, read_captures
from mlops_core.contract import DatasetContract
from mlops_core.demo_data import DriftSpec, generate_day
from mlops_core.drift_profile import ProfileThresholds, ReferenceProfile, build_profile
from mlops_core.evaluation import prediction_scores
from mlops_core.prediction_drift import prediction_drift
from mlops_core.storage import LocalObjectStore

REPO = Path(__file__).resolve().parents[2]
CONTRACT = DatasetContract.from_yaml(REPO / "include" / "contracts" / "churn.yaml")
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
THRESHOLDS = ProfileThresholds(
    drift_share=0.3,
    numeric_method="wasserstein",
    wasserstein=0.1,
    psi=0.2,
    jensenshannon=0.1,
    missing_rate_change=0.1,
    min_rows=50,
)


@pytest.fixture(scope="module")
def champion():
    """A fitted pipeline and its profile (features and scores), as training makes them."""
    from mlops_core.training.model import build_pipeline, prepare_features, prepare_target

    train = pd.concat([generate_day(d, rows=400, seed=3) for d in range(5)], ignore_index=True)
    model = build_pipeline(CONTRACT, "logistic_regression")
    model.fit(prepare_features(train, CONTRACT), prepare_target(train["churned"], CONTRACT))
    profile = build_profile(
        train,
        CONTRACT.name,
        [c for c in CONTRACT.feature_columns if c in CONTRACT.numeric_features],
        [c for c in CONTRACT.feature_columns if c in CONTRACT.categorical_features],
        bins=20,
        top_k=20,
        predictions=prediction_scores(model, train.sample(1000, random_state=1), CONTRACT),
    )
    return model, ReferenceProfile.from_json(profile.to_json())  # as the monitor reads it back


def _captured(tmp_path, frames: list[pd.DataFrame], *, version: str = "1", status: int = 200) -> list[dict]:
    """Each frame sent as one request to version ``version`` and answered with its class (as MLflow does)."""
    store = LocalObjectStore(tmp_path / "store")
    writer = CaptureWriter(store, capture_prefix("churn", "dev"), flush_records=1000)
    for i, rows in enumerate(frames):
        capture_request(
            writer, f"r{i}", T0 + timedelta(minutes=i), rows, [0] * len(rows), version=version, status=status
        )
    assert writer.flush() == len(frames)
    return read_captures(store, "churn", "dev", T0 - timedelta(days=1), T0 + timedelta(days=1))


def _check(model, profile, records, **kw):
    kwargs = {"champion_version": "1", "load_model": lambda: model, "min_rows": 100, "max_rows": 5000, **kw}
    return prediction_drift(profile, records, CONTRACT, THRESHOLDS, **kwargs)


def test_requests_like_the_training_data_do_not_drift(champion, tmp_path):
    model, profile = champion
    frames = [generate_day(20 + d, rows=100, seed=11) for d in range(6)]
    got = _check(model, profile, _captured(tmp_path, frames))
    assert got["checked"] and not got["drifted"] and got["rows"] == 600, got
    assert got["method"] == "wasserstein" and got["score"] < THRESHOLDS.wasserstein


def test_requests_that_moved_the_scores_drift(champion, tmp_path):
    model, profile = champion
    shifted = DriftSpec(kind="covariate", start_day=0, strength=3.0)
    frames = [generate_day(20 + d, rows=100, seed=11, drift=shifted) for d in range(6)]
    got = _check(model, profile, _captured(tmp_path, frames))
    assert got["checked"] and got["drifted"], got
    assert got["score"] >= THRESHOLDS.wasserstein and "wasserstein" in got["why"]


def test_no_verdict_without_enough_answers_of_the_champion(champion, tmp_path):
    model, profile = champion
    frames = [generate_day(20, rows=100, seed=11)]
    assert _check(model, profile, _captured(tmp_path, frames))["checked"]  # 100 rows: just enough
    few = _check(model, profile, _captured(tmp_path / "few", [generate_day(20, rows=40, seed=1)]))
    assert not few["checked"] and "fewer than 100" in few["why"]
    other = _check(model, profile, _captured(tmp_path / "other", frames * 2, version="7"))
    assert not other["checked"] and other["rows"] == 0  # answers of another version do not count
    failed = _check(model, profile, _captured(tmp_path / "failed", frames * 2, status=500))
    assert not failed["checked"] and failed["rows"] == 0  # nor do failed requests


def test_no_verdict_when_the_profile_has_no_scores_or_the_model_refuses(champion, tmp_path):
    model, profile = champion
    records = _captured(tmp_path, [generate_day(20, rows=150, seed=2)])
    bare = ReferenceProfile.from_json(json.dumps({**json.loads(profile.to_json()), "prediction": None}).encode())
    assert "no profile of its scores" in _check(model, bare, records)["why"]

    class Refuses:
        def predict_proba(self, X):
            raise ValueError("columns do not match")

    got = _check(Refuses(), profile, records)
    assert not got["checked"] and "scoring the captured inputs failed" in got["why"]


def test_memory_is_bounded_by_max_rows(champion, tmp_path):
    model, profile = champion
    frames = [generate_day(20 + d, rows=100, seed=11) for d in range(6)]
    got = _check(model, profile, _captured(tmp_path, frames), max_rows=250)
    assert got["checked"] and got["rows"] == 250
