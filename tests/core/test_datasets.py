"""DatasetStore: immutable content-addressed versions, sources, quarantine, windows, watermarks."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import INGESTED_AT, churn_row, to_csv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_core.contract import EVENT_TIME_COLUMN, ROW_KEY_COLUMN, DatasetContract
from mlops_core.datasets import (
    QUARANTINED,
    DatasetStore,
    DatasetVersionNotFound,
    content_sha256,
    quarantine_identity,
    safe_key_part,
    version_id_for,
)
from mlops_core.storage import LocalObjectStore
from mlops_core.validation import REASON_COLUMN, ROW_NUMBER_COLUMN, read_source, validate

CREATED = "2024-03-01T00:00:00+00:00"


def accepted(contract: DatasetContract, *rows: tuple[str, str], source: str = "batch.csv") -> pd.DataFrame:
    """Validated rows for (customer, event_time) pairs."""
    data = to_csv([churn_row(c, t) for c, t in rows])
    result = validate(read_source(data, source), contract, source, INGESTED_AT)
    assert result.rejected.empty
    return result.accepted


def sources_for(frame: pd.DataFrame, name: str = "batch.csv") -> list[dict]:
    return [
        {
            "key": name,
            "sha256": hashlib.sha256(name.encode()).hexdigest(),
            "rows_accepted": len(frame),
            "rows_rejected": 0,
        }
    ]


def commit(
    ds: DatasetStore, contract: DatasetContract, frame: pd.DataFrame, run_id: str = "run1", created_at: str = CREATED
):
    return ds.commit_version(frame, contract, sources_for(frame), run_id, created_at)


JAN1, JAN2, JAN3 = "2024-01-01T06:00:00Z", "2024-01-02T06:00:00Z", "2024-01-03T06:00:00Z"


class RecordingStore(LocalObjectStore):
    """The real local store, remembering which objects were read."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[str] = []

    def get_bytes(self, key: str) -> bytes:
        self.reads.append(key)
        return super().get_bytes(key)


class FailingManifestStore(LocalObjectStore):
    """Crashes when the manifest (the commit point) is written, like a worker killed mid-commit."""

    def put_bytes(self, key: str, data: bytes) -> None:
        if key.endswith("/manifest.json"):
            raise OSError("simulated crash before the commit point")
        super().put_bytes(key, data)


