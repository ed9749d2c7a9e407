"""Delayed labels joined to captured predictions, live decay on them, serving health and staleness.

Captures are written by the capture code itself (``capture_record`` + ``CaptureWriter`` into a real
store folder) and read back by ``environment_captures``; label files are real CSV files in the
store's label drop; the models are real fitted pipelines of the project (``build_pipeline``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import capture_request

from mlops_core.capture import CaptureWriter, capture_prefix, capture_rows, environment_captures
from mlops_core.contract import DatasetContract
from mlops_core.decay import judge_decay, live_checks, live_decay, staleness
from mlops_core.demo_data import DriftSpec, delayed_labels, generate_day, write_day_files, write_label_file
from mlops_core.labels import join_labels, labels_prefix, read_labels
from mlops_core.storage import LocalObjectStore

REPO = Path(__file__).resolve().parents[2]
CONTRACT = DatasetContract.from_yaml(REPO / "include" / "contracts" / "churn.yaml")
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
PREFIX = labels_prefix("labels", "churn")
HEADER = "customer_id,event_time,churned\n"


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _one(entity: str) -> pd.DataFrame:
    return generate_day(0, rows=1).assign(customer_id=entity)


# ----------------------------------------------------------------------------- the join
@pytest.fixture
def drop(tmp_path):
    """Captured predictions of entities A..H and a label drop covering every case of the join."""
    store = LocalObjectStore(tmp_path / "store")
    writer = CaptureWriter(store, capture_prefix("churn", "dev"), flush_records=1000)
    h = timedelta(hours=1)
    capture_request(writer, "a1", T0, _one("A"), [0])
    capture_request(writer, "a2", T0 + 2 * h, _one("A"), [1])  # the latest before A's label
    capture_request(writer, "b1", T0, _one("B"), [0])  # B's label comes 10 days later: too late
    capture_request(writer, "c1", T0 + 5 * h, _one("C"), [1])  # C's label is older than C's only prediction
    capture_request(writer, "d1", T0, _one("D"), [1])  # D's label is delivered twice
    capture_request(writer, "f1", T0, _one("F"), [0])  # F never gets a label
    capture_request(writer, "g1", T0, _one("G"), [1])  # G gets two labels at different times
    capture_request(writer, "h1", T0, _one("H"), [0])  # H gets two different labels at one time
    capture_request(writer, "n1", T0, _one("A").assign(customer_id=None), [1])  # no entity key: cannot be labelled
    writer.close()
    folder = store.path(PREFIX)
    folder.mkdir(parents=True)
    (folder / "labels_1.csv").write_text(
        HEADER
        + f"A,{_iso(T0 + 3 * h)},1\n"
        + f"B,{_iso(T0 + timedelta(days=10))},1\n"
        + f"C,{_iso(T0 + 1 * h)},0\n"
        + f"D,{_iso(T0 + 4 * h)},1\n"
        + f"E,{_iso(T0 + 4 * h)},1\n"  # E was never scored
        + f"G,{_iso(T0 + 6 * h)},1\n"
        + f"G,{_iso(T0 + 9 * h)},0\n"
        + f"H,{_iso(T0 + 6 * h)},1\n"
        + f"Z,{_iso(T0 + timedelta(days=40))},1\n"  # not due yet at the monitor's time
        # untrusted rows: a class the contract does not allow, a time that is no time, no entity
        + f"A,{_iso(T0 + 3 * h)},7\n"
        + "A,yesterday,1\n"
        + f",{_iso(T0 + 3 * h)},1\n"
    )
    (folder / "labels_2.csv").write_text(HEADER + f"D,{_iso(T0 + 4 * h)},1\nH,{_iso(T0 + 6 * h)},0\n")
    (folder / "no_label_column.csv").write_text("customer_id,event_time\nA,2026-03-02T10:00:00Z\n")
    (folder / "notes.txt").write_text("not a label file")
    (folder / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    (folder / ".part-in-progress.csv").write_text(HEADER + "A,garbage")
    return store


def test_labels_join_the_latest_earlier_prediction_and_every_miss_is_counted(drop):
    now = T0 + timedelta(days=20)
    read = read_labels(drop, CONTRACT, PREFIX, T0 - timedelta(days=30), now, max_file_bytes=1 << 20)
    summary = read.summary()
    assert summary["files_read"] == 2
    assert summary["files_rejected"] == {
        f"{PREFIX}no_label_column.csv": "missing_columns",
        f"{PREFIX}notes.txt": "unsupported_format",
        f"{PREFIX}broken.parquet": summary["files_rejected"][f"{PREFIX}broken.parquet"],
    }
    assert summary["files_rejected"][f"{PREFIX}broken.parquet"] in ("unparseable", "truncated")
    assert summary["rows_rejected"] == {
        "churned:not_allowed": 1,
        "event_time:wrong_type": 1,
        "customer_id:null": 1,
    }, summary["rows_rejected"]
    assert summary["not_yet_due"] == 1 and summary["duplicate_label"] == 1 and summary["conflicting_labels"] == 2
    assert sorted(read.labels["entity"]) == ["A", "B", "C", "D", "E", "G", "G"]

    records = environment_captures_from(drop, T0 - timedelta(days=1), now)
    joined = join_labels(capture_rows(records), read.labels, join_days=7)
    pairs = joined.pairs.set_index("entity_key")
    assert sorted(pairs.index) == ["A", "D", "G"]
    assert pairs.loc["A", "request_id"] == "a2" and pairs.loc["A", "prediction"] == 1 and pairs.loc["A", "label"] == 1
    assert pairs.loc["G", "label_time"] == pd.Timestamp(T0 + timedelta(hours=6))  # the earliest label answers
    assert joined.unmatched == {
        "prediction_too_old": 1,  # B
        "before_any_prediction": 1,  # C
        "unknown_entity": 1,  # E
        "prediction_already_labelled": 1,  # G's second label
    }
    s = joined.summary()
    # 8 predictions with a key (A twice), 3 labelled; one request had no key at all
    assert (s["predictions"], s["pairs"], s["unlabelled_predictions"], s["predictions_without_key"]) == (8, 3, 5, 1)
    assert s["coverage"] == round(3 / 8, 6)


def environment_captures_from(store: LocalObjectStore, start: datetime, end: datetime) -> list[dict]:
    from mlops_core.capture import read_captures

    return read_captures(store, "churn", "dev", start, end, entity_key="customer_id")


def test_a_label_window_and_join_window_are_respected(drop):
    now = T0 + timedelta(days=20)
    # A window that starts after most labels: they are not this window's
    read = read_labels(drop, CONTRACT, PREFIX, T0 + timedelta(hours=5), now, max_file_bytes=1 << 20)
    assert sorted(read.labels["entity"]) == ["B", "G", "G"] and read.before_window == 5
    records = environment_captures_from(drop, T0 - timedelta(days=1), now)
    # With a join window of 11 days B's label finds its prediction
    joined = join_labels(capture_rows(records), read.labels, join_days=11)
    assert sorted(joined.pairs["entity_key"]) == ["B", "G"]
    # Files over the size limit are not read
    small = read_labels(drop, CONTRACT, PREFIX, T0 - timedelta(days=30), now, max_file_bytes=100)
    assert small.files_rejected[f"{PREFIX}labels_1.csv"] == "too_large"


def test_label_files_written_before_the_window_are_not_read(drop):
    """A label is written after its outcome: a file last written well before the window holds none
    of the window's labels, so the monitor's cost follows its window, not the drop's history."""
    import os

    now = T0 + timedelta(days=20)
    window_start = T0 - timedelta(days=30)
    folder = drop.path(PREFIX)
    # A year of daily label files, all written long before the window (their labels are old too)
    for day in range(365):
        at = window_start - timedelta(days=400 - day)
        old = folder / f"old_{day:03d}.csv"
        old.write_text(HEADER + f"A,{_iso(at)},1\n")
        os.utime(old, (at.timestamp(), at.timestamp()))
    # ... and one written within the slack before the window starts: still read
    recent = folder / "late_delivery.csv"
    recent.write_text(HEADER + f"F,{_iso(window_start + timedelta(hours=2))},0\n")
    near = (window_start - timedelta(hours=12)).timestamp()
    os.utime(recent, (near, near))

    read = read_labels(drop, CONTRACT, PREFIX, window_start, now, max_file_bytes=1 << 20)
    assert read.files_skipped_old == 365 and read.summary()["files_skipped_old"] == 365
    assert read.files_read == 3  # labels_1, labels_2 and the late delivery
    assert sorted(read.labels["entity"]) == ["A", "B", "C", "D", "E", "F", "G", "G"]
    assert read.before_window == 0  # the old files' labels were never read


