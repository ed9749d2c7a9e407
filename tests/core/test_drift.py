"""Tests for mlops_core.drift on the demo data (real Evidently runs; each costs about a second)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_core.contract import DatasetContract
from mlops_core.demo_data import DriftSpec, generate_day
from mlops_core.drift import DriftResult, DriftThresholds, detect_drift

REPO_ROOT = Path(__file__).resolve().parents[2]
FEATURES = [
    "tenure_months",
    "monthly_charges",
    "usage_hours",
    "support_calls",
    "last_payment_delay_days",
    "plan",
    "region",
    "autopay",
]
COVARIATE = DriftSpec("covariate", start_day=5)


@pytest.fixture(scope="module")
def contract() -> DatasetContract:
    return DatasetContract.from_yaml(REPO_ROOT / "include" / "contracts" / "churn.yaml")


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    """1000 rows: Evidently tests every column with a p-value test (K-S, chi-square, Z)."""
    return generate_day(0)


@pytest.fixture(scope="module")
def big_reference() -> pd.DataFrame:
    """2000 rows: above 1000 rows Evidently switches to distances (Wasserstein, Jensen-Shannon)."""
    return pd.concat([generate_day(0), generate_day(1)], ignore_index=True)


@pytest.fixture(scope="module")
def no_drift(reference, contract) -> tuple[DriftResult, str]:
    return detect_drift(reference, generate_day(2), contract, DriftThresholds())


@pytest.fixture(scope="module")
def covariate(reference, contract) -> tuple[DriftResult, str]:
    return detect_drift(reference, generate_day(6, drift=COVARIATE), contract, DriftThresholds())


def pipeline_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as the ingest stage stores it: nullable Int64/Float64/boolean/string, with pd.NA."""
    out = frame.copy()
    for col in ("tenure_months", "support_calls", "churned"):
        out[col] = out[col].astype("Int64")
    for col in ("monthly_charges", "usage_hours", "last_payment_delay_days"):
        out[col] = out[col].astype("Float64")
    out["autopay"] = out["autopay"].astype("boolean")
    out.loc[out.index[::25], "autopay"] = pd.NA
    for col in ("customer_id", "plan", "region"):
        out[col] = out[col].astype("string")
    out["_row_key"] = [f"k{i}" for i in range(len(out))]  # pipeline columns are ignored
    return out


def test_two_days_without_drift_are_not_flagged(no_drift) -> None:
    result, page = no_drift
    assert result.drifted is False
    assert result.share_drifted < 0.3
    assert set(result.column_scores) == set(FEATURES)  # only the contract's features, never target/key/time
    assert set(result.column_methods.values()) <= {"ks", "chisquare", "z"}
    assert result.column_methods["usage_hours"] == "ks" and result.column_methods["plan"] == "chisquare"
    assert result.column_methods["autopay"] == "z"
    assert (result.reference_rows, result.current_rows) == (1000, 1000)
    assert result.reason.startswith(f"{len(result.drifted_columns)} of 8 columns drifted (")
    assert "< 30%" in result.reason
    assert "<html" in page.lower() and len(page) > 10_000


def test_covariate_drift_is_detected(covariate, no_drift) -> None:
    result, page = covariate
    assert result.drifted is True
    assert result.share_drifted >= 0.3
    assert {"usage_hours", "support_calls", "plan", "monthly_charges"} <= set(result.drifted_columns)
    assert result.column_scores["usage_hours"] < 1e-6  # a K-S p-value
    assert result.column_scores["usage_hours"] < no_drift[0].column_scores["usage_hours"]
    n = len(result.drifted_columns)
    assert result.share_drifted == pytest.approx(n / 8)
    assert result.reason.startswith(f"{n} of 8 columns drifted ({n / 8:.0%} >= 30%): ")
    assert "usage_hours" in result.reason
    assert "<html" in page.lower() and "usage_hours" in page


