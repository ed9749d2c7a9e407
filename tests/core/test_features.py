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


# ----------------------------------------------------------------------------- partitioned layout
def day_rows(customer_days: list[tuple[str, int, int]], month: str = "2024-03") -> list[dict[str, str]]:
    """(customer, day of month, tenure) -> churn rows at noon of that day."""
    return [churn_row(c, f"{month}-{d:02d}T12:00:00Z", tenure_months=str(t), plan="basic") for c, d, t in customer_days]


def repo_with_ttl(contract: DatasetContract, root: Path, ttl_days: int) -> FeatureRepository:
    return FeatureRepository(
        contract, repo_dir=root / "feast", offline_dir=str(root / "offline"), project="test_features", ttl_days=ttl_days
    )


def test_old_rows_before_the_window_are_found_through_the_snapshot_and_ttl_holds(churn_contract, tmp_path):
    """Rows weeks before the requests come from the compacted snapshot; the TTL is checked per request."""
    repo = repo_with_ttl(churn_contract, tmp_path / "long", 3650)
    short = repo_with_ttl(churn_contract, tmp_path / "short", 10)
    old = day_rows([("old", 1, 1), ("both", 2, 2), ("late", 3, 3)])
    new = day_rows([("both", 27, 27), ("late", 29, 29), ("filler", 28, 28)])
    for r in (repo, short):
        r.materialize_version("old", accepted(churn_contract, old, "old.csv"))
        r.materialize_version("new", accepted(churn_contract, new, "new.csv"))
    assert list((tmp_path / "long" / "offline" / "_latest").glob("before=*.parquet"))  # snapshots kept up to date

    entity_df = request(
        [
            ("old", "2024-03-28T00:00:00Z", "old-only-row-weeks-ago"),
            ("both", "2024-03-28T00:00:00Z", "both-newer-row-wins"),
            ("both", "2024-03-27T11:59:59Z", "both-just-before-the-new-row"),
            ("late", "2024-03-28T00:00:00Z", "late-row-after-request-unused"),
            ("nobody", "2024-03-28T00:00:00Z", "no-offline-row"),
            ("old", "2024-03-28T00:00:00Z", "old-duplicate-request"),
        ]
    )
    out = repo.training_set(entity_df).set_index("_row_key")
    assert len(out) == len(entity_df)
    assert out.loc["old-only-row-weeks-ago", "tenure_months"] == 1
    assert out.loc["old-duplicate-request", "tenure_months"] == 1
    assert out.loc["both-newer-row-wins", "tenure_months"] == 27
    assert out.loc["both-just-before-the-new-row", "tenure_months"] == 2
    assert out.loc["late-row-after-request-unused", "tenure_months"] == 3  # the day-29 row is after the request
    assert out.loc["no-offline-row", repo.feature_columns].isna().all()

    limited = short.training_set(entity_df).set_index("_row_key")
    assert pd.isna(limited.loc["old-only-row-weeks-ago", "tenure_months"])  # 27 days old > 10-day TTL
    assert pd.isna(limited.loc["late-row-after-request-unused", "tenure_months"])
    assert limited.loc["both-newer-row-wins", "tenure_months"] == 27  # within the TTL


def test_training_set_reads_only_the_window_partitions_and_one_snapshot(churn_contract, tmp_path):
    """Partitions older than the snapshot grid date before the window are never opened."""
    import os

    repo = make_repo(churn_contract, tmp_path)
    for day in range(1, 31):
        rows = day_rows([(f"c{day % 4}", day, day), (f"d{day}", day, 100 + day)])
        repo.materialize_version(f"v{day:02d}", accepted(churn_contract, rows, f"{day}.csv"))
    offline = tmp_path / "offline"
    early = sorted(offline.glob("event_date=2024-03-0[1-9]/version=*.parquet"))
    assert len(early) == 9
    for path in early:  # unreadable now, but with the same name, size and time: any read of them fails
        stat = path.stat()
        path.write_bytes(b"x" * stat.st_size)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    fresh = make_repo(churn_contract, tmp_path)
    entity_df = request(
        [
            ("d3", "2024-03-29T00:00:00Z", "d3"),
            ("c1", "2024-03-29T00:00:00Z", "c1"),
            ("c2", "2024-03-29T00:00:00Z", "c2"),
        ]
    )
    out = fresh.training_set(entity_df).set_index("_row_key")
    assert out.loc["d3", "tenure_months"] == 103  # day 3's row, from the snapshot
    assert out.loc["c1", "tenure_months"] == 25  # c1 = days 1, 5, ..., 25 (day % 4 == 1)
    assert out.loc["c2", "tenure_months"] == 26

    for path in early:  # the file set changed: the snapshot is not trusted any more and is rebuilt
        path.unlink()
    out = make_repo(churn_contract, tmp_path).training_set(entity_df).set_index("_row_key")
    assert pd.isna(out.loc["d3", "tenure_months"])
    assert out.loc["c1", "tenure_months"] == 25