def test_no_captures_or_no_labels_join_nothing_and_say_so():
    empty_preds = capture_rows([])
    labels = pd.DataFrame({"entity": ["A"], "label_time": [pd.Timestamp(T0)], "label": [1]})
    joined = join_labels(empty_preds, labels, join_days=7)
    assert len(joined.pairs) == 0 and joined.unmatched == {"unknown_entity": 1} and joined.coverage is None


# ----------------------------------------------------------------------------- decay
@pytest.fixture(scope="module")
def champion():
    """A real churn model trained on days 0-9, with its holdout roc_auc on days 10-11 (the baseline)."""
    from mlops_core.evaluation import score_model
    from mlops_core.training.model import build_pipeline, prepare_features, prepare_target

    train = pd.concat([generate_day(d, rows=800) for d in range(10)], ignore_index=True)
    model = build_pipeline(CONTRACT, "logistic_regression")
    model.fit(prepare_features(train, CONTRACT), prepare_target(train["churned"], CONTRACT))
    holdout = pd.concat([generate_day(d, rows=800) for d in (10, 11)], ignore_index=True)
    return model, score_model(model, holdout, CONTRACT)


def _serve_and_label(store, settings, model, frame: pd.DataFrame, start: datetime, *, batch: int = 0) -> list[datetime]:
    """Score ``frame`` in requests of 40 rows through the capture code, then drop its delayed labels."""
    from mlops_core.training.model import prepare_features

    writer = CaptureWriter(store, capture_prefix(settings.training.model_name, settings.env), flush_records=50)
    times = []
    for i, first in enumerate(range(0, len(frame), 40)):
        rows = frame.iloc[first : first + 40]
        at = start + timedelta(minutes=i)
        predictions = model.predict(prepare_features(rows, CONTRACT)).tolist()
        capture_request(writer, f"req-{batch}-{i}", at, rows, predictions)
        times.extend([at] * len(rows))
    writer.close()
    labels = delayed_labels(frame, pd.Series(times), seed=3, batch=batch, missing_share=0.15, max_delay_hours=12)
    write_label_file(store.path(PREFIX), f"labels-{batch}", labels)
    return times


