"""Object storage behind one small interface, so datasets and artifacts live on any backend.

Keys are POSIX-style relative paths (``datasets/churn/versions/ab12/manifest.json``). Writes are
atomic per object (write to a temporary name, then rename/commit), so a crash never leaves a
half-written object under its final key. ``local`` is built here; ``aws`` (S3) and ``azure``
(Blob) implement the same protocol in later backends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Protocol, runtime_checkable

from mlops_core.atomic_files import TEMP_PREFIX, copy_atomic, write_atomic


class ObjectNotFound(FileNotFoundError):
    pass


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: its key, its size and a tag that changes whenever the object is rewritten
    (local: the modification time in ns; S3: the ETag), so a summary of objects can tell it is stale
    without reading them."""

    key: str
    size: int
    tag: str
    modified: datetime | None = None  # when the object was last written (UTC), where the store says


@runtime_checkable
class ObjectStore(Protocol):
    """What every storage backend provides."""

    def put_bytes(self, key: str, data: bytes) -> str | None: ...  # the object's version id, if versioned
    def put_file(self, key: str, path: str | Path) -> str | None:
        """Store the content of the local file ``path`` under ``key``, streamed (S3: a multipart upload),
        atomically like ``put_bytes``: readers see the old object or the whole new one."""
        ...

    def get_bytes(self, key: str, *, object_version: str | None = None) -> bytes:
        """The object's bytes, verified; ``object_version`` (what ``put_*`` returned on a versioned
        store) reads exactly that version, or raises :class:`ObjectNotFound` when it is gone."""
        ...

    # An object another service wrote under the store (a training job's output archives): the store's
    # own digest check cannot apply; the backend verifies what that service recorded, where it can.
    def get_foreign_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list_keys(self, prefix: str = "") -> list[str]: ...
    def list_objects(self, prefix: str = "") -> list[ObjectInfo]:
        """As ``list_keys`` (a string prefix, sorted by key), with each object's size and change tag."""
        ...

    def delete(self, key: str) -> None: ...
    def uri(self, key: str = "") -> str: ...


def _clean_key(key: str) -> str:
    path = PurePosixPath(key)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"object key must be relative and stay inside the store: {key!r}")
    return str(path) if str(path) != "." else ""


class LocalObjectStore:
    """A folder on disk (``file://``). Writes go through a temp file and ``os.replace``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def path(self, key: str) -> Path:
        return self.root / _clean_key(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        write_atomic(self.path(key), data)

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        copy_atomic(path, self.path(key))

    def get_bytes(self, key: str, *, object_version: str | None = None) -> bytes:
        if object_version is not None:  # a manifest written on a versioned bucket, read from a folder
            raise ObjectNotFound(
                f"{key!r} is recorded as object version {object_version!r}, but {self.uri()} keeps no object "
                "versions; read it from the versioned store it was written to"
            )
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"no object {key!r} in {self.uri()}") from exc

    def get_foreign_bytes(self, key: str) -> bytes:
        return self.get_bytes(key)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def list_keys(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix`` (string prefix, as in S3: ``"a/b"`` matches ``"a/bc"``;
        ``"a/b/"`` only what is inside folder ``a/b``)."""
        prefix = prefix.lstrip("/")
        _clean_key(prefix) if prefix else None  # validates: relative, no '..'
        folder, _, _ = prefix.rpartition("/")
        search_root = self.root / folder if folder else self.root
        if not search_root.is_dir():
            return []
        out = []
        for p in _walk_files(search_root):
            key = p.relative_to(self.root).as_posix()
            if key.startswith(prefix) and not p.name.startswith(TEMP_PREFIX):
                out.append(key)
        return sorted(out)

    def list_objects(self, prefix: str = "") -> list[ObjectInfo]:
        out = []
        for key in self.list_keys(prefix):
            try:
                st = self.path(key).stat()
            except FileNotFoundError:  # deleted since the listing
                continue
            out.append(
                ObjectInfo(key, st.st_size, str(st.st_mtime_ns), datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=UTC))
            )
        return out

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def uri(self, key: str = "") -> str:
        return self.path(key).as_uri() if key else self.root.as_uri()

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"


def _walk_files(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            yield Path(dirpath) / name
