"""One poison file never blocks the drop zone: it is quarantined with a reason, the batch goes on.

Faults are injected into the real parsing/validation functions (the first call raises), for
every reader path; the stage runs on a real folder and the real LocalObjectStore.
"""

from __future__ import annotations

import os
import sys

import pytest

import mlops_core.validation as validation
from mlops_core.backends import backends_for
from mlops_core.datasets import DatasetStore
from mlops_core.stages.ingest import ingest_files
from tests.stages.churn_files import (
    FORMATS,
    archived,
    churn_frame,
    committed_rows,
    comparable_files,
    file_bytes,
    json_safe,
    quarantine_by_source,
    setup_drop_zone,
    store_snapshot,
    write_file,
)

AT = "2026-02-01T00:00:00+00:00"

COMMON_POINTS = [
    "read_source",
    "normalise_header",
    "validate",
    "_as_text",
    "_check_column",
    "_parse",
    "_row_key_array",  # the row keys (row_keys() of a DataFrame makes them the same way)
    "canonical_values",
    "_event_times",
]
READER_POINTS = {
    "csv": ["_read_csv"],
    "csv.gz": ["_gunzip", "_read_csv"],
    "parquet": ["_read_parquet", "_arrow_to_text", "_expanded_bytes", "_is_bytes_type"],
}
CASES = [(fmt, point) for fmt in FORMATS for point in [*READER_POINTS[fmt], *COMMON_POINTS]]


def _fail_first_call(monkeypatch, point: str, error: BaseException) -> list[int]:
    real = getattr(validation, point)
    calls = [0]

    def injected(*args, **kwargs):
        if sys._getframe(1).f_code.co_name == "_allowed_values":  # the contract's own values, checked up front
            return real(*args, **kwargs)
        calls[0] += 1
        if calls[0] == 1:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(validation, point, injected)
    return calls


@pytest.mark.parametrize(("fmt", "point"), CASES, ids=[f"{f}-{p}" for f, p in CASES])
def test_exception_anywhere_in_parsing_quarantines_only_that_file(mlops_home, monkeypatch, fmt, point):
    settings, drop, ds = setup_drop_zone(mlops_home)
    poison = write_file(drop, f"a-poison.{fmt}", file_bytes(churn_frame(20, seed=1), fmt))
    good = write_file(drop, f"b-good.{fmt}", file_bytes(churn_frame(30, day=1, seed=2), fmt))
    poison_bytes = poison.read_bytes()
    calls = _fail_first_call(monkeypatch, point, RuntimeError(f"injected at {point}"))

    report = ingest_files(settings, [str(poison), str(good)], backends_for(settings), run_id="r1", ingested_at=AT)

    assert calls[0] >= 1, f"{point} is not on the {fmt} reader path"
    by_file = {f["file"]: f for f in json_safe(report)["files"]}
    bad = by_file[f"a-poison.{fmt}"]
    assert bad["status"] == "rejected" and bad["reason_code"] == "unreadable"
    assert "RuntimeError" in bad["reason"] and f"injected at {point}" in bad["reason"]
    assert by_file[f"b-good.{fmt}"]["status"] == "accepted" and report["rows"] == 30
    assert report["files_quarantined"] == 1 and report["quarantined_files"] == [f"a-poison.{fmt}"]
    record = quarantine_by_source(ds)[f"a-poison.{fmt}"][0]
    assert ds.store.get_bytes(record["raw_key"]) == poison_bytes
    assert not list(drop.iterdir()) and len(archived(drop)) == 2  # both moved on: the drop zone is free


