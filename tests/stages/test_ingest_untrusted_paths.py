"""Ingest touches only regular files directly inside the drop zone; links are never followed.

Real links, FIFOs, folders and sockets on a real folder; a canary file outside the drop zone
whose content must never reach the store, and which must never be moved.
"""

from __future__ import annotations

import os
import socket
import threading

import pytest

from mlops_core.backends import backends_for
from mlops_core.delivered_files import UntrustedPath
from mlops_core.dropzone import scan_drop_zone
from mlops_core.stages.ingest import ingest_files
from tests.stages.churn_files import (
    archived,
    churn_frame,
    file_bytes,
    quarantine_by_source,
    setup_drop_zone,
    store_snapshot,
    write_file,
)

AT = "2026-02-01T00:00:00+00:00"
CANARY = b"customer_id,canary\nCANARY-7f3e9b1c2d\n"


@pytest.fixture
def canary(tmp_path):
    path = tmp_path / "outside" / "secret.csv"
    path.parent.mkdir()
    path.write_bytes(CANARY)
    return path


def _no_canary_in(settings) -> None:
    for key, data in store_snapshot(settings).items():
        assert b"CANARY-7f3e9b1c2d" not in data, key


@pytest.mark.parametrize(
    "path",
    ["{canary}", "{drop}/../outside/secret.csv", "{drop}/./good.csv", "good.csv", "{drop}/.hidden.csv", "{drop}"],
    ids=["outside", "dotdot", "dot", "relative", "hidden", "folder"],
)
def test_a_path_outside_the_drop_zone_refuses_the_call_before_anything_is_touched(mlops_home, canary, path):
    """Before: a landed_files event naming /etc/passwd copied it into quarantine and moved it to the archive."""
    settings, drop, _ = setup_drop_zone(mlops_home)
    good = write_file(drop, "good.csv", file_bytes(churn_frame(5), "csv"))
    bad = path.format(canary=canary, drop=drop)
    with pytest.raises(UntrustedPath) as exc:
        ingest_files(settings, [str(good), bad], backends_for(settings), run_id="r1", ingested_at=AT)
    assert str(drop) in str(exc.value)
    assert canary.read_bytes() == CANARY and good.exists() and archived(drop) == []
    assert store_snapshot(settings) == {}


def test_a_link_in_the_drop_zone_is_quarantined_unread_and_archived(mlops_home, canary):
    """Before: a file replaced by a link between scan and read had the link's target ingested/quarantined."""
    settings, drop, ds = setup_drop_zone(mlops_home)
    good = write_file(drop, "good.csv", file_bytes(churn_frame(5), "csv"))
    victim = write_file(drop, "victim.csv", file_bytes(churn_frame(5, day=1), "csv"))
    listed = [f.path for f in scan_drop_zone(drop, ("*.csv",), min_age_seconds=0)]
    victim.unlink()
    victim.symlink_to(canary)  # swapped after the scan, before the read

    report = ingest_files(settings, listed, backends_for(settings), run_id="r1", ingested_at=AT)

    files = {f["file"]: f for f in report["files"]}
    assert files["victim.csv"]["reason_code"] == "not_regular_file" and files["good.csv"]["status"] == "accepted"
    record = quarantine_by_source(ds)["victim.csv"][0]
    assert record["raw_key"] is None and "secret.csv" in record["evidence"]
    _no_canary_in(settings)
    assert canary.read_bytes() == CANARY  # the target stays where it is ...
    moved = [p for p in archived(drop) if p.name == "victim.csv"]
    assert len(moved) == 1 and moved[0].is_symlink()  # ... and the link itself is archived
    assert not list(drop.iterdir()) and good.name in {p.name for p in archived(drop)}