def test_feast_materialize_reads_the_partitioned_layout(churn_contract, versions, tmp_path):
    """Feast's own ``materialize`` (pull_latest of the offline-store plugin) also works on the layout."""
    from datetime import datetime

    repo = make_repo(churn_contract, tmp_path)
    for vid, rows in versions.items():
        repo.materialize_version(vid, rows)
    other = FeatureRepository(
        churn_contract, repo_dir=tmp_path / "other", offline_dir=str(tmp_path / "offline"), project="test_features"
    )
    other.apply()
    other.store.materialize(
        start_date=datetime(2024, 1, 1), end_date=datetime(2024, 1, 4), feature_views=["churn_features"]
    )
    online = other.online_features(["c1", "c2", "c4"]).set_index("_entity")
    assert online.loc["c1", "tenure_months"] == 3  # latest up to Jan 4: day 3 (day 5 is later)
    assert online.loc["c2", "tenure_months"] == 24  # Jan 4 00:00 is inside [start, end]
    assert pd.isna(online.loc["c4", "tenure_months"])  # only on Jan 6


def test_snapshot_is_not_used_when_an_older_partition_changes(churn_contract, tmp_path):
    repo = make_repo(churn_contract, tmp_path)
    repo.materialize_version("a", accepted(churn_contract, day_rows([("x", 1, 1)]), "a.csv"))
    repo.materialize_version("b", accepted(churn_contract, day_rows([("y", 25, 25)]), "b.csv"))
    entity_df = request([("x", "2024-03-28T00:00:00Z", "x")])
    assert repo.training_set(entity_df).loc[0, "tenure_months"] == 1
    # A late version adds a newer row of x from day 10: the snapshot covering day 10 must not hide it.
    repo.materialize_version("late", accepted(churn_contract, day_rows([("x", 10, 10)]), "late.csv"))
    assert make_repo(churn_contract, tmp_path).training_set(entity_df).loc[0, "tenure_months"] == 10


def test_rematerializing_a_version_moves_its_rows_between_dates_without_duplicates(churn_contract, tmp_path):
    repo = make_repo(churn_contract, tmp_path)
    repo.materialize_version("v", accepted(churn_contract, day_rows([("x", 1, 1), ("y", 2, 2)]), "v.csv"))
    repo.materialize_version("v", accepted(churn_contract, day_rows([("x", 3, 3)]), "v.csv"))
    offline = tmp_path / "offline"
    assert sorted(str(p.relative_to(offline)) for p in offline.glob("event_date=*/*")) == [
        "event_date=2024-03-03/version=v.parquet"
    ]
    out = repo.training_set(request([("x", "2024-03-20T00:00:00Z", "x"), ("y", "2024-03-20T00:00:00Z", "y")]))
    assert out.set_index("_row_key").loc["x", "tenure_months"] == 3
    assert pd.isna(out.set_index("_row_key").loc["y", "tenure_months"])