# --------------------------------------------------------------------------- commit
class TestCommit:
    def test_commit_writes_partitioned_version_and_manifest(self, store, churn):
        frame = accepted(churn, ("a", JAN1), ("b", JAN1), ("c", JAN2))
        result = DatasetStore(store, "churn").commit_version(frame, churn, sources_for(frame), "run1", CREATED)
        manifest = result.manifest
        assert result.created and result.duplicates.empty
        vid = manifest["version_id"]
        assert vid == version_id_for(churn.fingerprint, frame[ROW_KEY_COLUMN]) and len(vid) == 16
        assert manifest["row_count"] == 3 and manifest["parent"] is None and manifest["run_id"] == "run1"
        assert manifest["created_at"] == CREATED and manifest["dataset"] == "churn"
        assert manifest["contract_fingerprint"] == churn.fingerprint
        assert manifest["partitions"] == {
            "2024-01-01": {"rows": 2, "key": f"datasets/churn/versions/{vid}/event_date=2024-01-01/part-0000.parquet"},
            "2024-01-02": {"rows": 1, "key": f"datasets/churn/versions/{vid}/event_date=2024-01-02/part-0000.parquet"},
        }
        assert manifest["checksum"] == hashlib.sha256("\n".join(sorted(frame[ROW_KEY_COLUMN])).encode()).hexdigest()
        assert (
            manifest["schema"]["tenure_months"] == "Int64"
            and manifest["schema"][EVENT_TIME_COLUMN] == "datetime64[ns, UTC]"
        )
        assert manifest["event_time_min"] == "2024-01-01T06:00:00+00:00"
        assert manifest["event_time_max"] == "2024-01-02T06:00:00+00:00"
        assert manifest["sources"] == sources_for(frame)
        assert json.loads(store.get_bytes(f"datasets/churn/versions/{vid}/manifest.json")) == manifest
        assert store.exists(f"datasets/churn/versions/{vid}/row_keys.parquet")

    def test_read_version_round_trips_values_and_dtypes(self, store, churn):
        frame = accepted(churn, ("b", JAN2), ("a", JAN1))
        ds = DatasetStore(store, "churn")
        vid = commit(ds, churn, frame).version_id
        back = ds.read_version(vid)
        expected = frame.sort_values(EVENT_TIME_COLUMN).reset_index(drop=True)
        pd.testing.assert_frame_equal(back, expected)
        assert ds.read_version(vid, columns=["customer_id"]).columns.tolist() == ["customer_id"]

    def test_same_rows_twice_is_one_version(self, store, churn):
        ds = DatasetStore(store, "churn")
        frame = accepted(churn, ("a", JAN1), ("b", JAN2))
        first = commit(ds, churn, frame, run_id="run1")
        again = commit(ds, churn, frame.iloc[::-1], run_id="run2", created_at="2024-04-01T00:00:00+00:00")
        assert first.created and not again.created
        assert again.manifest == first.manifest and again.duplicates.empty
        assert len(ds.list_versions()) == 1

    def test_overlapping_batch_commits_only_new_rows_and_reports_duplicates(self, store, churn):
        ds = DatasetStore(store, "churn")
        first = commit(ds, churn, accepted(churn, ("a", JAN1), ("b", JAN1)), run_id="run1")
        second = commit(ds, churn, accepted(churn, ("b", JAN1), ("c", JAN2)), run_id="run2", created_at="2024-03-02")
        assert second.created
        assert second.manifest["row_count"] == 1 and second.manifest["parent"] == first.version_id
        assert second.duplicates["customer_id"].tolist() == ["b"]
        assert second.duplicates[REASON_COLUMN].tolist() == [f"duplicate_row: already in version {first.version_id}"]
        all_rows = ds.read_versions([m["version_id"] for m in ds.list_versions()])
        assert sorted(all_rows["customer_id"]) == ["a", "b", "c"]

    def test_nothing_new_returns_no_manifest(self, store, churn):
        ds = DatasetStore(store, "churn")
        first = commit(ds, churn, accepted(churn, ("a", JAN1), ("b", JAN1), ("c", JAN1)))
        result = commit(ds, churn, accepted(churn, ("a", JAN1), ("c", JAN1)), run_id="run2")
        assert result.manifest is None and not result.created
        assert result.duplicates["customer_id"].tolist() == ["a", "c"]
        assert set(result.duplicates[REASON_COLUMN]) == {f"duplicate_row: already in version {first.version_id}"}

    def test_rows_repeated_within_one_commit(self, store, churn):
        ds = DatasetStore(store, "churn")
        both = pd.concat(
            [accepted(churn, ("a", JAN1), source="f1.csv"), accepted(churn, ("a", JAN1), ("b", JAN1), source="f2.csv")]
        )
        result = commit(ds, churn, both)
        assert result.manifest["row_count"] == 2
        assert result.duplicates[REASON_COLUMN].tolist() == ["duplicate_row: repeated within this commit"]
        assert ds.read_version(result.version_id).set_index("customer_id").loc["a", "_source"] == "f1.csv"

    def test_retry_of_same_run_ends_like_first_attempt(self, store, churn):
        ds = DatasetStore(store, "churn")
        commit(ds, churn, accepted(churn, ("a", JAN1)), run_id="old")
        batch = accepted(churn, ("a", JAN1), ("b", JAN2))
        first = commit(ds, churn, batch, run_id="run7")
        retry = commit(ds, churn, batch, run_id="run7")
        assert first.created and not retry.created
        assert retry.manifest == first.manifest
        pd.testing.assert_frame_equal(retry.duplicates, first.duplicates)
        assert len(ds.list_versions()) == 2

    def test_version_id_depends_on_contract(self, churn):
        other = DatasetContract.from_dict({**churn.to_dict(), "description": "changed"})
        assert version_id_for(churn.fingerprint, ["k1", "k2"]) == version_id_for(churn.fingerprint, ["k2", "k1"])
        assert version_id_for(churn.fingerprint, ["k1"]) != version_id_for(other.fingerprint, ["k1"])

    def test_commit_rejects_unvalidated_frames(self, store, churn):
        with pytest.raises(ValueError, match="_row_key"):
            DatasetStore(store, "churn").commit_version(pd.DataFrame({"customer_id": ["a"]}), churn, [], "r", CREATED)

    def test_empty_input_commits_nothing(self, store, churn):
        frame = accepted(churn, ("a", JAN1)).iloc[0:0]
        result = commit(DatasetStore(store, "churn"), churn, frame)
        assert result.manifest is None and not result.created and store.list_keys("datasets") == []

    def test_list_versions_ordered_by_created_at_then_id(self, store, churn):
        ds = DatasetStore(store, "churn")
        late = commit(ds, churn, accepted(churn, ("a", JAN1)), run_id="r1", created_at="2024-05-01")
        early = commit(ds, churn, accepted(churn, ("b", JAN1)), run_id="r2", created_at="2024-04-01")
        assert [m["version_id"] for m in ds.list_versions()] == [early.version_id, late.version_id]
        assert ds.latest_version() == late.manifest
        assert ds.get_manifest(early.version_id) == early.manifest

    def test_unknown_version(self, store):
        ds = DatasetStore(store, "churn")
        assert ds.latest_version() is None and ds.list_versions() == []
        with pytest.raises(DatasetVersionNotFound, match="no committed version"):
            ds.get_manifest("0123456789abcdef")

    def test_invalid_dataset_name(self, store):
        with pytest.raises(ValueError, match="letters, digits"):
            DatasetStore(store, "../escape")


# --------------------------------------------------------------------------- crash safety
class TestUncommittedVersions:
    def test_version_without_manifest_is_ignored_then_overwritten(self, tmp_path, churn):
        frame = accepted(churn, ("a", JAN1), ("b", JAN2))
        crashed = DatasetStore(FailingManifestStore(tmp_path / "s"), "churn")
        with pytest.raises(OSError, match="simulated crash"):
            commit(crashed, churn, frame)
        store = LocalObjectStore(tmp_path / "s")
        vid = version_id_for(churn.fingerprint, frame[ROW_KEY_COLUMN])
        leftovers = store.list_keys(f"datasets/churn/versions/{vid}/")
        assert leftovers and not any(k.endswith("manifest.json") for k in leftovers)
        store.put_bytes(f"datasets/churn/versions/{vid}/event_date=1999-01-01/part-0000.parquet", b"garbage")

        ds = DatasetStore(store, "churn")
        assert ds.list_versions() == [] and ds.committed_keys().empty
        with pytest.raises(DatasetVersionNotFound):
            ds.read_version(vid)
        result = commit(ds, churn, frame)  # the retry commits; rows are not reported as duplicates
        assert result.created and result.version_id == vid and result.duplicates.empty
        assert not store.exists(f"datasets/churn/versions/{vid}/event_date=1999-01-01/part-0000.parquet")
        assert len(ds.read_version(vid)) == 2


# --------------------------------------------------------------------------- property: exactly once
POOL_SIZE = 12


@pytest.fixture(scope="module")
def pool(churn) -> pd.DataFrame:
    days = [JAN1, JAN2, JAN3]
    return accepted(churn, *[(f"c{i % 5}", days[i % 3]) for i in range(POOL_SIZE)])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(st.integers(0, POOL_SIZE - 1), max_size=POOL_SIZE + 4), min_size=1, max_size=5))
