"""FeatureRepository on Feast's local provider: Parquet offline store, SQLite online store.

Rows are real accepted rows (``validate`` over small CSVs), so the tests see exactly what the
features stage gets from a dataset version.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import INGESTED_AT, churn_row, to_csv

from mlops_core.contract import DatasetContract
from mlops_core.features import FeatureRepository, FeatureRepositoryError
from mlops_core.validation import PANDAS_DTYPES, read_source, validate

JAN = "2024-01-{:02d}T00:00:00Z"
KEYS = ["_entity", "_event_time", "_row_key"]


def accepted(
    contract: DatasetContract, rows: list[dict[str, str]], source: str, ingested_at=INGESTED_AT
) -> pd.DataFrame:
    result = validate(read_source(to_csv(rows), source), contract, source, pd.Timestamp(ingested_at))
    assert result.rejected.empty, result.rejected.to_dict("records")
    return result.accepted


def churn_at(customer: str, day: int, tenure: int, plan: str = "basic", **overrides: str) -> dict[str, str]:
    """A churn row whose tenure encodes which snapshot it is (the day, by convention)."""
    return churn_row(customer, JAN.format(day), tenure_months=str(tenure), plan=plan, **overrides)


# Version 1 and version 2 of the churn dataset; c1 has a row on days 1, 3 and 5 with other values.
V1_ROWS = [
    churn_at("c1", 1, 1, "basic"),
    churn_at("c1", 3, 3, "standard"),
    churn_at("c2", 2, 20, "basic", autopay="false"),
    churn_at("c3", 1, 30, "premium", last_payment_delay_days="5"),
]
V2_ROWS = [
    churn_at("c1", 5, 5, "premium", churned="1"),
    churn_at("c2", 4, 24, "standard"),
    churn_at("c4", 6, 40, "basic"),
]


def make_repo(contract: DatasetContract, root: Path) -> FeatureRepository:
    return FeatureRepository(
        contract, repo_dir=root / "feast", offline_dir=str(root / "offline"), project="test_features"
    )


@pytest.fixture(scope="module")
def churn_contract() -> DatasetContract:
    return DatasetContract.from_yaml(Path(__file__).resolve().parents[2] / "include" / "contracts" / "churn.yaml")


@pytest.fixture(scope="module")
def versions(churn_contract) -> dict[str, pd.DataFrame]:
    return {"v1": accepted(churn_contract, V1_ROWS, "v1.csv"), "v2": accepted(churn_contract, V2_ROWS, "v2.csv")}


@pytest.fixture(scope="module")
def loaded(churn_contract, versions, tmp_path_factory) -> FeatureRepository:
    """A repository with both versions materialized (read-only for the tests that use it)."""
    repo = make_repo(churn_contract, tmp_path_factory.mktemp("loaded"))
    repo.apply()
    for vid, rows in versions.items():
        repo.materialize_version(vid, rows)
    return repo


def request(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    """An entity_df of (entity, event time, row key) with a target column."""
    return pd.DataFrame(
        {
            "_entity": pd.Series([r[0] for r in rows], dtype="string"),
            "_event_time": pd.to_datetime([r[1] for r in rows], utc=True),
            "_row_key": pd.Series([r[2] for r in rows], dtype="string"),
            "churned": pd.array([0] * len(rows), dtype="Int64"),
        }
    )


# ----------------------------------------------------------------------------- registration
def test_apply_is_idempotent_and_types_follow_the_contract(churn_contract, tmp_path):
    import feast.types

    repo = make_repo(churn_contract, tmp_path)
    repo.apply()
    repo.apply()
    make_repo(churn_contract, tmp_path).apply()  # a later run, new process: same objects again

    fresh = make_repo(churn_contract, tmp_path).store
    views = fresh.list_feature_views()
    assert [v.name for v in views] == ["churn_features"]
    assert [e.name for e in fresh.list_entities()] == ["churn_entity"]
    assert [e.join_key for e in fresh.list_entities()] == ["_entity"]
    dtypes = {f.name: f.dtype for f in views[0].features}
    assert list(dtypes) == churn_contract.feature_columns
    assert dtypes["tenure_months"] == feast.types.Int64
    assert dtypes["monthly_charges"] == feast.types.Float64
    assert dtypes["plan"] == feast.types.String
    assert dtypes["autopay"] == feast.types.Bool
    assert "churned" not in dtypes and "customer_id" not in dtypes and "event_time" not in dtypes
    assert (tmp_path / "feast" / "registry.db").is_file()


# ----------------------------------------------------------------------------- offline / incremental
def test_materialize_writes_one_file_per_version_and_reruns_do_not_duplicate(churn_contract, versions, tmp_path):
    repo = make_repo(churn_contract, tmp_path)
    first = repo.materialize_version("v1", versions["v1"])  # applies by itself on first use
    second = repo.materialize_version("v2", versions["v2"])
    second_again = repo.materialize_version("v2", versions["v2"])
    first_again = repo.materialize_version("v1", versions["v1"])

    assert repo.offline_versions() == ["v1", "v2"]
    offline = tmp_path / "offline"
    # One file per (event date, version), no temp files; the compacted snapshots live apart in _latest/.
    files = sorted(str(p.relative_to(offline)) for p in offline.rglob("*") if p.is_file() and p.parts[-2] != "_latest")
    assert files == [
        "event_date=2024-01-01/version=v1.parquet",
        "event_date=2024-01-02/version=v1.parquet",
        "event_date=2024-01-03/version=v1.parquet",
        "event_date=2024-01-04/version=v2.parquet",
        "event_date=2024-01-05/version=v2.parquet",
        "event_date=2024-01-06/version=v2.parquet",
    ]
    stored = pd.read_parquet(offline)
    assert len(stored) == len(V1_ROWS) + len(V2_ROWS)
    assert not stored["_row_key"].duplicated().any()
    v1_files = [offline / f for f in files if f.endswith("version=v1.parquet")]
    assert sorted(pd.concat(map(pd.read_parquet, v1_files))["_row_key"]) == sorted(versions["v1"]["_row_key"])

    assert first["version_id"] == "v1" and first["offline_rows"] == 4 and first["online_entities"] == 3
    assert first["event_time_min"] == "2024-01-01T00:00:00+00:00"
    assert first["event_time_max"] == "2024-01-03T00:00:00+00:00"
    assert first["seconds"] >= 0
    same = ("version_id", "offline_rows", "event_time_min", "event_time_max")
    assert {k: first_again[k] for k in same} == {k: first[k] for k in same}
    assert {k: v for k, v in second_again.items() if k != "seconds"} == {
        k: v for k, v in second.items() if k != "seconds"
    }
    # Re-running v1 after v2 rewrites only c3 online: c1 and c2 have newer rows from v2.
    assert (first_again["online_entities"], first_again["online_stale_skipped"]) == (1, 2)

    everything = pd.concat(list(versions.values()), ignore_index=True)
    assert len(repo.training_set(everything)) == len(everything)


def test_late_version_does_not_overwrite_newer_online_values(churn_contract, versions, tmp_path):
    repo = make_repo(churn_contract, tmp_path)
    repo.materialize_version("v2", versions["v2"])
    late = repo.materialize_version("v1", versions["v1"])  # older snapshots of c1 and c2, new entity c3

    assert late["online_entities"] == 1 and late["online_stale_skipped"] == 2
    online = repo.online_features(["c1", "c2", "c3"]).set_index("_entity")
    assert online.loc["c1", "tenure_months"] == 5
    assert online.loc["c2", "tenure_months"] == 24
    assert online.loc["c3", "tenure_months"] == 30


# ----------------------------------------------------------------------------- online
def test_online_features_hold_the_latest_row_per_entity(loaded):
    online = loaded.online_features(["c1", "c2", "c3", "c4", "nobody"])

    assert online["_entity"].tolist() == ["c1", "c2", "c3", "c4", "nobody"]
    by_entity = online.set_index("_entity")
    assert by_entity.loc["c1", "tenure_months"] == 5 and by_entity.loc["c1", "plan"] == "premium"  # v2 replaced v1
    assert by_entity.loc["c1", "_event_time"] == pd.Timestamp(JAN.format(5))
    assert by_entity.loc["c2", "tenure_months"] == 24
    assert (
        by_entity.loc["c3", "tenure_months"] == 30 and by_entity.loc["c3", "last_payment_delay_days"] == 5.0
    )  # only in v1
    assert by_entity.loc["c4", "tenure_months"] == 40
    assert by_entity.loc["nobody"].drop("_event_time").isna().all() and pd.isna(by_entity.loc["nobody", "_event_time"])
    assert pd.isna(by_entity.loc["c1", "last_payment_delay_days"])  # nullable float stays null
    assert str(online["tenure_months"].dtype) == "Int64" and str(online["autopay"].dtype) == "boolean"
    assert by_entity.loc["c2", "autopay"] == True  # noqa: E712 - v1 had False, v2 True


# ----------------------------------------------------------------------------- point in time
def test_training_set_is_point_in_time_correct(loaded):
    entity_df = request(
        [
            ("c1", "2023-12-31T00:00:00Z", "before-any-row"),  # c1's rows are all later: no features
            ("c1", "2024-01-02T12:00:00Z", "between-1-and-3"),  # day 3 and day 5 exist, must not leak
            ("c1", "2024-01-03T00:00:00Z", "exactly-3"),  # a row at exactly t counts
            ("c1", "2024-01-04T00:00:00Z", "between-3-and-5"),
            ("c1", "2024-01-10T00:00:00Z", "after-5"),
            ("c2", "2024-01-03T00:00:00Z", "c2-a"),
            ("c2", "2024-01-03T00:00:00Z", "c2-b"),  # same entity and time, another row: both kept
            ("c9", "2024-01-03T00:00:00Z", "unknown-entity"),
        ]
    )
    out = loaded.training_set(entity_df).set_index("_row_key")

    assert len(out) == len(entity_df)
    expected_tenure = {"between-1-and-3": 1, "exactly-3": 3, "between-3-and-5": 3, "after-5": 5, "c2-a": 20, "c2-b": 20}
    assert {k: out.loc[k, "tenure_months"] for k in expected_tenure} == expected_tenure
    assert out.loc["between-1-and-3", "plan"] == "basic" and out.loc["between-3-and-5", "plan"] == "standard"
    assert out.loc["c2-a", "autopay"] == False  # noqa: E712
    for key in ("before-any-row", "unknown-entity"):
        assert out.loc[key, loaded.feature_columns].isna().all()
    assert out.loc["after-5", "churned"] == 0  # the label comes from entity_df, never from the store


def test_training_set_dtypes_and_order_are_deterministic(loaded, versions, churn_contract):
    rows = pd.concat(list(versions.values()), ignore_index=True)
    out = loaded.training_set(rows)

    assert list(out.columns) == [*KEYS, "churned", *churn_contract.feature_columns]
    expected = {"_entity": "string", "_event_time": "datetime64[ns, UTC]", "_row_key": "string"}
    expected.update(
        {c: PANDAS_DTYPES[churn_contract.column(c).type] for c in ["churned", *churn_contract.feature_columns]}
    )
    assert {c: str(t) for c, t in out.dtypes.items()} == expected
    ordered = out.sort_values(["_event_time", "_row_key"], kind="mergesort").reset_index(drop=True)
    pd.testing.assert_frame_equal(out, ordered)
    shuffled = loaded.training_set(rows.sample(frac=1.0, random_state=3))
    pd.testing.assert_frame_equal(out, shuffled)
    # Every row joined at its own event time gets its own values back.
    own = rows.sort_values(["_event_time", "_row_key"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        out[churn_contract.feature_columns], own[churn_contract.feature_columns], check_dtype=False
    )


# ----------------------------------------------------------------------------- other contracts
def test_contract_without_entity_key_uses_the_row_key_as_entity(keyless, tmp_path):
    repo = make_repo(keyless, tmp_path)
    first = accepted(
        keyless,
        [{"x": "1.5", "flag": "true", "y": "1"}, {"x": "2.5", "flag": "", "y": "2"}],
        "a.csv",
        ingested_at="2024-02-01T00:00:00Z",
    )
    second = accepted(keyless, [{"x": "3.5", "flag": "false", "y": "3"}], "b.csv", ingested_at="2024-02-02T00:00:00Z")
    assert (first["_entity"] == first["_row_key"]).all()
    repo.materialize_version("a", first)
    result = repo.materialize_version("b", second)
    assert result["online_entities"] == 1

    rows = pd.concat([first, second], ignore_index=True)
    out = repo.training_set(rows).set_index("_row_key")
    assert len(out) == 3
    for _, row in rows.iterrows():
        got = out.loc[row["_row_key"]]
        assert got["x"] == row["x"] and got["y"] == row["y"]
        assert (pd.isna(got["flag"]) and pd.isna(row["flag"])) or got["flag"] == row["flag"]
    assert str(out["flag"].dtype) == "boolean" and str(out["y"].dtype) == "Int64"
    online = repo.online_features(rows["_row_key"].tolist())
    assert online["x"].tolist() == rows["x"].tolist()


def test_timestamp_and_nullable_int_features_round_trip(tmp_path):
    contract = DatasetContract.from_dict(
        {
            "name": "visits",
            "task": "regression",
            "target": "score",
            "entity_key": "user",
            "event_time": "at",
            "columns": [
                {"name": "user", "type": "string"},
                {"name": "at", "type": "timestamp"},
                {"name": "last_login", "type": "timestamp", "nullable": True},
                {"name": "visits", "type": "int", "nullable": True},
                {"name": "score", "type": "float"},
            ],
        }
    )
    rows = accepted(
        contract,
        [
            {
                "user": "u1",
                "at": "2024-03-01T10:00:00Z",
                "last_login": "2024-02-28T08:30:00Z",
                "visits": "",
                "score": "0.5",
            },
            {"user": "u2", "at": "2024-03-01T11:00:00Z", "last_login": "", "visits": "7", "score": "1.5"},
        ],
        "visits.csv",
    )
    repo = make_repo(contract, tmp_path)
    repo.materialize_version("v1", rows)

    out = repo.training_set(rows).set_index("_entity")
    assert str(out["last_login"].dtype) == "datetime64[ns, UTC]" and str(out["visits"].dtype) == "Int64"
    assert out.loc["u1", "last_login"] == pd.Timestamp("2024-02-28T08:30:00Z") and pd.isna(out.loc["u1", "visits"])
    assert pd.isna(out.loc["u2", "last_login"]) and out.loc["u2", "visits"] == 7
    online = repo.online_features(["u1", "u2"]).set_index("_entity")
    assert online.loc["u1", "last_login"] == pd.Timestamp("2024-02-28T08:30:00Z") and pd.isna(
        online.loc["u1", "visits"]
    )
    assert online.loc["u2", "visits"] == 7


# ----------------------------------------------------------------------------- bad input
def test_bad_input_gets_a_clear_error(churn_contract, versions, tmp_path):
    repo = make_repo(churn_contract, tmp_path)
    with pytest.raises(FeatureRepositoryError, match="no dataset version is materialized"):
        repo.training_set(versions["v1"])
    with pytest.raises(FeatureRepositoryError, match=r"missing column\(s\) \['tenure_months'\]"):
        repo.materialize_version("v1", versions["v1"].drop(columns=["tenure_months"]))
    with pytest.raises(FeatureRepositoryError, match="cannot name an offline file"):
        repo.materialize_version("../escape", versions["v1"])
    broken = versions["v1"].copy()
    broken.loc[0, "_event_time"] = pd.NaT
    with pytest.raises(FeatureRepositoryError, match="null _event_time"):
        repo.materialize_version("v1", broken)
    with pytest.raises(FeatureRepositoryError, match=r"features\.project"):
        _ = FeatureRepository(churn_contract, repo_dir=tmp_path, offline_dir=str(tmp_path / "o"), project="_bad").store
    with pytest.raises(FeatureRepositoryError, match="local folder"):
        FeatureRepository(churn_contract, repo_dir=tmp_path, offline_dir="s3://bucket/features", project="p")
    assert repo.offline_versions() == []  # nothing half-written by the failed calls
    repo.materialize_version("v1", versions["v1"])
    with pytest.raises(FeatureRepositoryError, match=r"missing column\(s\) \['_row_key'\]"):
        repo.training_set(versions["v1"].drop(columns=["_row_key"]))


def test_importing_the_module_does_not_import_feast_or_pandas():
    code = (
        "import sys; import mlops_core.features; "
        "heavy = [m for m in ('feast', 'pandas', 'pyarrow', 'airflow') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
