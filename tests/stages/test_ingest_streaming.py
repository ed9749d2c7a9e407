"""Ingest in batches: big files give the whole-file answers, memory is local scratch, scratch is cleaned up.

A 1 MB batch size makes files of a few MB span several batches: accepted rows are staged in
sorted runs on local disk and merged back at commit, rejected rows go to a local Parquet file,
and a row repeated across batches of one file is rejected exactly as whole-file validation
rejects it (``duplicate_row`` naming the first data row).
"""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from mlops_core import spill, validation
from mlops_core.backends import backends_for
from mlops_core.datasets import DatasetStore
from mlops_core.settings import with_overrides
from mlops_core.stages.ingest import ingest_files
from mlops_core.validation import REASON_COLUMN, ROW_NUMBER_COLUMN, validate_file
from tests.stages.churn_files import FORMATS, churn_frame, file_bytes, quarantine_by_source, setup_drop_zone, write_file

AT = "2026-02-01T00:00:00+00:00"
BIG = 40_000  # rows: about 2.6 MB of CSV, three 1 MB batches


@pytest.fixture
def small_batches(mlops_home, tmp_path):
    settings, drop, ds = setup_drop_zone(mlops_home)
    scratch = tmp_path / "scratch"
    settings = with_overrides(settings, dataset={"ingest_batch_mb": 1, "ingest_scratch_dir": str(scratch)})
    return settings, drop, ds, scratch