def test_fifo_folder_socket_and_dangling_link_are_quarantined_and_moved(mlops_home, tmp_path):
    settings, drop, ds = setup_drop_zone(mlops_home)
    os.mkfifo(drop / "pipe.csv")
    (drop / "folder.csv").mkdir()
    (drop / "folder.csv" / "inner.csv").write_bytes(file_bytes(churn_frame(3), "csv"))
    (drop / "dangling.csv").symlink_to(tmp_path / "nowhere.csv")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(drop / "sock.csv"))
    names = ["pipe.csv", "folder.csv", "dangling.csv", "sock.csv"]
    result: dict = {}
    try:
        worker = threading.Thread(
            target=lambda: result.update(
                report=ingest_files(
                    settings, [str(drop / n) for n in names], backends_for(settings), run_id="r1", ingested_at=AT
                )
            )
        )
        worker.start()
        worker.join(timeout=60)
        assert not worker.is_alive(), "ingest hung on a FIFO"
    finally:
        sock.close()
    report = result["report"]
    assert {f["file"]: f["reason_code"] for f in report["files"]} == dict.fromkeys(names, "not_regular_file")
    assert report["version_id"] is None and report["files_quarantined"] == 4
    assert set(quarantine_by_source(ds)) == set(names)
    assert not list(drop.iterdir())
    assert {p.name for p in archived(drop)} >= {"pipe.csv", "dangling.csv", "sock.csv", "inner.csv"}
    # Not ledgered: the same bytes delivered later as a regular file are looked at again.
    again = write_file(drop, "inner.csv", file_bytes(churn_frame(3), "csv"))
    assert ingest_files(settings, [str(again)], backends_for(settings), run_id="r2", ingested_at=AT)["rows"] == 3


def test_a_linked_drop_zone_folder_is_resolved(mlops_home, tmp_path):
    settings, drop, _ = setup_drop_zone(mlops_home)
    alias = tmp_path / "alias"
    alias.symlink_to(drop)
    good = write_file(drop, "good.csv", file_bytes(churn_frame(4), "csv"))
    report = ingest_files(settings, [str(alias / good.name)], backends_for(settings), run_id="r1", ingested_at=AT)
    assert report["rows"] == 4 and not good.exists()


def test_too_large_files_are_quarantined_unread_and_not_ledgered(mlops_home):
    settings, drop, ds = setup_drop_zone(mlops_home)
    big = write_file(drop, "big.csv", file_bytes(churn_frame(50), "csv"))
    small = write_file(drop, "small.csv", file_bytes(churn_frame(2, day=1), "csv"))
    limit = small.stat().st_size + 10
    report = ingest_files(
        settings, [str(big), str(small)], backends_for(settings), run_id="r1", ingested_at=AT, max_file_bytes=limit
    )
    files = {f["file"]: f for f in report["files"]}
    assert files["big.csv"]["reason_code"] == "too_large" and report["rows"] == 2
    assert quarantine_by_source(ds)["big.csv"][0]["raw_key"] is None  # the archive keeps the bytes
    assert {p.name for p in archived(drop)} == {"big.csv", "small.csv"}
    # Delivered again once the limit is raised: ingested, not a duplicate.
    again = write_file(drop, "big.csv", file_bytes(churn_frame(50), "csv"))
    assert ingest_files(settings, [str(again)], backends_for(settings), run_id="r2", ingested_at=AT)["rows"] == 50


@pytest.mark.parametrize("name", ["week.csv.gz", "WEEK.CSV", "Week.Parquet", "week.CSV.GZ"])
def test_compressed_csv_and_suffixes_in_any_case(mlops_home, name):
    settings, drop, _ = setup_drop_zone(mlops_home)
    fmt = "parquet" if "parquet" in name.lower() else "csv.gz" if name.lower().endswith(".gz") else "csv"
    path = write_file(drop, name, file_bytes(churn_frame(7), fmt))
    assert ingest_files(settings, [str(path)], backends_for(settings), run_id="r1", ingested_at=AT)["rows"] == 7


def test_gzip_bomb_is_a_file_reject_and_the_batch_goes_on(mlops_home):
    import gzip

    settings, drop, _ = setup_drop_zone(mlops_home)
    bomb = write_file(drop, "bomb.csv.gz", gzip.compress(b"customer_id\n" + b"x\n" * 3_000_000, mtime=0))
    good = write_file(drop, "good.csv", file_bytes(churn_frame(3), "csv"))
    report = ingest_files(
        settings, [str(bomb), str(good)], backends_for(settings), run_id="r1", ingested_at=AT, max_file_bytes=1_000_000
    )
    assert {f["file"]: f.get("reason_code") for f in report["files"]} == {"bomb.csv.gz": "too_large", "good.csv": None}
    assert report["rows"] == 3