def test_overlapping_batches_store_every_row_exactly_once(pool, churn, batches):
    with tempfile.TemporaryDirectory() as root:
        ds = DatasetStore(LocalObjectStore(root), "churn")
        for n, batch in enumerate(batches):
            frame = pool.iloc[batch]
            result = commit(ds, churn, frame, run_id=f"run{n}", created_at=f"2024-03-{n + 1:02d}")
            written = result.manifest["row_count"] if result.created else 0
            assert written + len(result.duplicates) == len(frame) or (not result.created and result.duplicates.empty)
        versions = ds.list_versions()
        stored = ds.read_versions([m["version_id"] for m in versions])
        keys = stored[ROW_KEY_COLUMN].tolist() if len(stored) else []
        expected = set(pool.iloc[sorted({i for b in batches for i in b})][ROW_KEY_COLUMN])
        assert len(keys) == len(set(keys)), "a row was stored twice"
        assert set(keys) == expected, "a row was lost or invented"
        assert sum(m["row_count"] for m in versions) == len(expected)
        assert sorted(ds.committed_keys()[ROW_KEY_COLUMN]) == sorted(expected)


# --------------------------------------------------------------------------- sources
class TestSources:
    def test_same_bytes_under_any_name_are_detected(self, store, churn):
        ds = DatasetStore(store, "churn")
        data = to_csv([churn_row("a", JAN1)])
        frame = validate(read_source(data, "monday.csv"), churn, "monday.csv", INGESTED_AT).accepted
        sources = [{"key": "monday.csv", "sha256": content_sha256(data), "rows_accepted": 1, "rows_rejected": 0}]
        result = ds.commit_version(frame, churn, sources, "run1", CREATED)
        assert ds.source_seen(content_sha256(data)) is None  # not recorded before record_sources
        ds.record_sources(sources, result.version_id, "run1")
        assert ds.source_seen(hashlib.sha256(data).hexdigest()) == result.version_id  # e.g. re-sent as tuesday.csv
        assert ds.source_seen(content_sha256(data + b"\n")) is None

    def test_quarantined_source(self, store):
        ds = DatasetStore(store, "churn")
        sha = content_sha256(b"junk")
        keys = ds.record_sources([{"key": "junk.csv", "sha256": sha}], None, "run1")
        assert keys == [f"datasets/churn/sources/{sha}.json"]
        assert ds.source_seen(sha) == QUARANTINED

    def test_bad_checksums(self, store):
        ds = DatasetStore(store, "churn")
        with pytest.raises(ValueError, match="SHA-256"):
            ds.source_seen("../../etc/passwd")
        with pytest.raises(ValueError, match="sha256"):
            ds.record_sources([{"key": "x.csv"}], None, "run1")


# --------------------------------------------------------------------------- quarantine
class TestQuarantine:
    def test_rejected_rows_are_readable_with_reasons(self, store, churn):
        ds = DatasetStore(store, "churn")
        data = to_csv([churn_row("a", plan="gold"), churn_row("b")])
        result = validate(read_source(data, "in/batch.csv"), churn, "in/batch.csv", INGESTED_AT)
        key = ds.quarantine("run1", "in/batch.csv", result.rejected, "1 row rejected")
        record = json.loads(store.get_bytes(key))
        identity = quarantine_identity("file", "in/batch.csv", None)
        assert key == f"quarantine/churn/run1/{identity}/reason.json"
        assert record["rejected_key"] == f"quarantine/churn/run1/{identity}/rejected.parquet"
        assert record["rows_rejected"] == 1 and record["reason"] == "1 row rejected" and record["raw_key"] is None
        assert ds.list_quarantine("run1") == [record]
        rows = ds.read_quarantined_rows(record)
        assert rows["customer_id"].tolist() == ["a"]
        assert rows[REASON_COLUMN].tolist() == ["plan: 'gold' not in allowed ['basic', 'standard', 'premium']"]
        assert rows[ROW_NUMBER_COLUMN].tolist() == [1]

    def test_file_level_reject_keeps_raw_bytes(self, store):
        ds = DatasetStore(store, "churn")
        raw = "name\nJosé\n".encode("latin-1")
        key = ds.quarantine("run1", "latin.csv", None, "not_utf8: not valid UTF-8", raw=raw)
        record = ds.list_quarantine()[0]
        folder = f"quarantine/churn/run1/{quarantine_identity('file', 'latin.csv', None)}"
        assert key == f"{folder}/reason.json"
        assert record["raw_key"] == f"{folder}/raw" and record["source"] == "latin.csv"
        assert store.get_bytes(record["raw_key"]) == raw and record["raw_sha256"] == content_sha256(raw)
        assert ds.read_quarantined_rows(record).empty

    def test_rerun_is_idempotent(self, store, churn):
        ds = DatasetStore(store, "churn")
        rejected = validate(
            read_source(to_csv([churn_row(plan="gold")]), "b.csv"), churn, "b.csv", INGESTED_AT
        ).rejected

        def snapshot() -> dict[str, bytes]:
            return {k: store.get_bytes(k) for k in store.list_keys("quarantine")}

        ds.quarantine("run1", "b.csv", rejected, "1 row rejected", raw=b"x")
        first = snapshot()
        ds.quarantine("run1", "b.csv", rejected, "1 row rejected", raw=b"x")
        assert snapshot() == first and len(first) == 3

    def test_runs_are_separate_and_unsafe_names_are_cleaned(self, store):
        ds = DatasetStore(store, "churn")
        run_id = "manual__2024-03-01T00:00:00+00:00"
        ds.quarantine(run_id, "a.csv", None, "empty", raw=b"")
        ds.quarantine("run1", "a.csv", None, "empty", raw=b"")
        ds.quarantine("run10", "a.csv", None, "empty", raw=b"")
        assert [r["run_id"] for r in ds.list_quarantine("run1")] == ["run1"]
        assert [r["run_id"] for r in ds.list_quarantine(run_id)] == [run_id]
        assert len(ds.list_quarantine()) == 3
        assert all(":" not in k and "+" not in k for k in store.list_keys("quarantine"))
        assert safe_key_part("a.csv") == "a.csv" and safe_key_part("x/a.csv") != safe_key_part("x_a.csv")