def test_distance_methods_on_a_larger_reference(big_reference, contract) -> None:
    drifted, _ = detect_drift(big_reference, generate_day(6, drift=COVARIATE), contract, DriftThresholds())
    assert drifted.column_methods["usage_hours"] == "wasserstein"
    assert drifted.column_methods["plan"] == "jensenshannon"
    assert drifted.drifted and "usage_hours" in drifted.drifted_columns
    assert drifted.column_scores["usage_hours"] >= 0.1  # Evidently's default distance threshold

    # Concept drift leaves the feature distributions alone: data drift does not see it (the
    # monitor stage catches it through the model's quality instead).
    concept, _ = detect_drift(
        big_reference, generate_day(6, drift=DriftSpec("concept", 5)), contract, DriftThresholds()
    )
    assert concept.drifted is False and concept.drifted_columns == []
    assert all(score < 0.1 for score in concept.column_scores.values())


def test_column_p_value_threshold_is_applied(reference, contract, no_drift) -> None:
    lenient_result, _ = no_drift
    strict, _ = detect_drift(reference, generate_day(2), contract, DriftThresholds(column_p_value=0.9))
    # identical data, so identical p-values; a higher threshold calls every p below it drifted
    assert strict.column_scores == pytest.approx(lenient_result.column_scores)
    expected = [c for c in FEATURES if strict.column_scores[c] < 0.9]
    assert sorted(strict.drifted_columns) == sorted(expected)
    assert len(strict.drifted_columns) > len(lenient_result.drifted_columns)


def test_pipeline_nullable_dtypes_are_accepted(reference, contract) -> None:
    current = generate_day(6, drift=COVARIATE)
    result, _ = detect_drift(pipeline_dtypes(reference), pipeline_dtypes(current), contract, DriftThresholds())
    assert set(result.column_scores) == set(FEATURES)
    assert result.drifted and "usage_hours" in result.drifted_columns
    assert np.isfinite(list(result.column_scores.values())).all()


def test_not_enough_rows(reference, contract) -> None:
    result, page = detect_drift(reference, generate_day(3, rows=50), contract, DriftThresholds(min_rows=100))
    assert result.drifted is False and result.share_drifted == 0.0
    assert result.drifted_columns == [] and result.column_scores == {}
    assert (result.reference_rows, result.current_rows) == (1000, 50)
    assert result.reason.startswith("not enough rows (")
    assert "current 50" in result.reason and "100" in result.reason
    assert "<html" in page and "not enough rows" in page and len(page) < 2000


def test_column_empty_on_one_side_counts_as_drifted(reference, contract) -> None:
    current = generate_day(3)
    current["last_payment_delay_days"] = np.nan
    result, _ = detect_drift(reference, current, contract, DriftThresholds())
    assert "last_payment_delay_days" in result.drifted_columns
    assert "last_payment_delay_days" not in result.column_scores
    assert "empty on one side only (counted as drifted): last_payment_delay_days" in result.reason


def test_missing_feature_column_is_a_clear_error(reference, contract) -> None:
    with pytest.raises(ValueError, match=r"current data lacks feature column\(s\) \['usage_hours'\]"):
        detect_drift(reference, generate_day(3).drop(columns="usage_hours"), contract, DriftThresholds())


def test_to_dict_is_json_safe(covariate) -> None:
    result, _ = covariate
    data = result.to_dict()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text) == data
    assert data["drifted"] is True and data["drifted_columns"] == result.drifted_columns
    assert set(data) >= {
        "drifted",
        "share_drifted",
        "drifted_columns",
        "column_scores",
        "reference_rows",
        "current_rows",
        "reason",
    }
    odd = DriftResult(True, 0.5, ["a"], {"a": float("nan"), "b": np.float64(0.2)}, 200, 300, "x")
    assert json.loads(json.dumps(odd.to_dict(), allow_nan=False))["column_scores"] == {"a": None, "b": 0.2}


def test_thresholds_are_validated() -> None:
    with pytest.raises(ValueError, match="drift_share"):
        DriftThresholds(drift_share=0)
    with pytest.raises(ValueError, match="column_p_value"):
        DriftThresholds(column_p_value=1.5)
    with pytest.raises(ValueError, match="min_rows"):
        DriftThresholds(min_rows=0)


def test_importing_the_module_is_cheap() -> None:
    code = "import sys, mlops_core.drift; print('evidently' in sys.modules, 'pandas' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]
