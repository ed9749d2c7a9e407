"""Tests for mlops_core.demo_data: determinism, contract conformance, signal, drift, files, CLI."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops_core import demo_data
from mlops_core.demo_data import (
    COLUMNS,
    DriftSpec,
    day_file_name,
    generate_day,
    main,
    parse_days,
    write_bad_files,
    write_day_files,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTRACT_YAML = REPO_ROOT / "include" / "contracts" / "churn.yaml"
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
DTYPE_CHECK = {
    "string": pd.api.types.is_string_dtype,
    "category": pd.api.types.is_string_dtype,
    "int": pd.api.types.is_integer_dtype,
    "float": pd.api.types.is_float_dtype,
    "bool": pd.api.types.is_bool_dtype,
    "timestamp": lambda dtype: isinstance(dtype, pd.DatetimeTZDtype) and str(dtype.tz) == "UTC",
}


@pytest.fixture(scope="module")
def contract_columns() -> list[dict]:
    """The column specs of churn.yaml, read straight from the YAML (not through DatasetContract)."""
    return yaml.safe_load(CONTRACT_YAML.read_text(encoding="utf-8"))["columns"]


@pytest.fixture(scope="module")
def train_days() -> pd.DataFrame:
    return pd.concat([generate_day(d) for d in range(3)], ignore_index=True)


def contract_violations(frame: pd.DataFrame, columns: list[dict]) -> list[str]:
    """Every way ``frame`` breaks the contract columns (empty list = conforms)."""
    problems = []
    names = [c["name"] for c in columns]
    if list(frame.columns) != names:
        return [f"columns {list(frame.columns)} != {names}"]
    for spec in columns:
        name, series = spec["name"], frame[spec["name"]]
        if not DTYPE_CHECK[spec["type"]](series.dtype):
            problems.append(f"{name}: dtype {series.dtype} does not fit type {spec['type']}")
        if series.isna().any() and not spec.get("nullable", False):
            problems.append(f"{name}: {int(series.isna().sum())} nulls in a non-nullable column")
        values = series.dropna()
        if "min" in spec and (values < spec["min"]).any():
            problems.append(f"{name}: values below {spec['min']}")
        if "max" in spec and (values > spec["max"]).any():
            problems.append(f"{name}: values above {spec['max']}")
        if "allowed" in spec and not values.isin(spec["allowed"]).all():
            problems.append(f"{name}: values outside {spec['allowed']}: {sorted(set(values) - set(spec['allowed']))}")
    return problems


def features(frame: pd.DataFrame) -> pd.DataFrame:
    """A small numeric design matrix for a quick model."""
    x = frame[["tenure_months", "monthly_charges", "support_calls"]].astype(float)
    x["log_usage"] = np.log1p(frame["usage_hours"])
    x["delay"] = frame["last_payment_delay_days"].fillna(0.0)
    x["delay_missing"] = frame["last_payment_delay_days"].isna().astype(float)
    x["autopay"] = frame["autopay"].astype(float)
    for plan in ("basic", "premium"):
        x[plan] = (frame["plan"] == plan).astype(float)
    return x


def auc_of(model, frame: pd.DataFrame) -> float:
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(frame["churned"], model.predict_proba(features(frame))[:, 1])


@pytest.fixture(scope="module")
def model(train_days: pd.DataFrame):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(
        features(train_days), train_days["churned"]
    )


# ----------------------------------------------------------------------------- determinism
def test_same_arguments_give_equal_frames() -> None:
    spec = DriftSpec("both", start_day=1, strength=0.7)
    pd.testing.assert_frame_equal(
        generate_day(2, rows=300, seed=11, drift=spec), generate_day(2, rows=300, seed=11, drift=spec)
    )


def test_a_day_does_not_depend_on_other_days_or_the_cache() -> None:
    alone = generate_day(4)
    for other in (9, 0, 3):
        generate_day(other, rows=77)
    pd.testing.assert_frame_equal(generate_day(4), alone)
    demo_data._POOL_CACHE.clear()  # as in a fresh process
    pd.testing.assert_frame_equal(generate_day(4), alone)


def test_days_and_seeds_give_different_rows() -> None:
    day0 = generate_day(0, rows=200)
    assert not day0.equals(generate_day(1, rows=200))
    assert not day0.equals(generate_day(0, rows=200, seed=8))
    assert set(day0["event_time"].dt.date) == {date(2026, 1, 1)}
    assert set(generate_day(0, rows=200, start_date=date(2025, 6, 1))["event_time"].dt.date) == {date(2025, 6, 1)}


def test_invalid_arguments_are_rejected_clearly() -> None:
    with pytest.raises(ValueError, match="day must be an integer >= 0"):
        generate_day(-1)
    with pytest.raises(ValueError, match="rows must be an integer >= 1"):
        generate_day(0, rows=0)
    with pytest.raises(TypeError, match="drift must be a DriftSpec"):
        generate_day(0, drift="covariate")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind must be one of"):
        DriftSpec("sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="strength must be a finite number >= 0"):
        DriftSpec("covariate", strength=-1)


# ----------------------------------------------------------------------------- contract
@pytest.mark.parametrize(
    "drift",
    [DriftSpec(), DriftSpec("covariate", 0, 1.0), DriftSpec("concept", 0, 1.0), DriftSpec("both", 0, 2.0)],
    ids=["none", "covariate", "concept", "both-strong"],
)
def test_every_day_conforms_to_the_contract(contract_columns: list[dict], drift: DriftSpec) -> None:
    for day in (0, 7, 400):
        frame = generate_day(day, drift=drift)
        assert contract_violations(frame, contract_columns) == []
        assert len(frame) == 1000


def test_columns_match_the_contract_in_order(contract_columns: list[dict]) -> None:
    assert list(COLUMNS) == [c["name"] for c in contract_columns]
    assert list(generate_day(0, rows=10).columns) == list(COLUMNS)


def test_rows_look_like_entity_snapshots_over_a_day() -> None:
    frame = generate_day(3)
    assert frame["customer_id"].str.fullmatch(r"C\d{6}").all()
    assert not frame.duplicated(["customer_id", "event_time"]).any()
    assert frame["event_time"].is_monotonic_increasing
    day_start = pd.Timestamp("2026-01-04", tz="UTC")
    assert (frame["event_time"] >= day_start).all() and (frame["event_time"] < day_start + pd.Timedelta(days=1)).all()
    hours = frame["event_time"].dt.hour
    assert hours.nunique() == 24  # spread over the whole day
    null_share = frame["last_payment_delay_days"].isna().mean()
    assert 0.06 < null_share < 0.14
    assert 0.1 < frame["churned"].mean() < 0.4
    assert set(frame["plan"]) == {"basic", "standard", "premium"} and set(frame["region"]) == {
        "north",
        "south",
        "east",
        "west",
    }
    by_plan = frame.groupby("plan")["monthly_charges"].mean()
    assert by_plan["basic"] < by_plan["standard"] < by_plan["premium"]


def test_customers_recur_across_days_with_slowly_evolving_attributes() -> None:
    first, later = generate_day(0), generate_day(90)
    both = first.merge(later, on="customer_id", suffixes=("_0", "_90"))
    assert len(both) > 100  # the pool is shared: many customers come back
    growth = both["tenure_months_90"] - both["tenure_months_0"]
    assert growth.between(2, 4).all()  # 90 days later: three months more (+-1 by phase)
    assert (both["region_0"] == both["region_90"]).all()
    plan_kept = (both["plan_0"] == both["plan_90"]).mean()
    assert 0.7 < plan_kept < 1.0  # plans change slowly, but they do change


def test_larger_days_than_the_pool_keep_keys_unique() -> None:
    frame = generate_day(0, rows=12000)
    assert len(frame) == 12000
    assert frame["customer_id"].duplicated().any()  # the same customer twice a day ...
    assert not frame.duplicated(["customer_id", "event_time"]).any()  # ... at different times
    assert frame["event_time"].is_monotonic_increasing


# ----------------------------------------------------------------------------- signal and drift
def test_labels_carry_signal_a_model_can_learn(model, train_days: pd.DataFrame) -> None:
    assert 0.15 < train_days["churned"].mean() < 0.35
    assert auc_of(model, generate_day(3)) > 0.75


def test_covariate_drift_moves_the_features_from_start_day_on() -> None:
    spec = DriftSpec("covariate", start_day=5)
    pd.testing.assert_frame_equal(generate_day(4, drift=spec), generate_day(4))  # before start_day: unchanged
    base, shifted = generate_day(6), generate_day(6, drift=spec)
    assert shifted["usage_hours"].mean() < 0.6 * base["usage_hours"].mean()
    assert shifted["support_calls"].mean() > 1.6 * base["support_calls"].mean()
    assert shifted["monthly_charges"].mean() > 1.1 * base["monthly_charges"].mean()
    assert (shifted["plan"] == "basic").mean() > (base["plan"] == "basic").mean() + 0.15
    # same customers and times, untouched columns identical
    for col in ("customer_id", "event_time", "tenure_months", "region", "autopay"):
        assert shifted[col].equals(base[col]), col
    half = generate_day(6, drift=DriftSpec("covariate", 5, strength=0.5))
    assert shifted["usage_hours"].mean() < half["usage_hours"].mean() < base["usage_hours"].mean()


def test_concept_drift_changes_the_label_relationship_only(model) -> None:
    spec = DriftSpec("concept", start_day=5)
    base, drifted = generate_day(6), generate_day(6, drift=spec)
    # features unchanged, labels changed
    pd.testing.assert_frame_equal(drifted.drop(columns="churned"), base.drop(columns="churned"))
    assert (drifted["churned"] != base["churned"]).mean() > 0.15
    # P(churn | autopay) flips: autopay customers churn less before, more after
    rate = lambda f: f.groupby("autopay")["churned"].mean()  # noqa: E731
    assert rate(base)[True] < rate(base)[False]
    assert rate(drifted)[True] > rate(drifted)[False]
    # P(churn | many support calls) flips too
    many = base["support_calls"] >= 3
    assert base.loc[many, "churned"].mean() > base.loc[~many, "churned"].mean()
    assert drifted.loc[many, "churned"].mean() < drifted.loc[~many, "churned"].mean()
    # a model trained before the drift degrades clearly
    assert auc_of(model, base) > 0.75
    assert auc_of(model, drifted) < 0.55


def test_both_drifts_at_once() -> None:
    base, both = generate_day(6), generate_day(6, drift=DriftSpec("both", 5))
    covariate = generate_day(6, drift=DriftSpec("covariate", 5))
    pd.testing.assert_frame_equal(both.drop(columns="churned"), covariate.drop(columns="churned"))
    assert not both["churned"].equals(covariate["churned"])
    assert both["usage_hours"].mean() < 0.6 * base["usage_hours"].mean()


# ----------------------------------------------------------------------------- files
def test_write_day_files_names_and_csv_content(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    paths = write_day_files(drop, [0, 2], rows=50, seed=3)
    assert [p.name for p in paths] == ["churn_2026-01-01.csv", "churn_2026-01-03.csv"]
    assert sorted(p.name for p in drop.iterdir()) == ["churn_2026-01-01.csv", "churn_2026-01-03.csv"]  # no temp left
    text = pd.read_csv(paths[1], dtype=str, keep_default_na=False)
    assert list(text.columns) == list(COLUMNS)
    assert text["event_time"].str.match(ISO_Z).all()
    assert set(text["autopay"]) <= {"true", "false"}
    expected = generate_day(2, rows=50, seed=3)
    assert (text["last_payment_delay_days"] == "").sum() == expected["last_payment_delay_days"].isna().sum()
    assert (pd.to_datetime(text["event_time"], utc=True) == expected["event_time"]).all()
    assert (text["customer_id"] == expected["customer_id"]).all()
    np.testing.assert_allclose(text["monthly_charges"].astype(float), expected["monthly_charges"])
    assert (text["autopay"] == expected["autopay"].map({True: "true", False: "false"})).all()
    # re-writing the same day gives identical bytes
    before = paths[0].read_bytes()
    write_day_files(drop, [0], rows=50, seed=3)
    assert paths[0].read_bytes() == before


def test_write_day_files_parquet_round_trip(tmp_path: Path) -> None:
    (path,) = write_day_files(tmp_path, [1], fmt="parquet", rows=40, start_date=date(2025, 2, 28))
    assert path.name == "churn_2025-03-01.parquet"
    back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(back, generate_day(1, rows=40, start_date=date(2025, 2, 28)), check_dtype=False)
    assert isinstance(back["event_time"].dtype, pd.DatetimeTZDtype)


def test_files_are_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    renames: list[tuple[Path, Path, int, bool]] = []
    real_replace = os.replace

    def spy(src, dst):
        src, dst = Path(src), Path(dst)
        renames.append((src, dst, src.stat().st_size, dst.exists()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    (path,) = write_day_files(tmp_path, [0], rows=30)
    ((src, dst, size, existed),) = renames
    assert src.name.startswith(".") and src.parent == dst.parent == tmp_path
    assert dst == path and not existed  # the final name appears only by the rename, complete
    assert size == path.stat().st_size

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        write_day_files(tmp_path, [5], rows=30)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp file, no half file


def test_write_day_files_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fmt must be 'csv' or 'parquet'"):
        write_day_files(tmp_path, [0], fmt="json")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown argument"):
        write_day_files(tmp_path, [0], row=5)
    assert day_file_name(31) == "churn_2026-02-01.csv"


def test_bad_files_contain_what_they_say(tmp_path: Path, contract_columns: list[dict]) -> None:
    problems = write_bad_files(tmp_path, 0)
    assert set(problems) == {"churn_2026-01-01_bad_rows.csv", "churn_2026-01-01_missing_column.csv"}

    bad = pd.read_csv(tmp_path / "churn_2026-01-01_bad_rows.csv", dtype=str, keep_default_na=False)
    assert list(bad.columns) == list(COLUMNS) and len(bad) == 60
    too_high = pd.to_numeric(bad["usage_hours"], errors="coerce") > 744
    unknown_plan = ~bad["plan"].isin(["basic", "standard", "premium"])
    not_numeric = pd.to_numeric(bad["support_calls"], errors="coerce").isna()
    assert too_high.sum() == unknown_plan.sum() == not_numeric.sum() == 1
    assert bad.loc[unknown_plan, "plan"].item() == "platinum" and bad.loc[not_numeric, "support_calls"].item() == "lots"
    description = problems["churn_2026-01-01_bad_rows.csv"]
    for flag in (too_high, unknown_plan, not_numeric):
        row = int(np.flatnonzero(flag)[0])
        assert f"data row {row + 1} (file line {row + 2})" in description
    assert "usage_hours" in description and "platinum" in description and "lots" in description

    # the other rows are valid: typed back they conform to the contract
    good = bad[~(too_high | unknown_plan | not_numeric)].reset_index(drop=True)
    typed = pd.read_csv(io.StringIO(good.to_csv(index=False)), keep_default_na=True)
    typed["event_time"] = pd.to_datetime(typed["event_time"], utc=True)
    typed["autopay"] = typed["autopay"].astype(bool)
    for col in ("customer_id", "plan", "region"):
        typed[col] = typed[col].astype("string")
    assert contract_violations(typed, contract_columns) == []

    # the bad rows are other rows than the regular file of that day
    regular = generate_day(0)
    keys = set(zip(regular["customer_id"], regular["event_time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"), strict=True))
    assert not keys & set(zip(bad["customer_id"], bad["event_time"], strict=True))

    missing = pd.read_csv(tmp_path / "churn_2026-01-01_missing_column.csv")
    assert "usage_hours" not in missing.columns
    assert set(missing.columns) == set(COLUMNS) - {"usage_hours"}
    assert "usage_hours" in problems["churn_2026-01-01_missing_column.csv"]

    # deterministic
    again = tmp_path / "again"
    assert write_bad_files(again, 0) == problems
    for name in problems:
        assert (again / name).read_bytes() == (tmp_path / name).read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ----------------------------------------------------------------------------- CLI
def test_parse_days() -> None:
    assert parse_days("0-2") == [0, 1, 2]
    assert parse_days("4") == [4]
    assert parse_days("5,0,3-4,3") == [0, 3, 4, 5]
    for bad in ("", "2-1", "a", "-3", "1-x"):
        with pytest.raises(ValueError, match="day spec"):
            parse_days(bad)


def test_cli_writes_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "--drop-zone",
            str(tmp_path),
            "--days",
            "4-6",
            "--drift",
            "covariate",
            "--drift-start",
            "5",
            "--rows",
            "40",
            "--bad-files",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "churn_2026-01-05.csv",
        "churn_2026-01-05_bad_rows.csv",
        "churn_2026-01-05_missing_column.csv",
        "churn_2026-01-06.csv",
        "churn_2026-01-07.csv",
    ]
    assert all(name in out for name in names)
    assert "day 4, 40 rows, no drift" in out and "day 5, 40 rows, covariate drift from day 5" in out
    written = pd.read_csv(tmp_path / "churn_2026-01-07.csv")
    expected = generate_day(6, rows=40, drift=DriftSpec("covariate", 5))
    np.testing.assert_allclose(written["usage_hours"], expected["usage_hours"])

    assert main(["--drop-zone", str(tmp_path), "--days", "x"]) == 2
    assert "invalid day spec" in capsys.readouterr().err


def test_cli_runs_as_a_module(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mlops_core.demo_data", "--drop-zone", str(tmp_path), "--days", "0", "--rows", "20"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "churn_2026-01-01.csv" in proc.stdout
    assert pd.read_csv(tmp_path / "churn_2026-01-01.csv").shape == (20, len(COLUMNS))


def test_day_file_names_follow_the_start_date() -> None:
    start = date(2024, 12, 31)
    assert (
        day_file_name(1, start_date=start, fmt="parquet") == f"churn_{(start + timedelta(days=1)).isoformat()}.parquet"
    )