# --------------------------------------------------------------------------- windows and watermarks
class TestReadWindow:
    def test_window_reads_only_overlapping_partitions(self, tmp_path, churn):
        store = RecordingStore(tmp_path / "s")
        ds = DatasetStore(store, "churn")
        commit(
            ds, churn, accepted(churn, ("a", "2024-01-01T23:00:00Z"), ("b", JAN2)), run_id="r1", created_at="2024-03-01"
        )
        commit(
            ds, churn, accepted(churn, ("c", "2024-01-02T00:00:00Z"), ("d", JAN3)), run_id="r2", created_at="2024-03-02"
        )
        store.reads.clear()
        window = ds.read_window("2024-01-02", pd.Timestamp("2024-01-03T00:00:00Z"))
        assert sorted(window["customer_id"]) == ["b", "c"]
        parquet_reads = [k for k in store.reads if k.endswith(".parquet")]
        assert len(parquet_reads) == 2 and all("event_date=2024-01-02" in k for k in parquet_reads)

    def test_window_bounds_are_half_open(self, store, churn):
        ds = DatasetStore(store, "churn")
        commit(
            ds,
            churn,
            accepted(
                churn, ("a", "2024-01-01T00:00:00Z"), ("b", "2024-01-01T12:00:00Z"), ("c", "2024-01-02T00:00:00Z")
            ),
        )
        window = ds.read_window("2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", columns=["customer_id"])
        assert window.columns.tolist() == ["customer_id"] and window["customer_id"].tolist() == ["a", "b"]
        assert ds.read_window("2023-01-01", "2023-12-31").empty
        with pytest.raises(ValueError, match="must be after"):
            ds.read_window("2024-01-02", "2024-01-01")


def test_watermarks(store):
    ds = DatasetStore(store, "churn")
    assert ds.watermark("sql:customers") is None
    ds.set_watermark("sql:customers", "2024-01-01T00:00:00+00:00")
    ds.set_watermark("other", 42)
    assert ds.watermark("sql:customers") == "2024-01-01T00:00:00+00:00" and ds.watermark("other") == 42
    assert all(k.startswith("datasets/churn/state/") for k in store.list_keys("datasets/churn/state"))


# --------------------------------------------------------------------------- quarantine keys never collide
class TestQuarantineKeys:
    def test_rejected_rows_and_raw_bytes_of_look_alike_sources_are_both_kept(self, store, churn):
        """Before: rows of 'x' went to 'x.rejected.parquet', the raw bytes of a file named
        'x.rejected.parquet' to the same key; a file named 'duplicate-rows' shared the batch-duplicates key."""
        ds = DatasetStore(store, "churn")
        data = to_csv([churn_row(plan="gold")])
        rejected = validate(read_source(data, "x.csv"), churn, "x.csv", INGESTED_AT).rejected
        ds.quarantine("run1", "x.csv", rejected, "1 row rejected")
        ds.quarantine("run1", "x.csv.rejected.parquet", None, "unsupported_format", raw=b"evidence bytes")
        ds.quarantine("run1", "duplicate-rows", None, "empty", raw=b"delivered file named duplicate-rows")
        ds.quarantine("run1", "duplicate-rows", rejected, "1 duplicate row(s)", kind="batch_duplicates")
        records = {(r["kind"], r["source"]): r for r in ds.list_quarantine("run1")}
        assert len(records) == 4
        assert ds.read_quarantined_rows(records[("file", "x.csv")])["plan"].tolist() == ["gold"]
        assert store.get_bytes(records[("file", "x.csv.rejected.parquet")]["raw_key"]) == b"evidence bytes"
        assert store.get_bytes(records[("file", "duplicate-rows")]["raw_key"]) == b"delivered file named duplicate-rows"
        assert len(ds.read_quarantined_rows(records[("batch_duplicates", "duplicate-rows")])) == 1

    def test_same_name_other_content_in_one_run_keeps_both(self, store):
        ds = DatasetStore(store, "churn")
        ds.quarantine("run1", "a.csv", None, "empty", raw=b"first", content_sha256=content_sha256(b"first"))
        ds.quarantine("run1", "a.csv", None, "empty", raw=b"second", content_sha256=content_sha256(b"second"))
        raws = sorted(store.get_bytes(r["raw_key"]) for r in ds.list_quarantine("run1"))
        assert raws == [b"first", b"second"]

    def test_records_of_the_layout_before_identities_are_still_listed(self, store):
        store.put_bytes("quarantine/churn/run0/old.csv.reason.json", json.dumps({"source": "old.csv"}).encode())
        store.put_bytes("quarantine/churn/run0/old.csv", b"raw")
        assert [r["source"] for r in DatasetStore(store, "churn").list_quarantine("run0")] == ["old.csv"]