def _big_frame_with_damage() -> pd.DataFrame:
    frame = pd.concat([churn_frame(BIG // 2, day=0, seed=1), churn_frame(BIG // 2, day=1, seed=2)], ignore_index=True)
    frame = frame.astype({"plan": str, "tenure_months": str})  # Parquet: text columns that hold the damage
    frame.loc[[5, 25_000], "plan"] = "gold"  # rejected rows early and late
    frame.loc[39_990, "tenure_months"] = "x"
    repeats = frame.iloc[[3, 10, 20_001]].copy()  # accepted rows delivered again in later batches
    return pd.concat([frame.iloc[:30_000], repeats, frame.iloc[30_000:], repeats.iloc[[0]]], ignore_index=True)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_file_of_several_batches_gives_the_whole_file_answer(small_batches, fmt, caplog):
    settings, drop, ds, scratch = small_batches
    data = file_bytes(_big_frame_with_damage(), fmt)
    path = write_file(drop, f"big.{fmt}", data)
    whole = validate_file(data, f"big.{fmt}", settings.contract, pd.Timestamp(AT), batch_bytes=1 << 40)

    with caplog.at_level("INFO", logger="mlops_core.stages.ingest"):
        report = ingest_files(settings, [str(path)], backends_for(settings), run_id="r1", ingested_at=AT)

    assert "accepted in two batches; reading it again" in caplog.text  # the repeats spanned batches
    assert report["rows"] == len(whole.accepted) and report["rejected_rows"] == len(whole.rejected)
    assert report["files"][0]["reasons"] == whole.summary()["reasons"]
    assert report["duplicate_rows"] == 0
    stored = ds.read_version(report["version_id"])
    assert sorted(stored["_row_key"]) == sorted(whole.accepted["_row_key"])
    assert report["version_id"] == _version_of(settings, whole.accepted)
    rejected = ds.read_quarantined_rows(quarantine_by_source(ds)[f"big.{fmt}"][0])
    assert rejected[ROW_NUMBER_COLUMN].tolist() == whole.rejected[ROW_NUMBER_COLUMN].tolist()
    assert rejected[REASON_COLUMN].tolist() == whole.rejected[REASON_COLUMN].tolist()
    assert any("same row key as data row 4" in r for r in rejected[REASON_COLUMN])
    assert not list(scratch.iterdir()), "the scratch folder is removed when the run ends"


def test_one_batch_validated_in_slices_gives_the_answer_of_one_validate_call(mlops_home, caplog):
    """The default batch holds the whole file, which is validated in slices of rows (the slice's typed
    rows, keys and accepted rows are what is held): repeats and rejects across slices come out as one
    call of validate over every row gives them (the reference, no batches, no slices)."""
    settings, drop, ds = setup_drop_zone(mlops_home)
    frame = _big_frame_with_damage()
    assert len(validation._row_slices(len(frame))) > 1  # the repeats (rows 30,000+) are in a later slice
    data = file_bytes(frame, "csv")
    path = write_file(drop, "sliced.csv", data)
    text = validation.read_source(data, "sliced.csv")
    reference = validation.validate(text, settings.contract, "sliced.csv", pd.Timestamp(AT))

    with caplog.at_level("INFO", logger="mlops_core.stages.ingest"):
        report = ingest_files(settings, [str(path)], backends_for(settings), run_id="r1", ingested_at=AT)

    assert "accepted in two batches; reading it again" in caplog.text  # repeats spanned slices
    assert report["rows"] == len(reference.accepted) and report["rejected_rows"] == len(reference.rejected)
    assert report["files"][0]["reasons"] == reference.summary()["reasons"]
    stored = ds.read_version(report["version_id"])
    assert sorted(stored["_row_key"]) == sorted(reference.accepted["_row_key"])
    assert report["version_id"] == _version_of(settings, reference.accepted)
    rejected = ds.read_quarantined_rows(quarantine_by_source(ds, "r1")["sliced.csv"][0])
    assert rejected[ROW_NUMBER_COLUMN].tolist() == reference.rejected[ROW_NUMBER_COLUMN].tolist()
    assert rejected[REASON_COLUMN].tolist() == reference.rejected[REASON_COLUMN].tolist()
    assert any("same row key as data row 4" in r for r in rejected[REASON_COLUMN])


def test_row_keys_hash_the_same_whichever_sha256_is_fastest(mlops_home):
    """The SHA-256 chosen by timing (OpenSSL's or CPython's) gives the keys every stored version was made with."""
    settings, _, _ = setup_drop_zone(mlops_home)
    payload = b'["key","C0000042","2024-01-01T00:00:00+00:00"]'
    assert validation._sha256(payload).digest() == hashlib.sha256(payload).digest()
    typed = pd.DataFrame(
        {"customer_id": pd.array(["C0000042"], dtype="string"), "event_time": [pd.Timestamp("2024-01-01", tz="UTC")]}
    )
    assert validation.row_keys(typed, settings.contract) == [hashlib.sha256(payload).hexdigest()[:32]]


def _version_of(settings, accepted: pd.DataFrame) -> str:
    from mlops_core.datasets import version_id_for

    return version_id_for(settings.contract.fingerprint, accepted["_row_key"].astype(str))


def test_rows_repeated_across_big_files_are_batch_duplicates_in_input_order(small_batches):
    settings, drop, ds, _ = small_batches
    frame = churn_frame(BIG, day=0, seed=3)
    first = write_file(drop, "a.csv", file_bytes(frame, "csv"))
    again = frame.iloc[[BIG - 1, 7, 30_000]]
    second = write_file(drop, "b.csv", file_bytes(pd.concat([churn_frame(10, day=5, seed=4), again]), "csv"))

    report = ingest_files(settings, [str(first), str(second)], backends_for(settings), run_id="r1", ingested_at=AT)

    assert report["rows"] == BIG + 10 and report["duplicate_rows"] == 3
    record = quarantine_by_source(ds)["duplicate-rows"][0]
    duplicates = ds.read_quarantined_rows(record)
    assert duplicates["customer_id"].tolist() == again["customer_id"].tolist()  # in input order
    assert set(duplicates[REASON_COLUMN]) == {"duplicate_row: repeated within this commit"}
    keys = "\n".join(sorted(duplicates["_row_key"]))
    assert record["content_sha256"] == hashlib.sha256(keys.encode()).hexdigest()
    assert {f["file"]: f["rows_duplicate"] for f in report["files"]} == {"a.csv": 0, "b.csv": 3}


def test_the_scratch_folder_goes_also_when_the_commit_fails(small_batches, monkeypatch):
    settings, drop, _, scratch = small_batches
    path = write_file(drop, "a.csv", file_bytes(churn_frame(BIG, seed=5), "csv"))

    def fail(*args, **kwargs):
        raise OSError("store unreachable")

    monkeypatch.setattr(DatasetStore, "commit_version", fail)
    with pytest.raises(OSError, match="store unreachable"):
        ingest_files(settings, [str(path)], backends_for(settings), run_id="r1", ingested_at=AT)
    assert not list(scratch.iterdir())
    assert path.exists(), "nothing was committed: the file stays for the retry"


def test_a_scratch_folder_left_by_a_killed_run_is_removed_by_the_next(small_batches):
    import os
    import time

    settings, drop, _, scratch = small_batches
    left = scratch / f"{spill.SCRATCH_PREFIX}killed"
    left.mkdir(parents=True)
    (left / "accepted.arrow").write_bytes(b"x" * 1000)
    old = time.time() - 2 * spill.ABANDONED_AFTER_SECONDS
    os.utime(left, (old, old))
    path = write_file(drop, "a.csv", file_bytes(churn_frame(10), "csv"))
    ingest_files(settings, [str(path)], backends_for(settings), run_id="r1", ingested_at=AT)
    assert not left.exists() and not list(scratch.iterdir())
