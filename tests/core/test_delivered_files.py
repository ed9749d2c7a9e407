"""delivered_files: untrusted paths are refused, only regular files are read, names are escaped losslessly."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_core.delivered_files import DropZone, UntrustedPath, archived_extra, escape_name, unescape_name

# Any name Linux allows: any bytes but '/' and NUL (and not '.' or '..').
fs_names = (
    st.binary(min_size=1, max_size=40)
    .map(lambda b: b.replace(b"/", b"_").replace(b"\x00", b"_"))
    .filter(lambda b: b not in (b".", b".."))
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(raw=fs_names)
def test_escaped_names_round_trip_and_are_json_safe(raw):
    name = os.fsdecode(raw)  # what os.listdir gives: surrogate escapes for bytes that are not UTF-8
    shown = escape_name(name)
    assert unescape_name(shown) == name and os.fsencode(unescape_name(shown)) == raw
    assert json.loads(json.dumps(shown, ensure_ascii=False)) == shown
    shown.encode("utf-8")  # no lone surrogates left
    assert all(c.isprintable() or c == " " for c in shown)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(a=fs_names, b=fs_names)
def test_distinct_names_stay_distinct(a, b):
    if a != b:
        assert escape_name(os.fsdecode(a)) != escape_name(os.fsdecode(b))


def test_ordinary_names_are_unchanged_and_percent_is_escaped():
    assert escape_name("churn_2026-01-01.csv") == "churn_2026-01-01.csv"
    assert escape_name("données 1.csv") == "données 1.csv"
    assert escape_name("100%.csv") == "100%25.csv"
    assert escape_name(os.fsdecode(b"caf\xe9.csv")) == "caf%E9.csv"
    assert escape_name("a\nb\u202e.csv") == "a%0Ab%E2%80%AE.csv"  # newline, right-to-left override


# --------------------------------------------------------------------------- paths
@pytest.fixture
def zone(tmp_path) -> Path:
    drop = tmp_path / "drop"
    drop.mkdir()
    return drop


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "relative.csv",
        "{zone}/../outside.csv",
        "{zone}/./x.csv",
        "{zone}/sub/x.csv",
        "{zone}/.hidden.csv",
        "{zone}/",
        "{zone}/x\x00.csv",
        "{zone}",
        42,
        None,
        "{zone}/\ud800.csv",
    ],
)
def test_paths_outside_the_drop_zone_are_refused_before_anything_is_touched(zone, path):
    (zone / "x.csv").write_text("a\n1\n")
    given_path = path.format(zone=zone) if isinstance(path, str) else path
    with pytest.raises(UntrustedPath) as exc:
        DropZone(zone).names_of([str(zone / "x.csv"), given_path])
    assert str(zone) in str(exc.value) and len(exc.value.paths) == 1
    assert isinstance(exc.value, ValueError)


def test_paths_through_a_linked_folder_are_inside(tmp_path, zone):
    link = tmp_path / "zone-link"
    link.symlink_to(zone)
    assert DropZone(link).names_of([str(zone / "b.csv"), str(link / "a.csv"), str(zone / "a.csv")]) == [
        "a.csv",
        "b.csv",
    ]


# --------------------------------------------------------------------------- entries
def test_regular_file_is_read_with_its_snapshot(zone):
    (zone / "a.csv").write_bytes(b"a\n1\n")
    with DropZone(zone) as dz:
        got = dz.read("a.csv")
    assert got is not None and got.data == b"a\n1\n" and got.rejected is None
    assert got.snapshot is not None and got.snapshot.size == 4 and got.snapshot.sha256


def test_link_fifo_folder_and_socket_are_rejected_unread(tmp_path, zone):
    canary = tmp_path / "secret.txt"
    canary.write_text("TOP SECRET")
    (zone / "link.csv").symlink_to(canary)
    (zone / "dangling.csv").symlink_to(tmp_path / "nowhere")
    os.mkfifo(zone / "pipe.csv")  # no writer: a blocking open would hang forever
    (zone / "folder.csv").mkdir()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(zone / "sock.csv"))
    try:
        with DropZone(zone) as dz:
            got = {name: dz.read(name) for name in ("link.csv", "dangling.csv", "pipe.csv", "folder.csv", "sock.csv")}
    finally:
        sock.close()
    for name, delivered in got.items():
        assert delivered is not None and delivered.data is None, name
        assert delivered.rejected is not None and delivered.rejected.reason == "not_regular_file", name
        assert "TOP SECRET" not in str(delivered.rejected)
    assert "symbolic link" in got["link.csv"].evidence and "secret.txt" in got["link.csv"].evidence
    assert "FIFO" in got["pipe.csv"].evidence and "folder" in got["folder.csv"].evidence


def test_too_large_is_rejected_without_reading(zone):
    (zone / "big.csv").write_bytes(b"x" * 1000)
    with DropZone(zone) as dz:
        got = dz.read("big.csv", max_bytes=999)
    assert got is not None and got.data is None and got.rejected is not None
    assert got.rejected.reason == "too_large" and "1000 bytes" in str(got.rejected)


def test_unreadable_file_is_rejected(zone, monkeypatch):
    (zone / "locked.csv").write_bytes(b"a\n1\n")
    (zone / "locked.csv").chmod(0)
    if os.geteuid() == 0:  # root opens files whatever their mode: have the kernel's answer given instead
        real_open = os.open

        def refuse(path, flags, *args, **kwargs):
            if os.fsdecode(path) == "locked.csv":
                raise PermissionError(13, "Permission denied", "locked.csv")
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", refuse)
    with DropZone(zone) as dz:
        got = dz.read("locked.csv")
    assert got is not None and got.rejected is not None and got.rejected.reason == "unreadable"


def test_gone_file_and_missing_drop_zone(tmp_path, zone):
    with DropZone(zone) as dz:
        assert dz.read("nope.csv") is None
    with DropZone(tmp_path / "missing") as dz:
        assert dz.read("a.csv") is None


def test_changes_after_reading_are_told_apart(zone):
    path = zone / "a.csv"
    path.write_bytes(b"a\n1\n")
    with DropZone(zone) as dz:
        got = dz.read("a.csv")
        assert got is not None and got.snapshot is not None
        snap = got.snapshot
        assert dz.change_since("a.csv", snap) is None
        with path.open("ab") as fh:
            fh.write(b"2\n")
        assert dz.change_since("a.csv", snap) == "changed"
        other = zone / ".new"
        other.write_bytes(b"a\n1\n")
        os.replace(other, path)
        assert dz.change_since("a.csv", snap) == "replaced"
        path.unlink()
        assert dz.change_since("a.csv", snap) == "vanished"


def test_archived_extra_gives_the_appended_tail_or_the_whole_other_file(zone):
    path = zone / "a.csv"
    path.write_bytes(b"a\n1\n")
    with DropZone(zone) as dz:
        got = dz.read("a.csv")
    assert got is not None and got.snapshot is not None
    assert archived_extra(path, got.snapshot, max_bytes=100) is None
    with path.open("ab") as fh:
        fh.write(b"2\n3\n")
    extra = archived_extra(path, got.snapshot, max_bytes=100)
    assert extra is not None and extra.data == b"2\n3\n" and not extra.whole_file and extra.archived_size == 8
    path.write_bytes(b"b\n9\n")  # rewritten in place
    extra = archived_extra(path, got.snapshot, max_bytes=100)
    assert extra is not None and extra.whole_file and extra.data == b"b\n9\n"


def test_copy_puts_the_bytes_read_in_a_private_file_with_their_checksum(tmp_path, zone):
    import hashlib

    (zone / "a.csv").write_bytes(b"a\n1\n" * 1000)
    (zone / "big.csv").write_bytes(b"x" * 1000)
    (zone / "link.csv").symlink_to(zone / "a.csv")
    with DropZone(zone) as dz:
        got = dz.copy("a.csv", tmp_path / "copy-a")
        big = dz.copy("big.csv", tmp_path / "copy-big", max_bytes=999)
        link = dz.copy("link.csv", tmp_path / "copy-link")
        gone = dz.copy("nope.csv", tmp_path / "copy-nope")
    assert got is not None and got.data is None and got.copy == tmp_path / "copy-a"
    assert got.copy.read_bytes() == b"a\n1\n" * 1000 and oct(got.copy.stat().st_mode & 0o777) == "0o600"
    assert got.snapshot is not None and got.snapshot.sha256 == hashlib.sha256(got.copy.read_bytes()).hexdigest()
    assert big is not None and big.rejected is not None and big.rejected.reason == "too_large"
    assert link is not None and link.rejected is not None and link.rejected.reason == "not_regular_file"
    assert gone is None
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("copy-")) == ["copy-a"]