_any_text = st.text(st.characters(codec="utf-8") | st.sampled_from(["\udcff", "\udc80", "%", "/", "."]), max_size=12)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    sources=st.lists(
        st.tuples(
            st.sampled_from(["file", "batch_duplicates", "sql_rows", "unparsed_tail"]),
            _any_text,
            st.none() | st.sampled_from([content_sha256(b"a"), content_sha256(b"b")]),
        ),
        min_size=2,
        max_size=8,
        unique=True,
    )
)
def test_distinct_sources_never_share_a_quarantine_key(sources):
    folders = [quarantine_identity(*s) for s in sources]
    assert len(set(folders)) == len(sources)
    keys = [f"{f}/{name}" for f in folders for name in ("raw", "rejected.parquet", "reason.json")]
    assert len(set(keys)) == 3 * len(sources)
    assert all(len(f) == 64 and set(f) <= set("0123456789abcdef") for f in folders)


# --------------------------------------------------------------------------- row-key index
class TestRowKeyIndex:
    def test_a_commit_reads_no_other_version(self, tmp_path, churn):
        """Before: every commit read the manifest and row_keys.parquet of every earlier version."""
        store = RecordingStore(tmp_path / "s")
        ds = DatasetStore(store, "churn")
        for day in range(1, 6):
            commit(ds, churn, accepted(churn, ("a", f"2024-01-0{day}T06:00:00Z")), run_id=f"run{day}")
        store.reads.clear()
        result = commit(ds, churn, accepted(churn, ("a", JAN1), ("b", JAN1)), run_id="run7")
        reads = list(store.reads)
        assert result.created and result.manifest["row_count"] == 1 and len(result.duplicates) == 1
        holder = result.duplicates[REASON_COLUMN].item().rsplit(" ", 1)[-1]
        others = {m["version_id"] for m in ds.list_versions()} - {result.version_id, holder}
        read_versions = {k.split("/")[3] for k in reads if "/versions/" in k}
        assert len(others) == 4 and not read_versions & others, f"a commit read other versions: {sorted(reads)}"
        assert not any(k.endswith("row_keys.parquet") for k in reads)

    def test_duplicates_against_history_are_found_through_the_index(self, store, churn):
        ds = DatasetStore(store, "churn")
        first = commit(ds, churn, accepted(churn, ("a", JAN1), ("b", JAN2)), run_id="run1")
        again = commit(ds, churn, accepted(churn, ("a", JAN1), ("c", JAN3)), run_id="run2")
        assert again.created and again.manifest["row_count"] == 1
        assert again.duplicates[REASON_COLUMN].tolist() == [f"duplicate_row: already in version {first.version_id}"]
        assert again.manifest["parent"] == first.version_id

    def test_a_store_written_before_the_index_is_indexed_on_first_commit(self, store, churn):
        ds = DatasetStore(store, "churn")
        first = commit(ds, churn, accepted(churn, ("a", JAN1), ("b", JAN2)), run_id="run1")
        for key in store.list_keys("datasets/churn/key_index/"):  # the layout the old code left
            store.delete(key)
        again = commit(ds, churn, accepted(churn, ("a", JAN1), ("c", JAN3)), run_id="run2", created_at="2024-03-02")
        assert again.manifest["row_count"] == 1 and len(again.duplicates) == 1
        assert again.manifest["parent"] == first.version_id
        assert store.exists("datasets/churn/key_index/index.json")
        third = commit(ds, churn, accepted(churn, ("b", JAN2), ("c", JAN3)), run_id="run3", created_at="2024-03-03")
        assert third.manifest is None and len(third.duplicates) == 2

    def test_a_crash_after_the_manifest_is_repaired_by_the_next_commit(self, tmp_path, churn):
        class FailingMetaStore(LocalObjectStore):
            fail = False

            def put_bytes(self, key: str, data: bytes) -> None:
                if self.fail and key.endswith("key_index/index.json") and b'"pending": null' in data:
                    raise OSError("simulated crash after the commit point")
                super().put_bytes(key, data)

        crashing = FailingMetaStore(tmp_path / "s")
        ds = DatasetStore(crashing, "churn")
        commit(ds, churn, accepted(churn, ("a", JAN1)), run_id="run1")
        crashing.fail = True
        with pytest.raises(OSError, match="after the commit point"):
            commit(ds, churn, accepted(churn, ("b", JAN2)), run_id="run2", created_at="2024-03-02")
        crashing.fail = False
        second = ds.latest_version()
        assert second is not None and second["run_id"] == "run2"  # committed: the manifest was written
        third = commit(ds, churn, accepted(churn, ("c", JAN3)), run_id="run3", created_at="2024-03-03")
        assert third.manifest["parent"] == second["version_id"]

    def test_rerun_writes_nothing(self, tmp_path, churn):
        ds = DatasetStore(LocalObjectStore(tmp_path / "s"), "churn")
        frame = accepted(churn, ("a", JAN1), ("b", JAN2))
        commit(ds, churn, frame)
        before = {p: p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file()}
        assert not commit(ds, churn, frame).created
        after = {p: p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file()}
        assert after == before

    def test_a_commit_of_one_day_reads_only_that_days_index_objects(self, tmp_path, churn):
        """Before: keys were bucketed by hash, so one day's commit read (and rewrote) every bucket."""
        store = RecordingStore(tmp_path / "s")
        ds = DatasetStore(store, "churn")
        customers = [f"c{i:03d}" for i in range(60)]  # enough keys to fall in every hash bucket
        for day in range(1, 6):
            rows = [(c, f"2024-01-0{day}T06:00:00Z") for c in customers]
            commit(ds, churn, accepted(churn, *rows), run_id=f"run{day}")
        index_objects = sorted(k.rsplit("/", 1)[-1] for k in store.list_keys("datasets/churn/key_index/"))
        assert index_objects == [f"date=2024-01-0{d}.parquet" for d in range(1, 6)] + ["index.json"]
        before = {k: store.get_bytes(k) for k in store.list_keys("datasets/churn/key_index/")}
        store.reads.clear()
        late = [(f"n{i:03d}", "2024-01-03T09:00:00Z") for i in range(60)] + [(customers[0], "2024-01-03T06:00:00Z")]
        result = commit(ds, churn, accepted(churn, *late), run_id="run9", created_at="2024-03-09")
        assert result.created and result.manifest["row_count"] == 60 and len(result.duplicates) == 1
        index_reads = {k.rsplit("/", 1)[-1] for k in store.reads if "/key_index/" in k}
        assert index_reads == {"index.json", "date=2024-01-03.parquet"}, sorted(store.reads)
        after = {k: store.get_bytes(k) for k in store.list_keys("datasets/churn/key_index/")}
        changed = {k.rsplit("/", 1)[-1] for k in after if before.get(k) != after[k]}
        assert changed == {"index.json", "date=2024-01-03.parquet"}

    def test_a_duplicate_delivered_again_days_later_is_found(self, store, churn):
        ds = DatasetStore(store, "churn")
        first = commit(ds, churn, accepted(churn, ("a", JAN1), ("b", JAN1)), run_id="run1")
        for day in range(2, 8):
            commit(ds, churn, accepted(churn, ("a", f"2024-01-0{day}T06:00:00Z")), run_id=f"run{day}")
        data = to_csv([churn_row("b", JAN1), churn_row("z", "2024-01-08T06:00:00Z")])
        later = validate(read_source(data, "late.csv"), churn, "late.csv", pd.Timestamp("2024-03-20T00:00:00Z"))
        again = commit(ds, churn, later.accepted, run_id="run8", created_at="2024-03-20")
        assert again.created and again.manifest["row_count"] == 1
        assert again.duplicates[ROW_KEY_COLUMN].tolist() == later.accepted[ROW_KEY_COLUMN].iloc[:1].tolist()
        assert again.duplicates[REASON_COLUMN].tolist() == [f"duplicate_row: already in version {first.version_id}"]

    def test_a_contract_without_entity_key_and_event_time_keeps_hash_buckets(self, store, keyless):
        """Whole-row keys: ``_event_time`` is the ingestion time, which differs between deliveries."""
        ds = DatasetStore(store, "keyless")

        def delivered(ingested_at: str, *rows: dict[str, str]) -> pd.DataFrame:
            result = validate(read_source(to_csv(list(rows)), "k.csv"), keyless, "k.csv", pd.Timestamp(ingested_at))
            assert result.rejected.empty
            return result.accepted

        row_a, row_b = {"x": "1.5", "flag": "true", "y": "1"}, {"x": "2.5", "flag": "", "y": "2"}
        first = commit(ds, keyless, delivered("2024-02-01T00:00:00Z", row_a), run_id="run1")
        again = commit(ds, keyless, delivered("2024-02-09T00:00:00Z", row_a, row_b), run_id="run2")
        assert again.created and again.manifest["row_count"] == 1
        assert again.duplicates[REASON_COLUMN].tolist() == [f"duplicate_row: already in version {first.version_id}"]
        meta = json.loads(store.get_bytes("datasets/keyless/key_index/index.json"))
        assert meta["scheme"] == "hash" and meta["bucket_chars"] == 1
        names = [k.rsplit("/", 1)[-1] for k in store.list_keys("datasets/keyless/key_index/")]
        assert names and all(n == "index.json" or n.startswith("bucket-") for n in names)

    def test_an_index_of_the_old_format_is_rebuilt_by_event_date(self, store, churn):
        from mlops_core.key_index import RowKeyIndex

        ds = DatasetStore(store, "churn")
        first = commit(ds, churn, accepted(churn, ("a", JAN1), ("b", JAN2)), run_id="run1")
        second = commit(ds, churn, accepted(churn, ("c", JAN2)), run_id="run2", created_at="2024-03-02")
        folder = "datasets/churn/key_index"
        for key in store.list_keys(f"{folder}/"):
            store.delete(key)
        # What the format-1 code left: hash buckets and an index.json without a scheme.
        old = RowKeyIndex(store, "datasets/churn", lambda v: f"datasets/churn/versions/{v}/manifest.json", "hash")
        meta = old.ensure(ds.list_versions, lambda v: ds.committed_keys().query("version_id == @v")[ROW_KEY_COLUMN])
        store.put_bytes(
            f"{folder}/index.json",
            json.dumps({"format": 1, "bucket_chars": 1, "latest": meta["latest"], "pending": None}).encode(),
        )
        assert any("/bucket-" in k for k in store.list_keys(f"{folder}/"))

        third = commit(
            ds, churn, accepted(churn, ("a", JAN1), ("c", JAN2), ("d", JAN3)), run_id="run3", created_at="2024-03-03"
        )
        assert third.created and third.manifest["row_count"] == 1
        assert third.manifest["parent"] == second.version_id
        holders = sorted(r.rsplit(" ", 1)[-1] for r in third.duplicates[REASON_COLUMN])
        assert holders == sorted([first.version_id, second.version_id])
        meta = json.loads(store.get_bytes(f"{folder}/index.json"))
        assert meta["format"] == 2 and meta["scheme"] == "event_date"
        names = sorted(k.rsplit("/", 1)[-1] for k in store.list_keys(f"{folder}/"))
        assert names == ["date=2024-01-01.parquet", "date=2024-01-02.parquet", "date=2024-01-03.parquet", "index.json"]

    def test_the_bucket_of_a_row_is_the_utc_date_of_its_partition(self, store, churn):
        ds = DatasetStore(store, "churn")
        result = commit(ds, churn, accepted(churn, ("a", "2024-01-01T23:30:00-02:00"), ("b", "1969-12-31T23:59:59Z")))
        assert sorted(result.manifest["partitions"]) == ["1969-12-31", "2024-01-02"]
        names = sorted(k.rsplit("/", 1)[-1] for k in store.list_keys("datasets/churn/key_index/"))
        assert names == ["date=1969-12-31.parquet", "date=2024-01-02.parquet", "index.json"]

    def test_the_buckets_are_the_ones_the_datasets_index_names(self, store, churn, monkeypatch):
        """The commit reads, looks up and writes the buckets of the dataset's own index object: not a
        scheme or bucket width recomputed elsewhere (here the index says hash buckets for a contract
        whose default would be event dates)."""
        from mlops_core.key_index import SCHEME_HASH, RowKeyIndex

        def hash_index(self, contract):
            return RowKeyIndex(self.store, self.prefix, self._manifest_key, SCHEME_HASH)

        monkeypatch.setattr(DatasetStore, "_key_index", hash_index)
        ds = DatasetStore(store, "churn")
        customers = [f"c{i:03d}" for i in range(40)]
        first = commit(ds, churn, accepted(churn, *[(c, JAN1) for c in customers]), run_id="run1")
        names = sorted(k.rsplit("/", 1)[-1] for k in store.list_keys("datasets/churn/key_index/"))
        assert names and all(n == "index.json" or n.startswith("bucket-") for n in names), names
        again = commit(ds, churn, accepted(churn, (customers[3], JAN1), ("new", JAN2)), run_id="run2")
        assert again.created and again.manifest["row_count"] == 1
        assert again.duplicates[REASON_COLUMN].tolist() == [f"duplicate_row: already in version {first.version_id}"]

    def test_a_bucket_with_entries_is_merged_in_key_order_streaming(self, tmp_path, churn):
        """A day committed in several versions: the bucket keeps every key once, sorted, each with its version."""
        import pyarrow.parquet as pq

        from mlops_core.spill import ScratchDir

        store = LocalObjectStore(tmp_path / "s")
        ds = DatasetStore(store, "churn")
        model: dict[str, str] = {}
        for run, customers in enumerate([range(0, 300, 2), range(1, 300, 3), range(250, 400)]):
            frame = accepted(churn, *[(f"c{i:04d}", JAN1) for i in customers])
            with ScratchDir(tmp_path / "scratch") as scratch:
                from mlops_core.datasets import StagedRows

                staged = StagedRows(scratch, memory_bytes=2_000)  # many runs and chunks
                staged.add(staged.new_source(), frame)
                result = ds.commit_version(staged, churn, sources_for(frame), f"run{run}", CREATED)
                kept = frame[~frame[ROW_KEY_COLUMN].isin(result.duplicates.get(ROW_KEY_COLUMN, pd.Series()))]
            for key in kept[ROW_KEY_COLUMN]:
                model.setdefault(key, result.version_id)
        bucket = pq.read_table(store.path("datasets/churn/key_index/date=2024-01-01.parquet")).to_pydict()
        assert bucket["_row_key"] == sorted(model)
        assert dict(zip(bucket["_row_key"], bucket["version_id"], strict=True)) == model