def test_old_flat_layout_is_moved_into_partitions(churn_contract, versions, tmp_path):
    repo = make_repo(churn_contract, tmp_path)
    repo.materialize_version("v1", versions["v1"])
    offline = tmp_path / "offline"
    flat = pd.concat(map(pd.read_parquet, sorted(offline.glob("event_date=*/version=v1.parquet"))))
    for path in offline.glob("event_date=*"):
        for f in path.iterdir():
            f.unlink()
        path.rmdir()
    flat.to_parquet(offline / "version=v1.parquet", index=False)  # what the earlier layout wrote

    moved = make_repo(churn_contract, tmp_path)
    moved.apply()
    assert not (offline / "version=v1.parquet").exists()
    assert moved.offline_versions() == ["v1"]
    out = moved.training_set(versions["v1"])
    own = versions["v1"].set_index("_row_key")["tenure_months"]
    assert out.set_index("_row_key")["tenure_months"].to_dict() == own.to_dict()  # each row at its own time


@pytest.mark.parametrize("ttl_days", [3650, 9, 3])
def test_training_set_matches_a_brute_force_point_in_time_join(churn_contract, tmp_path, ttl_days):
    """Random rows over 60 days in 6 versions (out of order), random requests: same answer as a naive join."""
    import numpy as np

    rng = np.random.default_rng(ttl_days)
    repo = repo_with_ttl(churn_contract, tmp_path, ttl_days)
    start = pd.Timestamp("2024-01-01T00:00:00Z")
    all_rows = []
    for version in rng.permutation(6):
        raw = []
        for i in range(40):
            at = start + pd.Timedelta(seconds=int(rng.integers(0, 60 * 86400)))
            raw.append(
                churn_row(
                    f"e{rng.integers(0, 12)}", at.strftime("%Y-%m-%dT%H:%M:%SZ"), tenure_months=str(40 * version + i)
                )
            )
        rows = accepted(churn_contract, raw, f"r{version}.csv")
        repo.materialize_version(f"r{version}", rows)
        all_rows.append(rows)
    stored = pd.concat(all_rows, ignore_index=True)
    asks = [
        (
            f"e{rng.integers(0, 14)}",
            (start + pd.Timedelta(seconds=int(rng.integers(20 * 86400, 62 * 86400)))).isoformat(),
            f"q{i}",
        )
        for i in range(150)
    ]
    asks += [(r["_entity"], r["_event_time"].isoformat(), f"own{i}") for i, r in stored.head(20).iterrows()]
    out = repo.training_set(request(asks)).set_index("_row_key")

    ttl = pd.Timedelta(days=ttl_days)
    for entity, at, key in asks:
        t = pd.Timestamp(at)
        seen = stored[(stored["_entity"] == entity) & (stored["_event_time"] <= t) & (stored["_event_time"] >= t - ttl)]
        if seen.empty:
            assert pd.isna(out.loc[key, "tenure_months"]), key
        else:
            best = seen.sort_values(["_event_time", "_row_key"]).iloc[-1]
            assert out.loc[key, "tenure_months"] == best["tenure_months"], key


def test_rows_of_one_entity_at_the_same_time_resolve_the_same_way_whatever_the_order(churn_contract, tmp_path):
    """A row of x at the same instant in two versions (a re-delivery, same row key): the result does
    not depend on the order of materialization (the larger version id wins, snapshot or not)."""
    first = accepted(churn_contract, day_rows([("x", 5, 1)]), "first.csv")
    second = accepted(churn_contract, day_rows([("x", 5, 2)]), "second.csv")
    assert first["_row_key"].iloc[0] == second["_row_key"].iloc[0]
    filler = accepted(churn_contract, day_rows([("y", 25, 25)]), "filler.csv")  # snapshots past day 5
    entity_df = request([("x", "2024-03-28T00:00:00Z", "later"), ("x", "2024-03-05T12:00:00Z", "exact")])
    orders = {"ab": [("va", first), ("vb", second)], "ba": [("vb", second), ("va", first)]}
    for name, order in orders.items():
        repo = make_repo(churn_contract, tmp_path / name)
        for vid, rows in order:
            repo.materialize_version(vid, rows)
        repo.materialize_version("vz", filler)
        out = repo.training_set(entity_df).set_index("_row_key")
        assert out["tenure_months"].tolist() == [2, 2], name
        late_only = repo.training_set(entity_df.iloc[:1])  # window from Mar 28: day 5 is in the snapshot
        assert late_only["tenure_months"].tolist() == [2], name
