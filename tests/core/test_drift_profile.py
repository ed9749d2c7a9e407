"""The reference profile and the streaming drift decision (mlops_core.drift_profile, detect_drift_streaming)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial import distance

from mlops_core.contract import DatasetContract
from mlops_core.drift import RowSample, detect_drift_streaming
from mlops_core.drift_profile import (
    PROFILE_FORMAT,
    Binner,
    ProfileCounter,
    ProfileError,
    ProfileThresholds,
    ReferenceProfile,
    build_profile,
    decide,
)
from mlops_core.registry import ModelVersionInfo
from mlops_core.storage import LocalObjectStore

REPO_ROOT = Path(__file__).resolve().parents[2]
NUMERIC = ["normal", "skewed", "count", "flag"]
CATEGORICAL = ["plan"]
PLANS = ["basic", "standard", "premium", "family", "student"]
PLAN_SHARES = [0.4, 0.3, 0.15, 0.1, 0.05]


def draw(rows: int, seed: int, **change: float) -> pa.Table:
    """Rows of the reference distribution, or of a changed one (``change`` names what moves)."""
    rng = np.random.default_rng(seed)
    normal = rng.normal(50.0 + change.get("shift", 0.0) * 10.0, 10.0 * change.get("scale", 1.0), rows)
    skewed = rng.lognormal(1.0, 0.6, rows)
    missing = 0.05 + change.get("missing", 0.0)
    skewed[rng.random(rows) < missing] = np.nan
    count = rng.poisson(3.0 + change.get("count", 0.0), rows).astype(np.int64)
    flag = (rng.random(rows) < 0.3).astype(np.int64)
    shares = np.array(PLAN_SHARES)
    if change.get("mix"):
        shares = shares[::-1]
    plan = rng.choice(PLANS, rows, p=shares / shares.sum())
    return pa.table({"normal": normal, "skewed": skewed, "count": count, "flag": flag, "plan": plan})


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    return build_profile(draw(40_000, seed=1), "synthetic", NUMERIC, CATEGORICAL, bins=20, top_k=4)


def verdicts(profile: ReferenceProfile, table: pa.Table, batch_rows: int = 4096, **kw):
    counter = ProfileCounter(profile).add_all(table.to_batches(batch_rows))
    columns, share, drifted = decide(profile, counter, ProfileThresholds(**kw))
    return {v.column: v for v in columns}, share, drifted


# ------------------------------------------------------------------------------ no false alarm
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(min_value=2, max_value=2**31), rows=st.integers(min_value=5_000, max_value=20_000))
def test_no_false_alarm_on_rows_drawn_from_the_reference_distribution(profile, seed, rows):
    columns, share, drifted = verdicts(profile, draw(rows, seed))
    assert not drifted and share == 0.0, {c: v.why for c, v in columns.items() if v.drifted}
    for v in columns.values():  # inside the thresholds, not just under them (sampling noise is ~0.015 here)
        assert v.score < 0.8 * v.threshold, (v.column, v.why)


# ------------------------------------------------------------------------------ alarms
@pytest.mark.parametrize(
    ("change", "column", "method"),
    [
        ({"shift": 0.5}, "normal", "wasserstein"),  # mean shift of half a standard deviation
        ({"scale": 1.6}, "normal", "wasserstein"),  # variance change
        ({"mix": 1.0}, "plan", "jensenshannon"),  # category mix reversed
        ({"missing": 0.3}, "skewed", "wasserstein"),  # missing rate 5% -> 35%, the values unchanged
        ({"count": 2.0}, "count", "wasserstein"),  # a count's mean moves by 2
    ],
)
def test_each_injected_change_is_an_alarm_on_its_column_only(profile, change, column, method):
    columns, share, _ = verdicts(profile, draw(20_000, seed=7, **change))
    assert columns[column].drifted, columns[column].why
    assert columns[column].method == method
    assert [c for c, v in columns.items() if v.drifted] == [column]  # drift in one column only
    assert share == pytest.approx(1 / 5)
    if "missing" in change:
        assert "missing rate" in columns[column].why
        assert columns[column].stats["missing_rate_current"] == pytest.approx(0.35, abs=0.02)


def test_a_flag_column_is_compared_value_by_value(profile):
    assert profile.numeric["flag"].discrete and profile.numeric["count"].discrete is False
    table = draw(20_000, seed=8)
    flipped = table.set_column(3, "flag", pa.array(1 - table.column("flag").to_numpy()))
    columns, _, _ = verdicts(profile, flipped)
    assert columns["flag"].method == "jensenshannon" and columns["flag"].drifted


def test_dataset_verdict_is_the_share_of_drifted_columns(profile):
    both = draw(20_000, seed=9, shift=0.5, mix=1.0)
    _, share, drifted = verdicts(profile, both, drift_share=0.4)
    assert share == pytest.approx(2 / 5) and drifted
    _, _, drifted_at_half = verdicts(profile, both, drift_share=0.5)
    assert not drifted_at_half


def test_psi_can_decide_numeric_columns(profile):
    columns, _, _ = verdicts(profile, draw(20_000, seed=10, shift=0.5), numeric_method="psi", psi=0.2)
    assert columns["normal"].method == "psi" and columns["normal"].drifted
    assert columns["normal"].score == columns["normal"].stats["psi"] > 0.2
    assert columns["skewed"].method == "psi" and not columns["skewed"].drifted


# ------------------------------------------------------------------------------ the statistics
def test_binned_wasserstein_matches_the_exact_distance_and_js_matches_scipy(profile):
    rng = np.random.default_rng(3)
    reference = rng.normal(0.0, 1.0, 50_000)
    p = build_profile(pa.table({"x": reference}), "x", ["x"], [], bins=20)
    for shift, scale in [(0.0, 1.0), (0.05, 1.0), (0.3, 1.0), (0.0, 1.3), (0.2, 0.7)]:
        current = rng.normal(shift, scale, 50_000)
        v = {
            c.column: c
            for c in decide(p, ProfileCounter(p).add_all([pa.table({"x": current})]), ProfileThresholds())[0]
        }
        exact = stats.wasserstein_distance(reference, current) / np.std(reference)
        assert v["x"].score == pytest.approx(exact, abs=0.003), (shift, scale)
    cat = build_profile(pa.table({"c": ["a"] * 60 + ["b"] * 30 + ["c"] * 10}), "c", [], ["c"])
    current = pa.table({"c": ["a"] * 20 + ["b"] * 50 + ["c"] * 30})
    js = decide(cat, ProfileCounter(cat).add_all([current]), ProfileThresholds())[0][0].score
    assert js == pytest.approx(distance.jensenshannon([0.6, 0.3, 0.1, 0.0], [0.2, 0.5, 0.3, 0.0]))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    bins=st.integers(2, 60),
    kind=st.sampled_from(["normal", "integers", "rounded", "tiny", "offset", "offset_table"]),
)
def test_table_binner_equals_binary_search(seed, bins, kind):
    rng = np.random.default_rng(seed)
    x = {
        "normal": lambda: rng.normal(size=5000),
        "integers": lambda: rng.integers(0, 30, 5000).astype(float),
        "rounded": lambda: np.round(rng.exponential(3.0, 5000), 1),
        "tiny": lambda: rng.normal(size=5000) * 1e-9,
        "offset": lambda: 1e7 + rng.normal(size=5000),  # too far from zero for the table: binary search
        "offset_table": lambda: 2e3 + rng.normal(size=5000) * 0.3,  # the table, near its limit
    }[kind]()
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1]))
    probes = np.concatenate([x, edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf), [x.min() - 1e300]])
    np.testing.assert_array_equal(Binner(edges).bin_of(probes), np.searchsorted(edges, probes, side="right"))


def test_chunked_counts_equal_one_shot(profile):
    table = draw(30_000, seed=11, shift=0.2, missing=0.1)
    one = ProfileCounter(profile).add_all([table])
    chunked = ProfileCounter(profile).add_all(table.to_batches(777))
    for name in profile.columns:
        np.testing.assert_array_equal(one.columns[name].counts, chunked.columns[name].counts)
        assert (one.columns[name].rows, one.columns[name].missing) == (
            chunked.columns[name].rows,
            chunked.columns[name].missing,
        )
        np.testing.assert_allclose(one.columns[name].sums, chunked.columns[name].sums, rtol=1e-12)
    a, share_a, drifted_a = decide(profile, one, ProfileThresholds())
    b, share_b, drifted_b = decide(profile, chunked, ProfileThresholds())
    assert (share_a, drifted_a) == (share_b, drifted_b)
    for x, y in zip(a, b, strict=True):
        assert (x.column, x.method, x.drifted) == (y.column, y.method, y.drifted)
        assert x.score == pytest.approx(y.score, rel=1e-9, abs=1e-12)


def test_nulls_nan_and_infinities_count_as_missing():
    p = build_profile(pa.table({"x": np.arange(1000.0)}), "x", ["x"], [])
    current = pa.table({"x": pa.array([1.0, None, float("nan"), float("inf"), -float("inf"), 2.0], pa.float64())})
    counts = ProfileCounter(p).add_all([current]).columns["x"]
    assert (counts.rows, counts.missing, int(counts.counts.sum())) == (6, 4, 2)


# ------------------------------------------------------------------------------ the profile on disk
def test_profile_round_trip(profile):
    data = profile.to_json()
    assert len(data) < 20_000
    assert ReferenceProfile.from_json(data) == profile
    with_prediction = build_profile(draw(2000, seed=2), "s", NUMERIC, CATEGORICAL, predictions=np.linspace(0, 1, 2000))
    assert ReferenceProfile.from_json(with_prediction.to_json()) == with_prediction
    assert with_prediction.prediction is not None and len(with_prediction.prediction.edges) == 19


def _mutated(profile: ReferenceProfile, mutate) -> bytes:
    raw = json.loads(profile.to_json())
    mutate(raw)
    return json.dumps(raw).encode()


MALFORMED = {
    "not json": lambda p: b"\x80\x04\x95 pickle bytes",
    "nan": lambda p: p.to_json().replace(b'"std":', b'"std":NaN,"x":', 1),
    "a list": lambda p: b"[1, 2]",
    "wrong format": lambda p: _mutated(p, lambda r: r.update(format="mlops.drift_profile/0")),
    "field missing": lambda p: _mutated(p, lambda r: r.pop("top_k")),
    "field extra": lambda p: _mutated(p, lambda r: r.update(code="__import__('os')")),
    "edges not increasing": lambda p: _mutated(p, lambda r: r["numeric"]["normal"]["edges"].reverse()),
    "shares too short": lambda p: _mutated(p, lambda r: r["numeric"]["normal"]["shares"].pop()),
    "shares do not sum to 1": lambda p: _mutated(p, lambda r: r["categorical"]["plan"]["shares"].__setitem__(0, 0.9)),
    "negative share": lambda p: _mutated(p, lambda r: r["categorical"]["plan"]["shares"].__setitem__(0, -0.1)),
    "rate above 1": lambda p: _mutated(p, lambda r: r["numeric"]["skewed"].update(missing_rate=1.5)),
    "bool as number": lambda p: _mutated(p, lambda r: r["numeric"]["normal"].update(std=True)),
    "string as number": lambda p: _mutated(p, lambda r: r["numeric"]["normal"].update(mean="50")),
    "mean outside its bin": lambda p: _mutated(p, lambda r: r["numeric"]["normal"]["bin_means"].__setitem__(3, 1e9)),
    "categories repeat": lambda p: _mutated(
        p, lambda r: r["categorical"]["plan"]["categories"].__setitem__(1, "basic")
    ),
    "a column twice": lambda p: _mutated(p, lambda r: r["categorical"].update(normal=r["categorical"]["plan"])),
    "no column": lambda p: _mutated(p, lambda r: (r["numeric"].clear(), r["categorical"].clear())),
    "too big": lambda p: b" " * (16 * 1024 * 1024 + 1),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_profile_is_refused(profile, case):
    with pytest.raises(ProfileError):
        ReferenceProfile.from_json(MALFORMED[case](profile), source="s3://bucket/drift_profile.json")


def test_the_format_is_named_in_the_profile(profile):
    assert json.loads(profile.to_json())["format"] == PROFILE_FORMAT


# ------------------------------------------------------------------------------ detect_drift_streaming
@pytest.fixture(scope="module")
def contract() -> DatasetContract:
    return DatasetContract.from_yaml(REPO_ROOT / "include" / "contracts" / "churn.yaml")


def test_streaming_on_the_demo_contract_and_its_report_sample(contract):
    from mlops_core.demo_data import DriftSpec, generate_day

    numeric = [c for c in contract.feature_columns if c in contract.numeric_features]
    categorical = [c for c in contract.feature_columns if c in contract.categorical_features]
    reference = pd.concat([generate_day(d, rows=2000) for d in range(3)], ignore_index=True)
    profile = build_profile(reference, "churn", numeric, categorical)
    same = pa.Table.from_pandas(generate_day(4, rows=3000), preserve_index=False)
    result, sample = detect_drift_streaming(profile, same.to_batches(500), contract, sample_rows=1000)
    assert not result.drifted and result.current_rows == 3000 and result.reference_rows == 6000
    assert set(result.column_methods) == set(numeric + categorical)
    assert sample is not None and len(sample) == 1000
    assert list(sample.columns) == [c for c in contract.feature_columns if c in numeric + categorical]
    assert json.loads(json.dumps(result.to_dict()))["column_stats"]["plan"]["jensenshannon"] >= 0

    drifted = pa.Table.from_pandas(generate_day(6, rows=3000, drift=DriftSpec("covariate", 5)), preserve_index=False)
    result, _ = detect_drift_streaming(profile, drifted.to_batches(500), contract)
    assert result.drifted and "usage_hours" in result.drifted_columns
    assert result.reason.startswith(f"{len(result.drifted_columns)} of 8 columns drifted")

    few, _ = detect_drift_streaming(profile, [same.slice(0, 50)], contract)
    assert not few.drifted and few.reason.startswith("not enough rows")

    other = build_profile(reference, "churn", numeric[:-1], categorical)
    with pytest.raises(ProfileError, match="another contract"):
        detect_drift_streaming(other, same.to_batches(500), contract)


def test_row_sample_is_bounded_uniform_and_seeded():
    table = pa.table({"i": np.arange(100_000)})
    sample = RowSample(5000, seed=1)
    for batch in table.to_batches(3000):
        sample.add(batch)
    frame = sample.frame()
    assert frame is not None and len(frame) == 5000 and frame["i"].is_unique
    assert frame["i"].is_monotonic_increasing  # stream order kept
    assert abs(frame["i"].mean() - 50_000) < 2000 and frame["i"].min() < 1000 and frame["i"].max() > 99_000
    again = RowSample(5000, seed=1)
    for batch in table.to_batches(3000):
        again.add(batch)
    assert again.frame()["i"].tolist() == frame["i"].tolist()
    small = RowSample(5000)
    small.add(table.slice(0, 10))
    assert small.frame()["i"].tolist() == list(range(10))
    assert RowSample(5).frame() is None


# ------------------------------------------------------------------------------ the monitor's profile
def _champion(tags: dict[str, str]) -> ModelVersionInfo:
    return ModelVersionInfo(name="churn", version="3", run_id="r", source="s", tags=tags, aliases=["champion"])


def test_the_monitor_reads_the_champions_profile_and_refuses_a_malformed_one(tmp_path, profile):
    from mlops_core.settings import load_settings
    from mlops_core.stages.monitor import _champion_profile

    settings = load_settings("dev")
    store = LocalObjectStore(tmp_path)
    reference = pd.DataFrame({"x": [1.0]})
    store.put_bytes("training_sets/a/drift_profile.json", profile.to_json())
    got = _champion_profile(
        settings, _champion({"mlops.drift_profile": "training_sets/a/drift_profile.json"}), reference, store
    )
    assert got == profile
    store.put_bytes("training_sets/b/drift_profile.json", profile.to_json().replace(b'"bins":20', b'"bins":"20"'))
    with pytest.raises(ProfileError, match="bins"):
        _champion_profile(
            settings, _champion({"mlops.drift_profile": "training_sets/b/drift_profile.json"}), reference, store
        )


def test_a_champion_from_before_profiles_is_profiled_from_its_reference_sample(tmp_path, contract):
    from mlops_core.demo_data import generate_day
    from mlops_core.settings import load_settings
    from mlops_core.stages.monitor import _champion_profile

    settings = load_settings("dev")
    sample = generate_day(0, rows=1500)
    got = _champion_profile(settings, _champion({}), sample, LocalObjectStore(tmp_path))
    assert got.rows == 1500 and set(got.columns) == set(
        contract.numeric_features + contract.categorical_features
    ) & set(contract.feature_columns)
    assert math.isclose(got.numeric["usage_hours"].mean, float(sample["usage_hours"].mean()), rel_tol=1e-9)


def test_promotion_carries_the_drift_reference_to_a_separate_store(tmp_path, profile):
    from mlops_core.stages.train import carry_drift_reference

    source, target = LocalObjectStore(tmp_path / "dev"), LocalObjectStore(tmp_path / "prod")
    tags = {"mlops.drift_reference": "ts/a/reference.parquet", "mlops.drift_profile": "ts/a/drift_profile.json"}
    source.put_bytes(tags["mlops.drift_reference"], b"sample")
    source.put_bytes(tags["mlops.drift_profile"], profile.to_json())
    assert carry_drift_reference(source, target, tags) == [tags["mlops.drift_reference"], tags["mlops.drift_profile"]]
    assert ReferenceProfile.from_json(target.get_bytes(tags["mlops.drift_profile"])) == profile
    assert carry_drift_reference(source, target, tags) == []  # a retry copies nothing
    assert carry_drift_reference(source, source, tags) == []  # one store for both
    assert carry_drift_reference(source, LocalObjectStore(tmp_path / "x"), {}) == []  # a version without them