def test_a_row_key_with_two_event_times_is_refused_before_any_write(store, churn):
    """A row key stands for one entity at one event time: rows that break this (not made by validate)
    would be indexed under two dates and slip past duplicate detection."""
    ds = DatasetStore(store, "churn")
    frame = accepted(churn, ("a", JAN1), ("b", JAN2), ("c", JAN3))
    forged = frame.copy()
    forged.loc[2, ROW_KEY_COLUMN] = forged.loc[0, ROW_KEY_COLUMN]  # c's row under a's key, two days later
    with pytest.raises(ValueError, match="comes with two event times"):
        commit(ds, churn, forged)
    assert [k for k in store.list_keys("datasets/churn/") if "/key_index/" not in k] == []
    assert ds.list_versions() == []


# --------------------------------------------------------------------------- staged commits
def test_row_keys_as_numbers_sort_and_round_trip_like_the_text():
    import random

    import pyarrow as pa

    from mlops_core.datasets import key_numbers, key_texts

    rng = random.Random(7)
    keys = [f"{rng.getrandbits(128):032x}" for _ in range(500)] + ["0" * 32, "f" * 32, "8" + "0" * 31]
    high, low = key_numbers(pa.array(keys))
    assert [bytes(row).decode() for row in key_texts(high, low)] == keys
    by_number = [keys[i] for i in sorted(range(len(keys)), key=lambda i: (int(high[i]), int(low[i])))]
    assert by_number == sorted(keys)
    for bad in (["A" * 32], ["g" * 32], ["0" * 31]):
        with pytest.raises(ValueError, match="_row_key"):
            key_numbers(pa.array(bad))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(st.lists(st.integers(0, POOL_SIZE - 1), max_size=POOL_SIZE + 4), min_size=1, max_size=4),
    memory=st.integers(200, 5000),
)
def test_a_commit_staged_in_small_runs_equals_the_commit_of_one_frame(pool, churn, batches, memory):
    """Tiny memory: every add is a run, merges go in rounds; the version, rows and duplicates are the same."""
    from mlops_core.datasets import StagedRows
    from mlops_core.spill import ScratchDir

    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as two, ScratchDir(two) as scratch:
        frames = [pool.iloc[b] for b in batches]
        whole = commit(DatasetStore(LocalObjectStore(one), "churn"), churn, pd.concat(frames, ignore_index=True))
        staged = StagedRows(scratch, memory_bytes=memory)
        for frame in frames:
            source = staged.new_source()
            for start in range(0, len(frame), 3):  # several parts per source
                staged.add(source, frame.iloc[start : start + 3])
        ds = DatasetStore(LocalObjectStore(two + "/store"), "churn")
        result = ds.commit_version(staged, churn, sources_for(pd.concat(frames)), "run1", CREATED)
        assert (result.version_id, result.created) == (whole.version_id, whole.created)
        assert result.manifest == whole.manifest
        pd.testing.assert_frame_equal(result.duplicates, whole.duplicates)
        assert result.duplicate_count == len(whole.duplicates)
        if whole.version_id:
            pd.testing.assert_frame_equal(ds.read_version(result.version_id), commit_rows(whole, one))


