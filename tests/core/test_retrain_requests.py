"""One retraining request per evidence (mlops_core.stages.monitor.claim_retrain_request)."""

from __future__ import annotations

from datetime import date

from mlops_core.stages.monitor import claim_retrain_request
from mlops_core.storage import LocalObjectStore


def test_drift_evidence_is_the_champion_and_the_versions(tmp_path):
    store = LocalObjectStore(tmp_path)
    assert claim_retrain_request(store, "dev.churn", "3", "drift", ["b", "a"], run_key="r1") is None
    earlier = claim_retrain_request(store, "dev.churn", "3", "drift", ["a", "b"], run_key="r2")
    assert earlier is not None and earlier["run_key"] == "r1" and earlier["reason"] == "drift"
    # the same run asking again (a retry) keeps its request
    assert claim_retrain_request(store, "dev.churn", "3", "drift", ["a", "b"], run_key="r1") is None
    # new versions, another champion, another model: new evidence
    assert claim_retrain_request(store, "dev.churn", "3", "drift", ["a", "b", "c"], run_key="r3") is None
    assert claim_retrain_request(store, "dev.churn", "4", "drift", ["a", "b"], run_key="r4") is None
    assert claim_retrain_request(store, "staging.churn", "3", "drift", ["a", "b"], run_key="r5") is None


def test_decay_evidence_is_the_champion_and_the_day(tmp_path):
    store = LocalObjectStore(tmp_path)
    monday, tuesday = date(2026, 3, 2), date(2026, 3, 3)
    assert claim_retrain_request(store, "m", "1", "decay", ["a"], run_key="r1", today=monday) is None
    # the labels window moves, not the versions: later the same day, other versions: already asked
    assert claim_retrain_request(store, "m", "1", "decay", ["b"], run_key="r2", today=monday)["run_key"] == "r1"
    assert claim_retrain_request(store, "m", "1", "decay", ["b"], run_key="r3", today=tuesday) is None
    # a drift request is not a decay request
    assert claim_retrain_request(store, "m", "1", "drift", ["a"], run_key="r4", today=monday) is None
