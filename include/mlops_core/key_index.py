"""Which committed version holds a row key: an index whose cost per commit does not grow with history.

Layout (plain objects, keys relative to the dataset folder, so it moves to S3/Blob unchanged)::

    datasets/<dataset>/key_index/index.json           # format, bucket width, newest version
    datasets/<dataset>/key_index/bucket-<x>.parquet   # _row_key (sorted) -> version_id

Row keys are hex digests, so their first :data:`BUCKET_CHARS` hex character(s) spread them
evenly over ``16 ** BUCKET_CHARS`` buckets. A commit reads and rewrites only the buckets its keys
fall in; it never lists or reads the versions. Every write replaces a whole object.

Crash safety: a commit writes its version's data files, then the buckets (:meth:`RowKeyIndex.add`),
then the version's manifest (the commit point), then ``index.json``. So an entry may name a version
whose manifest was never written (a crash in between): :meth:`RowKeyIndex.lookup` treats such an
entry as absent (it checks the manifest of every version it hits), and the next commit of those
keys overwrites it. ``index.json`` names the newest version (the next version's parent) and the
version being committed (``pending``), so a crash between the manifest and ``index.json`` is
repaired by the next commit.

Migration: a dataset without ``index.json`` (written by code before this index, or a crash during
a rebuild) is indexed from the ``row_keys.parquet`` of its committed versions the first time a
commit needs the index (:meth:`RowKeyIndex.ensure`).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pandas as pd

from mlops_core.contract import ROW_KEY_COLUMN
from mlops_core.storage import ObjectStore

log = logging.getLogger(__name__)

INDEX_FOLDER = "key_index"
INDEX_META_NAME = "index.json"
INDEX_FORMAT = 1
BUCKET_CHARS = 1  # hex characters of the row key that name its bucket: 16 buckets
VERSION_COLUMN = "version_id"


class RowKeyIndex:
    """Row key -> committed version of one dataset, in hash buckets (see the module docstring)."""

    def __init__(self, store: ObjectStore, dataset_prefix: str, manifest_key: Callable[[str], str]) -> None:
        self.store = store
        self.folder = f"{dataset_prefix}/{INDEX_FOLDER}"
        self._manifest_key = manifest_key
        self._buckets: dict[str, pd.DataFrame] = {}  # read in this commit, reused by add()
        self._committed: dict[str, bool] = {}

    # ------------------------------------------------------------------ keys
    @property
    def meta_key(self) -> str:
        return f"{self.folder}/{INDEX_META_NAME}"

    def bucket_key(self, bucket: str) -> str:
        return f"{self.folder}/bucket-{bucket}.parquet"

    @staticmethod
    def bucket_of(row_key: str) -> str:
        return row_key[:BUCKET_CHARS].lower()

    # ------------------------------------------------------------------ meta
    def meta(self) -> dict[str, Any] | None:
        """``index.json``, or None when the dataset has no index yet."""
        if not self.store.exists(self.meta_key):
            return None
        value = json.loads(self.store.get_bytes(self.meta_key))
        if (
            not isinstance(value, dict)
            or value.get("format") != INDEX_FORMAT
            or value.get("bucket_chars") != BUCKET_CHARS
        ):
            return None  # another layout: rebuilt
        return value

    def _write_meta(self, meta: Mapping[str, Any]) -> None:
        data = json.dumps(dict(meta), indent=2, sort_keys=True, ensure_ascii=True).encode("ascii")
        if self.store.exists(self.meta_key) and self.store.get_bytes(self.meta_key) == data:
            return  # unchanged: a re-run writes nothing
        self.store.put_bytes(self.meta_key, data)

    def ensure(
        self, manifests: Callable[[], list[dict[str, Any]]], row_keys_of: Callable[[str], pd.Series]
    ) -> dict[str, Any]:
        """The index's meta, building the index from the committed versions when it is missing."""
        meta = self.meta()
        if meta is not None:
            return self._settle_pending(meta)
        versions = manifests()
        log.info("building the row-key index of %s from %d committed version(s)", self.folder, len(versions))
        for stale in [k for k in self.store.list_keys(f"{self.folder}/") if k.startswith(f"{self.folder}/")]:
            self.store.delete(stale)
        parts = []
        for manifest in versions:
            keys = row_keys_of(manifest["version_id"]).astype(str)
            parts.append(pd.DataFrame({ROW_KEY_COLUMN: keys, VERSION_COLUMN: manifest["version_id"]}))
        for part in parts:
            self.add(part[ROW_KEY_COLUMN].tolist(), str(part[VERSION_COLUMN].iloc[0]) if len(part) else "")
        latest = versions[-1] if versions else None
        meta = {
            "format": INDEX_FORMAT,
            "bucket_chars": BUCKET_CHARS,
            "latest": None if latest is None else _version_ref(latest),
            "pending": None,
        }
        if versions:  # an empty dataset gets its index.json with its first version
            self._write_meta(meta)
        return meta

    def _settle_pending(self, meta: dict[str, Any]) -> dict[str, Any]:
        """Fold a version whose commit crashed after its manifest into ``latest``."""
        pending = meta.get("pending")
        if not pending:
            return meta
        if self.is_committed(str(pending["version_id"])):
            meta = {**meta, "latest": _newest(meta.get("latest"), pending)}
        return {**meta, "pending": None}

    def latest(self, meta: Mapping[str, Any]) -> str | None:
        """The newest committed version (by ``created_at`` then id), as recorded in ``meta``."""
        latest = meta.get("latest")
        return None if not latest else str(latest["version_id"])

    def begin(self, meta: Mapping[str, Any], manifest: Mapping[str, Any]) -> None:
        """Record the version about to be committed (before its manifest is written)."""
        self._write_meta({**meta, "pending": _version_ref(manifest)})

    def finish(self, meta: Mapping[str, Any], manifest: Mapping[str, Any]) -> None:
        """Record a committed version as the newest one when it is (after its manifest)."""
        self._write_meta({**meta, "latest": _newest(meta.get("latest"), _version_ref(manifest)), "pending": None})

    # ------------------------------------------------------------------ entries
    def is_committed(self, version_id: str) -> bool:
        if version_id not in self._committed:
            self._committed[version_id] = self.store.exists(self._manifest_key(version_id))
        return self._committed[version_id]

    def _bucket(self, bucket: str) -> Any:
        """The bucket's entries as an Arrow table (``_row_key`` sorted, ``version_id``)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if bucket not in self._buckets:
            key = self.bucket_key(bucket)
            if self.store.exists(key):
                table = pq.read_table(pa.BufferReader(self.store.get_bytes(key)))
                table = table.cast(pa.schema([(ROW_KEY_COLUMN, pa.string()), (VERSION_COLUMN, pa.string())]))
            else:
                table = pa.table({ROW_KEY_COLUMN: pa.array([], pa.string()), VERSION_COLUMN: pa.array([], pa.string())})
            self._buckets[bucket] = table
        return self._buckets[bucket]

    def lookup(self, keys: pd.Series) -> pd.Series:
        """The committed version holding each key (aligned with ``keys``), None where none does."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        array = pa.array(keys.astype(str).tolist(), pa.string())
        buckets = pc.utf8_lower(pc.utf8_slice_codeunits(array, 0, BUCKET_CHARS))
        found = np.full(len(array), None, dtype=object)
        for bucket in sorted(pc.unique(buckets).to_pylist()):
            entries = self._bucket(bucket)
            if entries.num_rows == 0:
                continue
            mine = pc.equal(buckets, bucket)
            positions = pc.index_in(pc.filter(array, mine), value_set=entries.column(ROW_KEY_COLUMN))
            found[np.flatnonzero(mine.to_numpy(zero_copy_only=False))] = (
                entries.column(VERSION_COLUMN).take(positions).to_numpy(zero_copy_only=False)
            )
        result = pd.Series(found, index=keys.index, dtype=object)
        hits = result.notna()
        if hits.any():
            live = {v: self.is_committed(v) for v in set(result[hits])}
            result[hits & ~result.map(lambda v: live.get(v, False))] = None
        return result

    def add(self, keys: Iterable[str], version_id: str) -> None:
        """Point ``keys`` at ``version_id``: rewrites only the buckets the keys fall in."""
        import pyarrow as pa
        import pyarrow.compute as pc

        array = pa.array(list(keys), pa.string())
        if len(array) == 0:
            return
        buckets = pc.utf8_lower(pc.utf8_slice_codeunits(array, 0, BUCKET_CHARS))
        for bucket in sorted(pc.unique(buckets).to_pylist()):
            new = pc.filter(array, pc.equal(buckets, bucket))
            existing = self._bucket(bucket)
            kept = existing.filter(pc.invert(pc.is_in(existing.column(ROW_KEY_COLUMN), value_set=new)))
            added = pa.table({ROW_KEY_COLUMN: new, VERSION_COLUMN: pa.array([version_id] * len(new), pa.string())})
            self._write_bucket(bucket, pa.concat_tables([kept, added]))

    def _write_bucket(self, bucket: str, entries: Any) -> None:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        ordered = entries.take(pc.sort_indices(entries, sort_keys=[(ROW_KEY_COLUMN, "ascending")])).combine_chunks()
        buffer = io.BytesIO()
        # Uncompressed: hex keys barely compress, and compressing costs more than the bytes saved.
        pq.write_table(ordered, buffer, compression="none", use_dictionary=[VERSION_COLUMN], write_statistics=False)
        self.store.put_bytes(self.bucket_key(bucket), buffer.getvalue())
        self._buckets[bucket] = ordered


def _version_ref(manifest: Mapping[str, Any]) -> dict[str, str]:
    return {"version_id": str(manifest["version_id"]), "created_at": str(manifest["created_at"])}


def _newest(current: Mapping[str, Any] | None, candidate: Mapping[str, Any]) -> dict[str, str]:
    if not current:
        return dict(candidate)
    order = (str(current["created_at"]), str(current["version_id"]))
    return dict(candidate) if (str(candidate["created_at"]), str(candidate["version_id"])) > order else dict(current)