def commit_rows(result, root: str) -> pd.DataFrame:
    return DatasetStore(LocalObjectStore(root), "churn").read_version(result.version_id)


def test_a_discarded_source_is_not_committed(tmp_path, churn):
    from mlops_core.datasets import StagedRows
    from mlops_core.spill import ScratchDir

    with ScratchDir(tmp_path / "scratch") as scratch:
        staged = StagedRows(scratch, memory_bytes=500)
        kept, dropped = staged.new_source(), staged.new_source()
        staged.add(kept, accepted(churn, ("a", JAN1), ("b", JAN2)))
        staged.add(dropped, accepted(churn, ("c", JAN1)))
        staged.add(dropped, accepted(churn, ("a", JAN1)))
        staged.discard(dropped)
        assert staged.rows == 2
        ds = DatasetStore(LocalObjectStore(tmp_path / "store"), "churn")
        result = ds.commit_version(staged, churn, [], "run1", CREATED)
        assert sorted(ds.read_version(result.version_id)["customer_id"]) == ["a", "b"]
        assert result.duplicate_count == 0


class PlainStore:
    """The real local store behind a class of its own: DatasetStore cannot open its files directly,
    so it reads whole objects through ``get_bytes`` as it does on S3."""

    def __init__(self, inner: LocalObjectStore) -> None:
        self.inner = inner
        self.reads: list[str] = []

    def get_bytes(self, key: str, *, object_version: str | None = None) -> bytes:
        self.reads.append(key)
        return self.inner.get_bytes(key, object_version=object_version)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def test_iter_batches_streams_the_rows_of_versions_in_bounded_batches(store, churn):
    ds = DatasetStore(store, "churn")
    first = commit(ds, churn, accepted(churn, *[(f"c{i}", JAN1) for i in range(40)], ("x", JAN2)), "run1")
    second = commit(ds, churn, accepted(churn, *[(f"d{i}", JAN3) for i in range(25)]), "run2")
    versions = [first.version_id, second.version_id]
    columns = ["usage_hours", "plan"]
    expected = ds.read_versions(versions, columns)
    for reader in (ds, DatasetStore(PlainStore(store), "churn")):
        batches = list(reader.iter_batches(versions, columns=columns, batch_rows=16))
        assert all(b.num_rows <= 16 for b in batches) and len(batches) >= 4
        assert all(b.schema.names == columns for b in batches)
        got = pd.concat([b.to_pandas() for b in batches], ignore_index=True)
        pd.testing.assert_frame_equal(got, expected.reset_index(drop=True))
    plain = PlainStore(store)
    list(DatasetStore(plain, "churn").iter_batches(versions, columns=columns))
    assert sum("/versions/" in k and k.endswith(".parquet") for k in plain.reads) == 3  # one read per partition
    with pytest.raises(DatasetVersionNotFound):
        list(ds.iter_batches(["0" * 16]))