@pytest.fixture
def live_env(mlops_home):
    from mlops_core.settings import load_settings

    settings = load_settings("dev")
    return settings, LocalObjectStore(Path(settings.storage_root))


def test_decay_fires_on_a_degraded_model_and_not_on_a_good_one(live_env, champion):
    settings, store = live_env
    model, holdout = champion
    now = T0 + timedelta(days=1)
    calm = generate_day(14, rows=1200)
    _serve_and_label(store, settings, model, calm, T0)
    records = environment_captures(settings, store, now - timedelta(days=14), now)
    good = live_decay(
        settings,
        store,
        records,
        champion_version="1",
        baseline=holdout["roc_auc"],
        now=now,
        load_model=lambda: model,
    )
    assert good["source"] == "rescored"  # the server answers classes; roc_auc needs the model's scores
    assert good["pairs"] == good["join"]["pairs"] and 950 < good["pairs"] < 1090  # 15% of labels never come
    assert good["join"]["unlabelled_predictions"] == 1200 - good["pairs"]
    assert not good["decayed"] and good["drop"] < settings.monitoring.max_metric_drop, good

    # Concept drift: same inputs, flipped outcomes; the champion's predictions now miss
    shifted = generate_day(12, rows=600, drift=DriftSpec(kind="concept", start_day=0))
    later = T0 + timedelta(days=2)
    store_2 = LocalObjectStore(store.path("other"))  # a fresh store: only the drifted traffic
    _serve_and_label(store_2, settings, model, shifted, later)
    records = environment_captures(settings, store_2, later - timedelta(days=1), later + timedelta(days=1))
    bad = live_decay(
        settings,
        store_2,
        records,
        champion_version="1",
        baseline=holdout["roc_auc"],
        now=later + timedelta(days=1),
        load_model=lambda: model,
    )
    assert bad["decayed"] and bad["drop"] > 0.1, bad
    assert bad["live"] == pytest.approx(holdout["roc_auc"] - bad["drop"], abs=1e-5)


