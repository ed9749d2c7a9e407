"""LocalObjectStore: atomic writes, S3-like prefix listing, keys that stay inside the root."""

from __future__ import annotations

import pytest

from mlops_core.storage import LocalObjectStore, ObjectNotFound, ObjectStore


def test_round_trip_and_listing(tmp_path):
    store = LocalObjectStore(tmp_path)
    assert isinstance(store, ObjectStore)
    for key in ("q/run1/a.json", "q/run10/b.json", "q/run2/c.json", "other.txt"):
        store.put_bytes(key, key.encode())
    assert store.get_bytes("q/run1/a.json") == b"q/run1/a.json"
    assert store.list_keys("q/run1/") == ["q/run1/a.json"]
    assert store.list_keys("q/run1") == ["q/run1/a.json", "q/run10/b.json"]
    assert store.list_keys("q/run3/") == []
    assert store.list_keys("oth") == ["other.txt"]
    assert len(store.list_keys()) == 4
    assert store.exists("other.txt") and not store.exists("missing")
    store.delete("other.txt")
    assert not store.exists("other.txt")
    assert store.uri("q/run1/a.json") == (tmp_path / "q/run1/a.json").resolve().as_uri()


def test_missing_object_and_escaping_keys(tmp_path):
    store = LocalObjectStore(tmp_path)
    with pytest.raises(ObjectNotFound, match="no object 'nope'"):
        store.get_bytes("nope")
    for bad in ("../x", "/etc/passwd", "a/../../x"):
        with pytest.raises(ValueError, match="inside the store"):
            store.put_bytes(bad, b"x")


def test_writes_leave_no_temp_files(tmp_path):
    store = LocalObjectStore(tmp_path)
    store.put_bytes("a/b.bin", b"1")
    store.put_bytes("a/b.bin", b"2")  # overwrite is atomic
    assert store.get_bytes("a/b.bin") == b"2"
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.bin"]


def test_put_file_streams_a_local_file_atomically(tmp_path):
    store = LocalObjectStore(tmp_path / "store")
    local = tmp_path / "local.bin"
    local.write_bytes(b"x" * (3 << 20))
    store.put_file("a/big.bin", local)
    assert store.get_bytes("a/big.bin") == local.read_bytes()
    local.write_bytes(b"new")
    store.put_file("a/big.bin", local)  # overwrite is atomic
    assert store.get_bytes("a/big.bin") == b"new"
    assert [p.name for p in (tmp_path / "store" / "a").iterdir()] == ["big.bin"]
    with pytest.raises(ValueError, match="inside the store"):
        store.put_file("../x", local)