def test_a_partition_is_written_in_row_groups_of_two_budgets_with_the_key_column_plain(tmp_path, churn):
    """Partition layout: a row group is flushed once about PARTITION_ROW_GROUP_BUDGETS commit budgets of
    rows are held (fewer, larger row groups cost less to write), ``_row_key`` (distinct hex digests) is
    neither dictionary-encoded nor compressed, every other column is snappy with a dictionary; the rows
    read back as committed."""
    import pyarrow.parquet as pq

    from mlops_core.datasets import PARTITION_ROW_GROUP_BUDGETS, StagedRows
    from mlops_core.spill import ScratchDir

    frame = accepted(churn, *[(f"c{i:05d}", JAN1) for i in range(6000)])
    memory = 100_000
    with ScratchDir(tmp_path / "scratch") as scratch:
        staged = StagedRows(scratch, memory_bytes=memory)
        source = staged.new_source()
        for start in range(0, len(frame), 250):
            staged.add(source, frame.iloc[start : start + 250])
        store = LocalObjectStore(tmp_path / "store")
        ds = DatasetStore(store, "churn")
        result = ds.commit_version(staged, churn, sources_for(frame), "run1", CREATED)
    (part,) = result.manifest["partitions"].values()
    meta = pq.ParquetFile(store.path(part["key"])).metadata
    by_name = {c.path_in_schema: c for c in (meta.row_group(0).column(i) for i in range(meta.num_columns))}
    key = by_name[ROW_KEY_COLUMN]
    assert key.compression == "UNCOMPRESSED"
    assert not {"PLAIN_DICTIONARY", "RLE_DICTIONARY"} & set(key.encodings)
    for name in ("customer_id", "plan", "region"):
        assert by_name[name].compression == "SNAPPY"
        assert {"PLAIN_DICTIONARY", "RLE_DICTIONARY"} & set(by_name[name].encodings), name
    group_rows = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sum(group_rows) == len(frame)
    row_bytes = pq.read_table(store.path(part["key"])).nbytes / len(frame)  # Arrow bytes of a stored row
    threshold_rows = PARTITION_ROW_GROUP_BUDGETS * memory / row_bytes
    assert threshold_rows < len(frame) / 2  # the case is several row groups' worth
    assert len(group_rows) >= 2  # flushed as the rows come, not held whole
    assert all(n >= 0.99 * threshold_rows for n in group_rows[:-1]), (group_rows, threshold_rows)
    pd.testing.assert_frame_equal(
        ds.read_version(result.version_id).sort_values("customer_id").reset_index(drop=True)[frame.columns.tolist()],
        frame.sort_values("customer_id").reset_index(drop=True),
        check_dtype=False,
        check_categorical=False,
    )