def test_served_class_answers_give_accuracy_without_the_model(live_env, champion):
    from mlops_core.settings import with_overrides

    settings, store = live_env
    settings = with_overrides(settings, evaluation={"primary_metric": "accuracy", "thresholds": {"accuracy": 0.5}})
    model, _ = champion
    frame = generate_day(13, rows=700)
    _serve_and_label(store, settings, model, frame, T0)
    records = environment_captures(settings, store, T0 - timedelta(days=1), T0 + timedelta(days=1))
    verdict = live_decay(settings, store, records, champion_version="1", baseline=0.99, now=T0 + timedelta(days=1))
    assert verdict["source"] == "served" and verdict["metric"] == "accuracy"
    # what the clients got, compared with the labels that came back
    labels = read_labels(
        store, CONTRACT, PREFIX, T0 - timedelta(days=7), T0 + timedelta(days=1), max_file_bytes=1 << 20
    )
    pairs = join_labels(capture_rows(records), labels.labels, join_days=7).pairs
    expected = float((pairs["prediction"].astype(int) == pairs["label"].astype(int)).mean())
    assert verdict["live"] == pytest.approx(expected, abs=1e-6)
    assert verdict["decayed"]  # 0.99 is far above what a churn model reaches


def test_a_handful_of_labels_never_fires_decay(live_env, champion):
    settings, store = live_env
    model, holdout = champion
    shifted = generate_day(12, rows=40, drift=DriftSpec(kind="concept", start_day=0))
    _serve_and_label(store, settings, model, shifted, T0)
    now = T0 + timedelta(days=1)
    records = environment_captures(settings, store, now - timedelta(days=14), now)
    verdict = live_decay(
        settings, store, records, champion_version="1", baseline=holdout["roc_auc"], now=now, load_model=lambda: model
    )
    assert verdict["pairs"] < settings.monitoring.min_labelled_pairs == 500
    assert not verdict["decayed"] and "fewer than the 500" in verdict["why"]
    decayed, drop, _ = judge_decay(
        verdict["live"], holdout["roc_auc"], greater_is_better=True, max_drop=0.05, pairs=verdict["pairs"], min_pairs=10
    )
    assert decayed and drop == verdict["drop"]  # the same pairs do fire with a lower guard


def test_predictions_of_another_model_version_are_not_the_champions(live_env, champion):
    settings, store = live_env
    model, holdout = champion
    frame = generate_day(12, rows=80)
    writer = CaptureWriter(store, capture_prefix("churn", "dev"), flush_records=500)
    from mlops_core.training.model import prepare_features

    capture_request(writer, "old", T0, frame, model.predict(prepare_features(frame, CONTRACT)).tolist(), version="7")
    writer.close()
    write_label_file(store.path(PREFIX), "l", delayed_labels(frame, T0, missing_share=0.0, max_delay_hours=1))
    now = T0 + timedelta(days=1)
    records = environment_captures(settings, store, now - timedelta(days=14), now)
    verdict = live_decay(
        settings, store, records, champion_version="1", baseline=holdout["roc_auc"], now=now, load_model=lambda: model
    )
    assert verdict["other_versions"] == 80 and verdict["pairs"] == 0 and not verdict["decayed"]


