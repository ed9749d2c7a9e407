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
        if not isinstance(value, dict) or value.get("format") != INDEX_FORMAT or value.get("bucket_chars") != BUCKET_CHARS:
            return None  # another layout: rebuilt
        return value

    def _write_meta(self, meta: Mapping[str, Any]) -> None:
        data = json.dumps(dict(meta), indent=2, sort_keys=True, ensure_ascii=True).encode("ascii")
        if self.store.exists(self.meta_key) and self.store.get_bytes(self.meta_key) == data:
            return  # unchanged: a re-run writes nothing
        self.store.put_bytes(self.meta_key, data)

    def ensure(self, manifests: Callable[[], list[dict[str, Any]]], row_keys_of: Callable[[str], pd.Series]) -> dict[str, Any]:
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
        if parts:
            entries = pd.concat(parts, ignore_index=True)
            for bucket, group in entries.groupby(entries[ROW_KEY_COLUMN].str[:BUCKET_CHARS].str.lower(), sort=True):
                self._write_bucket(str(bucket), group)
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

    def _bucket(self, bucket: str) -> pd.DataFrame:
        if bucket not in self._buckets:
            key = self.bucket_key(bucket)
            if self.store.exists(key):
                import pyarrow as pa
                import pyarrow.parquet as pq

                frame: pd.DataFrame = pq.read_table(pa.BufferReader(self.store.get_bytes(key))).to_pandas()
            else:
                frame = pd.DataFrame({ROW_KEY_COLUMN: pd.Series(dtype=object), VERSION_COLUMN: pd.Series(dtype=object)})
            self._buckets[bucket] = frame
        return self._buckets[bucket]

    def lookup(self, keys: pd.Series) -> pd.Series:
        """The committed version holding each key (aligned with ``keys``), NaN where none does."""
        keys = keys.astype(str)
        buckets = keys.str[:BUCKET_CHARS].str.lower()
        found = pd.Series([None] * len(keys), index=keys.index, dtype=object)
        for bucket in sorted(set(buckets)):
            entries = self._bucket(bucket)
            if entries.empty:
                continue
            mapping = pd.Series(entries[VERSION_COLUMN].to_numpy(dtype=object), index=entries[ROW_KEY_COLUMN].to_numpy(dtype=object))
            mine = buckets == bucket
            found[mine] = keys[mine].map(mapping)
        hits = found.notna()
        if hits.any():
            live = {v: self.is_committed(v) for v in set(found[hits])}
            dead = hits & ~found.map(lambda v: live.get(v, False))
            found[dead] = None
        return found

    def add(self, keys: Iterable[str], version_id: str) -> None:
        """Point ``keys`` at ``version_id``: rewrites only the buckets the keys fall in."""
        new = pd.DataFrame({ROW_KEY_COLUMN: pd.Series(list(keys), dtype=object)})
        if new.empty:
            return
        new[VERSION_COLUMN] = version_id
        for bucket, group in new.groupby(new[ROW_KEY_COLUMN].str[:BUCKET_CHARS].str.lower(), sort=True):
            existing = self._bucket(str(bucket))
            kept = existing.loc[~existing[ROW_KEY_COLUMN].isin(group[ROW_KEY_COLUMN])]
            self._write_bucket(str(bucket), pd.concat([kept, group], ignore_index=True))

    def _write_bucket(self, bucket: str, entries: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        ordered = entries.sort_values(ROW_KEY_COLUMN, kind="mergesort").reset_index(drop=True)
        table = pa.table(
            {
                ROW_KEY_COLUMN: pa.array(ordered[ROW_KEY_COLUMN].astype(str).tolist(), pa.string()),
                VERSION_COLUMN: pa.array(ordered[VERSION_COLUMN].astype(str).tolist(), pa.string()).dictionary_encode(),
            }
        )
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        self.store.put_bytes(self.bucket_key(bucket), buffer.getvalue())
        self._buckets[bucket] = pd.DataFrame(
            {
                ROW_KEY_COLUMN: ordered[ROW_KEY_COLUMN].astype(str).to_numpy(dtype=object),
                VERSION_COLUMN: ordered[VERSION_COLUMN].astype(str).to_numpy(dtype=object),
            }
        )


def _version_ref(manifest: Mapping[str, Any]) -> dict[str, str]:
    return {"version_id": str(manifest["version_id"]), "created_at": str(manifest["created_at"])}


def _newest(current: Mapping[str, Any] | None, candidate: Mapping[str, Any]) -> dict[str, str]:
    if not current:
        return dict(candidate)
    order = (str(current["created_at"]), str(current["version_id"]))
    return dict(candidate) if (str(candidate["created_at"]), str(candidate["version_id"])) > order else dict(current)
