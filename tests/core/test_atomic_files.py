"""write_atomic: all or nothing, with the permissions asked for."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mlops_core.atomic_files import write_atomic
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


def test_free_port_is_free_until_bound() -> None:
    import socket

    port = free_port()
    assert port_is_free("127.0.0.1", port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert not port_is_free("127.0.0.1", port)