@pytest.mark.parametrize("error", [MemoryError(), RecursionError("deep"), KeyError("k"), UnicodeError("u")])
def test_any_exception_type_is_a_reason(mlops_home, monkeypatch, error):
    settings, drop, _ = setup_drop_zone(mlops_home)
    path = write_file(drop, "a.csv", file_bytes(churn_frame(5), "csv"))
    _fail_first_call(monkeypatch, "_parse", error)
    report = ingest_files(settings, [str(path)], backends_for(settings), run_id="r1", ingested_at=AT)
    assert report["files"][0]["reason_code"] == "unreadable"
    assert type(error).__name__ in report["files"][0]["reason"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_int_of_thousands_of_digits_rejects_the_row_not_the_run(mlops_home, fmt):
    """Before: ValueError (int-to-str digit limit) on every retry; the valid files were never ingested."""
    settings, drop, ds = setup_drop_zone(mlops_home)
    frame = churn_frame(10).astype({"tenure_months": str})  # Parquet: a text column holds the digits
    frame.loc[3, "tenure_months"] = "9" * 5000
    poison = write_file(drop, f"poison.{fmt}", file_bytes(frame, fmt))
    good = write_file(drop, f"good.{fmt}", file_bytes(churn_frame(10, day=1, seed=2), fmt))
    report = ingest_files(settings, [str(poison), str(good)], backends_for(settings), run_id="r1", ingested_at=AT)
    assert report["rows"] == 19 and report["rejected_rows"] == 1
    rows = ds.read_quarantined_rows(quarantine_by_source(ds)[f"poison.{fmt}"][0])
    assert rows["_reason"].str.startswith("tenure_months: '9999").all() and rows["_row_number"].tolist() == [4]


# --------------------------------------------------------------------------- names that are not UTF-8
NAMES = [b"caf\xe9.csv", b"\xff\xfe.csv", b"new\nline.csv", b"duplicate-rows", b"100%.csv", "données.csv".encode()]


def test_any_name_the_file_system_allows_is_ingested_or_quarantined_with_the_name_kept(mlops_home):
    """Before: a name that is not UTF-8 made the commit raise after other quarantine records were written."""
    settings, drop, ds = setup_drop_zone(mlops_home)
    paths = []
    for i, raw_name in enumerate(NAMES):
        data = file_bytes(churn_frame(5, day=i, seed=i), "csv") if raw_name.endswith(b".csv") else b"junk"
        paths.append(str(write_file(drop, raw_name, data)))
    bad = write_file(drop, b"bad\xe9.csv", b"customer_id\nx\n")  # missing columns: quarantined whole
    paths.append(str(bad))

    report = json_safe(ingest_files(settings, paths, backends_for(settings), run_id="r1", ingested_at=AT))

    shown = {os.fsencode(validation_unescape(f["file"])): f for f in report["files"]}
    assert set(shown) == {*NAMES, b"bad\xe9.csv"}
    assert shown[b"caf\xe9.csv"]["file"] == "caf%E9.csv" and shown[b"100%.csv"]["file"] == "100%25.csv"
    assert shown[b"bad\xe9.csv"]["reason_code"] == "missing_columns"
    assert shown[b"duplicate-rows"]["reason_code"] == "unsupported_format"
    rows = committed_rows(ds)
    assert sorted(set(rows["_source"])) == sorted(f["file"] for f in report["files"] if f["status"] == "accepted")
    assert report["rows"] == 25 and len(rows) == 25
    manifest = ds.latest_version()
    assert {s["key"] for s in manifest["sources"]} == {f["file"] for f in report["files"]}
    records = quarantine_by_source(ds)
    assert "bad%E9.csv" in records and "duplicate-rows" in records
    assert not list(drop.iterdir())


def validation_unescape(text: str) -> str:
    from mlops_core.delivered_files import unescape_name

    return unescape_name(text)


# --------------------------------------------------------------------------- crash at any write
WRITE_STEPS = [  # (what, method, which call crashes)
    ("commit", "commit_version", 1),
    ("quarantine", "quarantine", 2),  # after one record was written
    ("ledger", "record_sources", 1),
    ("archive", "archive_file", 2),  # after one file was moved
]


def _batch(drop):
    paths = [
        write_file(drop, "a.csv", file_bytes(churn_frame(20, seed=1), "csv")),
        write_file(drop, "b.parquet", file_bytes(churn_frame(20, day=1, seed=2), "parquet")),
        write_file(drop, "c.csv", b"customer_id\nx\n"),  # file reject
    ]
    frame = churn_frame(10, day=2, seed=3).astype({"plan": object})
    frame.loc[0, "plan"] = "gold"  # a row reject
    paths.append(write_file(drop, "d.csv.gz", file_bytes(frame, "csv.gz")))
    paths.append(write_file(drop, "e.csv", (drop / "a.csv").read_bytes()))  # same bytes as a.csv
    return [str(p) for p in paths]


@pytest.mark.parametrize(("step", "method", "crash_at"), WRITE_STEPS, ids=[s[0] for s in WRITE_STEPS])
def test_a_crash_at_any_write_is_repaired_by_re_running(tmp_path, monkeypatch, step, method, crash_at):
    import mlops_core.dropzone
    from tests.conftest import isolate_mlops_env

    isolate_mlops_env(monkeypatch, tmp_path / "clean")
    settings, drop, _ = setup_drop_zone(tmp_path / "clean")
    clean_report = ingest_files(settings, _batch(drop), backends_for(settings), run_id="r1", ingested_at=AT)
    clean_store = store_snapshot(settings)

    isolate_mlops_env(monkeypatch, tmp_path / "crash")
    settings, drop, _ = setup_drop_zone(tmp_path / "crash")
    paths = _batch(drop)
    owner = mlops_core.dropzone if method == "archive_file" else DatasetStore
    real = getattr(owner, method)
    calls = [0]

    def crash(*args, **kwargs):
        calls[0] += 1
        if calls[0] == crash_at:
            raise OSError(f"simulated crash in {step}")
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(owner, method, crash)
        with pytest.raises(OSError, match="simulated crash"):
            ingest_files(settings, paths, backends_for(settings), run_id="r1", ingested_at=AT)
    retried = ingest_files(settings, paths, backends_for(settings), run_id="r1", ingested_at=AT)

    assert not list(drop.iterdir()) and len(archived(drop)) == 5
    assert retried["version_id"] == clean_report["version_id"] and retried["rows"] == clean_report["rows"]
    assert store_snapshot(settings) == clean_store
    if step != "archive":  # every file was still there: the same report too
        assert comparable_files(retried["files"]) == comparable_files(clean_report["files"])
    else:  # a.csv was archived by the first attempt; the other files end as they did in the clean run
        clean_files = {f["file"]: f for f in clean_report["files"]}
        assert len(retried["files"]) == 4
        assert all(comparable_files([clean_files[f["file"]]]) == comparable_files([f]) for f in retried["files"])


def test_a_broken_contract_fails_the_task_before_any_file_is_touched(mlops_home, tmp_path, monkeypatch):
    import yaml

    from tests.conftest import REPO

    contract = yaml.safe_load((REPO / "include" / "contracts" / "churn.yaml").read_text())
    for column in contract["columns"]:
        if column["name"] == "tenure_months":
            column["allowed"] = ["twelve"]
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(contract))
    monkeypatch.setenv("MLOPS_CONTRACT", str(path))
    settings, drop, _ = setup_drop_zone(mlops_home)
    good = write_file(drop, "good.csv", file_bytes(churn_frame(3), "csv"))
    with pytest.raises(ValueError, match="fix the contract"):
        ingest_files(settings, [str(good)], backends_for(settings), run_id="r1", ingested_at=AT)
    assert good.exists() and store_snapshot(settings) == {}
