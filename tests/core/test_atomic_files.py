"""write_atomic and copy_atomic: all or nothing, with the permissions asked for."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mlops_core import atomic_files
from mlops_core.atomic_files import copy_atomic, write_atomic
from mlops_core.ports import free_port, port_is_free


def test_replaces_content_and_creates_folders(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.json"
    write_atomic(target, "one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert os.listdir(target.parent) == ["b.json"]


def test_mode_is_applied(tmp_path: Path) -> None:
    target = write_atomic(tmp_path / "secret", "x", mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_failed_write_leaves_the_old_content_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = write_atomic(tmp_path / "f", "old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["f"]


def _source_file(tmp_path: Path, size: int = (3 << 20) + 12_345) -> tuple[Path, bytes]:
    data = os.urandom(size)  # more than one copy chunk, not a multiple of it
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    return source, data


def test_copy_atomic_copies_every_byte_in_the_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source, data = _source_file(tmp_path)
    calls: list[int] = []
    real = os.copy_file_range

    def counted(*args: int) -> int:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(os, "copy_file_range", counted)
    target = copy_atomic(source, tmp_path / "out" / "copy.bin", mode=0o640)
    assert target.read_bytes() == data
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert len(calls) >= 4  # 3 full chunks, the rest, and the 0 that says the end was reached
    assert os.listdir(target.parent) == ["copy.bin"]


@pytest.mark.parametrize("refused", ["copy_file_range", "both"])
def test_copy_atomic_falls_back_when_the_kernel_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused: str
) -> None:
    import errno

    source, data = _source_file(tmp_path)

    def refuse(*args: object) -> int:
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    if refused == "both":
        monkeypatch.setattr(os, "sendfile", refuse)
    target = copy_atomic(source, tmp_path / "copy.bin")
    assert target.read_bytes() == data


def test_copy_atomic_fails_whole_when_a_kernel_copy_breaks_midway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    source, _ = _source_file(tmp_path)
    target = write_atomic(tmp_path / "copy.bin", b"old")
    real = os.copy_file_range
    calls: list[int] = []

    def broken(*args: int) -> int:
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.EIO, "I/O error")  # a refusal code would not do after a part is written
        return real(*args)

    monkeypatch.setattr(os, "copy_file_range", broken)
    with pytest.raises(OSError, match="I/O error"):
        copy_atomic(source, target)
    assert target.read_bytes() == b"old"  # no part of the new file under the name, no temporary left
    assert set(os.listdir(tmp_path)) == {"source.bin", "copy.bin"}


def test_copy_stream_continues_from_the_readers_position(tmp_path: Path) -> None:
    source, data = _source_file(tmp_path, 100_000)
    with source.open("rb") as src, (tmp_path / "rest.bin").open("wb") as dst:
        assert src.read(10) == data[:10]  # the buffered reader has read ahead of position 10
        dst.write(b"head")
        atomic_files._copy_stream(src, dst)
        assert src.tell() == len(data)
    assert (tmp_path / "rest.bin").read_bytes() == b"head" + data[10:]


def test_free_port_is_free_until_bound() -> None:
    import socket

    port = free_port()
    assert port_is_free("127.0.0.1", port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert not port_is_free("127.0.0.1", port)