# ----------------------------------------------------------------------------- health and staleness
def test_live_checks_report_serving_health_of_their_window_and_staleness(live_env, champion):
    from mlops_core.backends import backends_for
    from mlops_core.settings import with_overrides
    from mlops_core.stages.ingest import ingest_files

    settings, store = live_env
    settings = with_overrides(settings, serving_health={"min_requests": 5, "max_error_rate": 0.1})
    _, holdout = champion
    now = T0 + timedelta(days=3)
    writer = CaptureWriter(store, capture_prefix("churn", "dev"), flush_records=100)
    row = generate_day(0, rows=1)
    for i in range(10):  # within the last 24 h: 3 errors of 10, p95 latency from 10..100 ms
        status = 503 if i < 3 else 200
        capture_request(
            writer, f"h{i}", now - timedelta(hours=2, minutes=i), row, [0], status=status, latency=10.0 * (i + 1)
        )
    for i in range(10):  # two days ago: failing, but outside the health window
        capture_request(writer, f"o{i}", now - timedelta(days=2, minutes=i), row, [0], status=500)
    writer.close()

    drop = Path(settings.dataset.drop_zone)
    write_day_files(drop, [0], rows=50)
    backends = backends_for(settings)
    ingest_files(
        settings,
        [str(p) for p in sorted(drop.glob("*.csv"))],
        backends,
        run_id="ingest-1",
        ingested_at=(now - timedelta(hours=60)).isoformat(),
    )
    out = live_checks(settings, store, champion_version="1", baseline=holdout["roc_auc"], now=now)
    health = out["serving_health"]
    assert (health["requests"], health["errors"]) == (10, 3) and not health["healthy"]
    assert health["reasons"] == ["error rate 0.300 (3/10) above 0.1"]
    assert health["p95_latency_ms"] == pytest.approx(float(np.percentile([10.0 * (i + 1) for i in range(10)], 95)))
    stale = out["staleness"]
    assert stale["stale"] and stale["dataset"]["age_hours"] == 60.0
    assert stale["reasons"] == ["newest dataset version is 60.0 h old (limit 48.0 h)"]
    assert stale["captures"]["age_hours"] == 2.0  # the newest request, h0
    assert out["decay"]["pairs"] == 0 and not out["decay"]["decayed"]

    fresh = staleness(settings, store, now - timedelta(hours=30))
    assert not fresh["stale"] and fresh["reasons"] == []
    quiet = staleness(settings, store, now + timedelta(days=3))
    assert quiet["stale"] and quiet["reasons"][1] == "no request captured in the last 48.0 h"


def test_staleness_without_any_data(live_env):
    settings, store = live_env
    out = staleness(settings, store, T0)
    assert out["stale"] and out["reasons"] == ["no dataset version yet", "no request captured in the last 48.0 h"]


# ----------------------------------------------------------------------------- demo labels, settings
def test_demo_delayed_labels_are_deterministic_late_and_incomplete():
    frame = generate_day(3, rows=500)
    at = pd.Series([T0 + timedelta(seconds=i) for i in range(500)])
    first = delayed_labels(frame, at, seed=5, missing_share=0.2, max_delay_hours=6)
    again = delayed_labels(frame, at, seed=5, missing_share=0.2, max_delay_hours=6)
    pd.testing.assert_frame_equal(first, again)
    other = delayed_labels(frame, at, seed=5, batch=1, missing_share=0.2, max_delay_hours=6)
    assert not first["event_time"].equals(other["event_time"])
    assert 350 < len(first) < 450  # about 20% never arrive
    assert list(first.columns) == [CONTRACT.entity_key, CONTRACT.event_time, CONTRACT.target]
    assert (first["event_time"] > pd.Timestamp(T0)).all()
    assert (first["event_time"] <= pd.Timestamp(T0) + timedelta(seconds=500, hours=6)).all()
    # the labels are the scored rows' outcomes
    outcomes = set(zip(frame["customer_id"], frame["churned"], strict=True))
    assert set(zip(first["customer_id"], first["churned"], strict=True)) <= outcomes
