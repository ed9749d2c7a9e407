"""The drop-zone scan against real folders, files, links and pipes: arrival rules and reasons."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_core.dropzone import (
    ArrivalRule,
    MarkerFile,
    archive_dir_for,
    archive_file,
    archive_marker,
    complete_files,
    matches,
    scan,
    scan_drop_zone,
    watch_spec,
)

DEFAULT_PATTERNS = ("*.csv", "*.csv.gz", "*.parquet")
NOW = 1_900_000_000.0  # a fixed "now" well after every file's mtime below
STABLE = ArrivalRule(rule="stable", min_age_seconds=5, poll_seconds=5)


def _write(path: Path, data: str = "a,b\n1,2\n", *, mtime: float = NOW - 60) -> Path:
    path.write_text(data)
    os.utime(path, (mtime, mtime))
    return path


def _reasons(result) -> dict[str, str]:
    return {e.name: e.reason for e in result.ignored}


# ---- rule stable ------------------------------------------------------------------------------


def test_stable_never_takes_a_file_on_its_first_sighting(tmp_path):
    _write(tmp_path / "a.csv")  # old enough: the previous rule took it at once
    first = scan(tmp_path, DEFAULT_PATTERNS, STABLE, None, now=NOW)
    assert first.ready == ()
    assert _reasons(first) == {"a.csv": "waiting_stable"}
    second = scan(tmp_path, DEFAULT_PATTERNS, STABLE, first.state, now=NOW + 5)
    assert [f.name for f in second.ready] == ["a.csv"]
    assert second.ready[0].size == len("a,b\n1,2\n")


def test_stable_waits_for_a_writer_that_paused_longer_than_min_age(tmp_path):
    """The defect: a writer paused for a minute had its first half announced."""
    part = _write(tmp_path / "big.csv", "a,b\n1,2\n", mtime=NOW - 60)
    first = scan(tmp_path, DEFAULT_PATTERNS, STABLE, None, now=NOW)
    with part.open("a") as f:  # the writer resumes between two scans
        f.write("3,4\n")
    os.utime(part, (NOW + 1, NOW + 1))
    second = scan(tmp_path, DEFAULT_PATTERNS, STABLE, first.state, now=NOW + 5)
    assert second.ready == () and _reasons(second)["big.csv"] == "waiting_stable"
    # unchanged for a poll, but modified only 5 s before: the min age still holds it back
    third = scan(tmp_path, DEFAULT_PATTERNS, STABLE, second.state, now=NOW + 5.5)
    assert _reasons(third)["big.csv"] == "waiting_stable"
    fourth = scan(tmp_path, DEFAULT_PATTERNS, STABLE, third.state, now=NOW + 10)
    assert [f.size for f in fourth.ready] == [len("a,b\n1,2\n3,4\n")]


def test_stable_needs_the_two_scans_one_poll_apart(tmp_path):
    _write(tmp_path / "a.csv")
    first = scan(tmp_path, DEFAULT_PATTERNS, STABLE, None, now=NOW)
    too_soon = scan(tmp_path, DEFAULT_PATTERNS, STABLE, first.state, now=NOW + 1)
    assert too_soon.ready == () and _reasons(too_soon) == {"a.csv": "waiting_stable"}
    # the unchanged-since time is kept from the first sighting, so the next scan counts from it
    later = scan(tmp_path, DEFAULT_PATTERNS, STABLE, too_soon.state, now=NOW + 5)
    assert [f.name for f in later.ready] == ["a.csv"]


def test_stable_sees_a_replaced_file_with_the_same_size_and_mtime(tmp_path):
    _write(tmp_path / "a.csv", "x,y\n1,2\n")
    first = scan(tmp_path, DEFAULT_PATTERNS, STABLE, None, now=NOW)
    # another file with identical size and mtime (ns) renamed over it: only the inode differs
    _write(tmp_path / "other", "x,y\n3,4\n")
    st = (tmp_path / "a.csv").stat()
    os.utime(tmp_path / "other", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp_path / "other", tmp_path / "a.csv")
    assert (tmp_path / "a.csv").stat().st_ino != st.st_ino
    second = scan(tmp_path, DEFAULT_PATTERNS, STABLE, first.state, now=NOW + 5)
    assert second.ready == () and _reasons(second) == {"a.csv": "waiting_stable"}


def test_stable_and_young_is_too_new(tmp_path):
    _write(tmp_path / "a.csv", mtime=NOW - 1)
    rule = ArrivalRule(rule="stable", min_age_seconds=30, poll_seconds=5)
    first = scan(tmp_path, DEFAULT_PATTERNS, rule, None, now=NOW)
    second = scan(tmp_path, DEFAULT_PATTERNS, rule, first.state, now=NOW + 5)
    assert second.ready == () and _reasons(second) == {"a.csv": "too_new"}


def test_state_forgets_files_that_left(tmp_path):
    _write(tmp_path / "a.csv")
    first = scan(tmp_path, DEFAULT_PATTERNS, STABLE, None, now=NOW)
    (tmp_path / "a.csv").unlink()
    assert scan(tmp_path, DEFAULT_PATTERNS, STABLE, first.state, now=NOW + 5).state == {}


# ---- rule marker ------------------------------------------------------------------------------


def test_per_file_marker(tmp_path):
    rule = ArrivalRule(rule="marker", marker="{name}.done")
    _write(tmp_path / "a.csv")
    _write(tmp_path / "b.csv")
    _write(tmp_path / "a.csv.done", "", mtime=NOW - 30)
    _write(tmp_path / "c.csv.done", "", mtime=NOW - 30)  # a marker without its data file
    result = scan(tmp_path, DEFAULT_PATTERNS, rule, None, now=NOW)
    assert [f.name for f in result.ready] == ["a.csv"]
    assert _reasons(result) == {"b.csv": "waiting_marker", "a.csv.done": "marker", "c.csv.done": "marker"}
    st = (tmp_path / "a.csv.done").stat()
    assert result.markers == (
        MarkerFile(str(tmp_path / "a.csv.done"), "a.csv.done", st.st_size, st.st_mtime_ns, st.st_ino),
    )


def test_a_file_modified_after_its_marker_waits(tmp_path):
    rule = ArrivalRule(rule="marker")
    _write(tmp_path / "a.csv", mtime=NOW - 10)
    _write(tmp_path / "a.csv.done", "", mtime=NOW - 30)  # left over from an earlier delivery
    result = scan(tmp_path, DEFAULT_PATTERNS, rule, None, now=NOW)
    assert result.ready == () and result.markers == ()
    assert _reasons(result)["a.csv"] == "waiting_marker"
    assert "modified after its marker" in next(e.detail for e in result.ignored if e.name == "a.csv")


def test_folder_marker_takes_the_files_present_when_it_appeared(tmp_path):
    rule = ArrivalRule(rule="marker", marker="_SUCCESS")
    _write(tmp_path / "part-0.parquet", mtime=NOW - 60)
    _write(tmp_path / "part-1.parquet", mtime=NOW - 50)
    assert scan(tmp_path, DEFAULT_PATTERNS, rule, None, now=NOW).ready == ()
    _write(tmp_path / "_SUCCESS", "", mtime=NOW - 40)
    _write(tmp_path / "part-2.parquet", mtime=NOW - 5)  # the next batch, written after the marker
    result = scan(tmp_path, DEFAULT_PATTERNS, rule, None, now=NOW)
    assert [f.name for f in result.ready] == ["part-0.parquet", "part-1.parquet"]
    assert _reasons(result) == {"_SUCCESS": "marker", "part-2.parquet": "waiting_marker"}
    assert [m.name for m in result.markers] == ["_SUCCESS"]


def test_markers_are_never_ingested_even_when_they_match_a_pattern(tmp_path):
    rule = ArrivalRule(rule="marker", marker="{name}.ok.csv")
    _write(tmp_path / "a.csv")
    _write(tmp_path / "a.csv.ok.csv", "")
    result = scan(tmp_path, DEFAULT_PATTERNS, rule, None, now=NOW)
    assert [f.name for f in result.ready] == ["a.csv"]
    assert _reasons(result) == {"a.csv.ok.csv": "marker"}


def test_archive_marker_moves_an_unchanged_marker_and_leaves_a_changed_one(tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    _write(drop / "a.csv")
    _write(drop / "_SUCCESS", "", mtime=NOW - 30)
    result = scan(drop, DEFAULT_PATTERNS, ArrivalRule(rule="marker", marker="_SUCCESS"), None, now=NOW)
    (marker,) = result.markers
    archive = archive_dir_for(drop, "run-1")
    assert archive == tmp_path / "drop.archive" / "run-1"
    archive_file(drop / "a.csv", archive)  # what ingest does with the data file

    # a writer re-touched the marker for a new batch: it stays
    os.utime(drop / "_SUCCESS", (NOW - 1, NOW - 1))
    assert archive_marker(marker, archive) is None
    assert (drop / "_SUCCESS").exists()

    os.utime(drop / "_SUCCESS", ns=(marker.mtime_ns, marker.mtime_ns))  # as announced again
    assert archive_marker(marker, archive) == archive / "_SUCCESS"
    assert sorted(p.name for p in drop.iterdir()) == []  # nothing left behind
    assert archive_marker(marker, archive) is None  # a retry changes nothing
    assert sorted(p.name for p in archive.iterdir()) == ["_SUCCESS", "a.csv"]


def test_marker_record_from_an_xcom_is_checked():
    with pytest.raises(ValueError, match="not a marker record"):
        MarkerFile.from_dict({"path": "/x/_SUCCESS", "name": "_SUCCESS"})
    with pytest.raises(ValueError, match="its path is"):
        MarkerFile.from_dict({"path": "/x/data.csv", "name": "_SUCCESS", "size": 0, "mtime_ns": 1, "inode": 2})


# ---- rule rename ------------------------------------------------------------------------------


def test_rename_takes_visible_files_old_enough(tmp_path):
    rule = ArrivalRule(rule="rename", min_age_seconds=5)
    _write(tmp_path / ".a.csv.part", mtime=NOW - 60)  # the upload in progress
    _write(tmp_path / "b.csv", mtime=NOW - 60)
    _write(tmp_path / "c.csv", mtime=NOW - 1)
    result = scan(tmp_path, DEFAULT_PATTERNS, rule, None, now=NOW)
    assert [f.name for f in result.ready] == ["b.csv"]
    assert _reasons(result) == {".a.csv.part": "hidden", "c.csv": "too_new"}


# ---- every entry has a record -----------------------------------------------------------------


def test_every_entry_not_taken_has_its_reason(tmp_path):
    rule = ArrivalRule(rule="rename", min_age_seconds=0)
    for name in ("a.csv", "B.CSV", "c.csv.gz", "D.Parquet", "notes.txt", "a.csv.bak", ".hidden.csv"):
        _write(tmp_path / name)
    (tmp_path / "sub.csv").mkdir()
    (tmp_path / "link.csv").symlink_to(tmp_path / "a.csv")
    (tmp_path / "dangling.csv").symlink_to(tmp_path / "nowhere.csv")
    os.mkfifo(tmp_path / "pipe.csv")
    result = scan(tmp_path, DEFAULT_PATTERNS, rule, None, now=NOW)
    assert [f.name for f in result.ready] == ["B.CSV", "D.Parquet", "a.csv", "c.csv.gz"]
    assert _reasons(result) == {
        ".hidden.csv": "hidden",
        "a.csv.bak": "pattern",
        "dangling.csv": "not_regular_file",
        "link.csv": "not_regular_file",
        "notes.txt": "pattern",
        "pipe.csv": "not_regular_file",
        "sub.csv": "not_regular_file",
    }
    assert result.summary() == {
        "announced": 4,
        "ignored": {"hidden": 1, "not_regular_file": 4, "pattern": 2},
    }
    details = {e.name: e.detail for e in result.ignored}
    assert "symbolic link" in details["link.csv"] and "sub-folder" in details["sub.csv"]


def test_a_missing_folder_is_nothing_yet(tmp_path):
    result = scan(tmp_path / "not-yet", DEFAULT_PATTERNS, STABLE, None, now=NOW)
    assert not result.exists and result.ready == () and result.ignored == ()


def test_patterns_match_case_insensitively():
    assert matches("DAY1.CSV", ["*.csv"]) and matches("x.Csv.GZ", ["*.csv.gz"])
    assert not matches("x.csv.gz", ["*.csv"]) and not matches("x.csv", ["*.parquet"])


_NAMES = st.text(alphabet="abAB._-", min_size=1, max_size=8).filter(lambda n: n not in (".", ".."))


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    files=st.sets(_NAMES, max_size=8),
    folders=st.sets(_NAMES, max_size=3),
    rule=st.sampled_from(["stable", "marker", "rename"]),
)
def test_every_entry_is_either_announced_or_ignored_once(tmp_path_factory, files, folders, rule):
    root = tmp_path_factory.mktemp("drop")
    for name in files:
        _write(root / name, mtime=NOW - 60)
    for name in folders - files:
        (root / name).mkdir()
    arrival = ArrivalRule(rule=rule, marker="{name}.done")
    first = scan(root, ["*.a", "*b*"], arrival, None, now=NOW)
    result = scan(root, ["*.a", "*b*"], arrival, first.state, now=NOW + 5)
    announced = [f.name for f in result.ready]
    ignored = [e.name for e in result.ignored]
    assert sorted(announced + ignored) == sorted(os.listdir(root))
    assert not any(n.startswith(".") for n in announced)


# ---- the rule itself, and where its values come from ------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rule": "mtime"}, "unknown arrival rule 'mtime'"),
        ({"marker": "{name}"}, "cannot be the data file itself"),
        ({"marker": "done/{name}"}, "not a path"),
        ({"marker": "{name}.{ext}"}, "the only placeholder is {name}"),
        ({"marker": "{name}{name}.done"}, "at most once"),
        ({"marker": ".done"}, "hidden names"),
        ({"marker": ""}, "empty"),
        ({"poll_seconds": 0}, "poll_seconds must be > 0"),
        ({"min_age_seconds": -1}, "min_age_seconds must be >= 0"),
    ],
)
def test_bad_rules_say_what_to_fix(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}").replace(".", r"\.")):
        ArrivalRule(**kwargs)


def test_watch_spec_reads_settings_and_explicit_values_win(mlops_home):
    from mlops_core.settings import load_settings

    dataset = load_settings("dev").dataset
    spec = watch_spec(dataset)
    assert spec.directory == str(mlops_home / "drop" / "churn")
    assert spec.patterns == ("*.csv", "*.csv.gz", "*.parquet")
    assert spec.arrival == ArrivalRule(rule="stable", min_age_seconds=5, marker="{name}.done", poll_seconds=5)
    spec = watch_spec(dataset, directory="/elsewhere", patterns=["*.tsv"], rule="marker", poll_seconds=1)
    assert (spec.directory, spec.patterns, spec.arrival.rule, spec.arrival.poll_seconds) == (
        "/elsewhere",
        ("*.tsv",),
        "marker",
        1.0,
    )
    with pytest.raises(ValueError, match=r"no dataset\.drop_zone given"):
        watch_spec(None, patterns=["*.csv"], rule="rename", min_age_seconds=0, marker="x", poll_seconds=1)


def test_one_shot_scan_for_manual_ingest(tmp_path):
    _write(tmp_path / "A.CSV", mtime=time.time() - 60)
    _write(tmp_path / "new.csv", mtime=time.time())
    assert [f.name for f in scan_drop_zone(tmp_path, ["*.csv"], min_age_seconds=10)] == ["A.CSV"]


def test_complete_files_scans_twice_under_stable(tmp_path):
    _write(tmp_path / "done.csv", mtime=time.time() - 60)
    growing = _write(tmp_path / "growing.csv", mtime=time.time() - 60)  # a writer that paused

    def resume() -> None:
        with growing.open("a") as f:
            f.write("3,4\n")

    spec = watch_spec(
        None, directory=tmp_path, patterns=["*.csv"], rule="stable", min_age_seconds=0, marker="x", poll_seconds=0.4
    )
    timer = threading.Timer(0.1, resume)
    timer.start()
    started = time.monotonic()
    result = complete_files(spec)
    timer.join()
    assert time.monotonic() - started >= 0.4
    assert [f.name for f in result.ready] == ["done.csv"]
    assert {e.name: e.reason for e in result.ignored} == {"growing.csv": "waiting_stable"}


def test_archive_moves_a_link_itself_even_a_dangling_one(tmp_path):
    zone, archive = tmp_path / "drop", tmp_path / "archive"
    zone.mkdir()
    outside = tmp_path / "outside.csv"
    outside.write_text("secret\n")
    (zone / "live.csv").symlink_to(outside)
    (zone / "dangling.csv").symlink_to(tmp_path / "missing.csv")
    for name in ("live.csv", "dangling.csv"):
        moved = archive_file(zone / name, archive)
        assert moved.is_symlink() and not os.path.lexists(zone / name)
    assert outside.read_text() == "secret\n"  # the target never moved
    assert archive_file(zone / "dangling.csv", archive) == archive / "dangling.csv"  # a re-run finds it archived
