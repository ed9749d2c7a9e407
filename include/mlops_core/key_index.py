"""Which committed version holds a row key: an index whose cost per commit does not grow with history.

Layout (plain objects, keys relative to the dataset folder, so it moves to S3/Blob unchanged)::

    datasets/<dataset>/key_index/index.json                # format, bucket scheme, newest version
    datasets/<dataset>/key_index/date=YYYY-MM-DD.parquet   # scheme "event_date": _row_key (sorted) -> version_id
    datasets/<dataset>/key_index/bucket-<x>.parquet        # scheme "hash": the same, by key prefix

A commit reads and rewrites only the buckets its keys fall in; it never lists or reads the
versions. Every write replaces a whole object. The bucket of a key depends on the contract
(:func:`scheme_for`):

* ``event_date`` (the contract has ``entity_key`` and ``event_time``): the row key is a digest of
  the entity and the event time (:func:`mlops_core.validation.row_keys`), so every row with one key
  has one ``_event_time`` and one UTC event date, and that date is the bucket. A day's commit
  touches only the date buckets of its rows, however long the history is.
* ``hash`` (otherwise: whole-row keys, whose ``_event_time`` is the ingestion time and differs
  between re-deliveries): the first :data:`BUCKET_CHARS` hex character(s) of the key spread the
  keys evenly over ``16 ** BUCKET_CHARS`` buckets.

Crash safety: a commit writes its version's data files, then the buckets (:meth:`RowKeyIndex.add`),
then the version's manifest (the commit point), then ``index.json``. So an entry may name a version
whose manifest was never written (a crash in between): :meth:`RowKeyIndex.lookup` treats such an
entry as absent (it checks the manifest of every version it hits), and the next commit of those
keys overwrites it. ``index.json`` names the newest version (the next version's parent) and the
version being committed (``pending``), so a crash between the manifest and ``index.json`` is
repaired by the next commit.

Migration: a dataset without a current ``index.json`` (written by code before this index or
before this format, indexed under another scheme, or a crash during a rebuild) is indexed from its
committed versions the first time a commit needs the index (:meth:`RowKeyIndex.ensure`): from
their ``row_keys.parquet`` (``hash``) or the ``_row_key`` column of their ``event_date=``
partitions (``event_date``: the partition's date is the keys' bucket).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from mlops_core.contract import ROW_KEY_COLUMN, DatasetContract
from mlops_core.spill import merge as spill_merge
from mlops_core.storage import ObjectStore

log = logging.getLogger(__name__)

INDEX_FOLDER = "key_index"
INDEX_META_NAME = "index.json"
INDEX_FORMAT = 2  # 2: the bucket scheme is recorded (format 1 had hash buckets only)
BUCKET_CHARS = 1  # hash scheme: hex characters of the row key that name its bucket: 16 buckets
VERSION_COLUMN = "version_id"
SCHEME_HASH = "hash"
SCHEME_EVENT_DATE = "event_date"
SCHEMES = (SCHEME_HASH, SCHEME_EVENT_DATE)
_NS_PER_DAY = 86_400 * 1_000_000_000

Labels = Any  # bucket labels aligned with keys: a sequence, Series or Categorical of str


def scheme_for(contract: DatasetContract) -> str:
    """``event_date`` when the row key determines the event time (entity + event time keys), else ``hash``."""
    return SCHEME_EVENT_DATE if contract.entity_key and contract.event_time else SCHEME_HASH


def event_dates(times: pd.Series) -> pd.Categorical:
    """The UTC date (``YYYY-MM-DD``) of each ``_event_time`` (naive values are UTC)."""
    stamps = pd.DatetimeIndex(times if pd.api.types.is_datetime64_any_dtype(times) else pd.to_datetime(times, utc=True))
    days = stamps.as_unit("ns").to_numpy("datetime64[ns]").view(np.int64) // _NS_PER_DAY  # UTC (naive: as UTC)
    codes, uniques = pd.factorize(days, sort=True)  # hashing: linear in the rows
    names = np.datetime_as_string(np.asarray(uniques).astype("datetime64[D]"), unit="D").tolist()
    return pd.Categorical.from_codes(cast("Sequence[int]", codes), categories=names)


class RowKeyIndex:
    """Row key -> committed version of one dataset, in buckets (see the module docstring)."""

    def __init__(
        self,
        store: ObjectStore,
        dataset_prefix: str,
        manifest_key: Callable[[str], str],
        scheme: str = SCHEME_HASH,
    ) -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"RowKeyIndex: unknown bucket scheme {scheme!r}; one of {SCHEMES}")
        self.store = store
        self.folder = f"{dataset_prefix}/{INDEX_FOLDER}"
        self.scheme = scheme
        self._manifest_key = manifest_key
        self._buckets: dict[str, pd.DataFrame] = {}  # read in this commit, reused by add()
        self._committed: dict[str, bool] = {}

    # ------------------------------------------------------------------ keys
    @property
    def meta_key(self) -> str:
        return f"{self.folder}/{INDEX_META_NAME}"

    def bucket_key(self, bucket: str) -> str:
        if self.scheme == SCHEME_EVENT_DATE:
            return f"{self.folder}/date={bucket}.parquet"
        return f"{self.folder}/bucket-{bucket}.parquet"

    @staticmethod
    def bucket_of(row_key: str) -> str:
        """The hash-scheme bucket of a row key."""
        return row_key[:BUCKET_CHARS].lower()

    def labels_for(self, keys: pd.Series, event_times: pd.Series | None = None) -> Labels:
        """The bucket of each key (aligned with ``keys``): its event date or its hash prefix."""
        if self.scheme == SCHEME_EVENT_DATE:
            if event_times is None or len(event_times) != len(keys):
                raise ValueError("RowKeyIndex: the event_date scheme needs the _event_time of every key")
            return event_dates(event_times)

        return _hash_labels(_key_array(keys))

    def _groups(self, keys: Any, labels: Labels | None) -> list[tuple[str, np.ndarray]]:
        """``(bucket, positions of its keys)`` for each bucket the keys fall in, buckets sorted."""
        if labels is None:
            labels = _hash_labels(_key_array(keys))
        codes, uniques = pd.factorize(labels, sort=True)
        if len(uniques) == 1 and len(codes) == len(keys) and (codes == 0).all():  # one bucket: no sort
            return [(str(uniques[0]), np.arange(len(codes)))]
        if len(codes) != len(keys):
            raise ValueError(f"RowKeyIndex: {len(codes)} bucket labels for {len(keys)} keys")
        if (codes < 0).any():
            raise ValueError("RowKeyIndex: a bucket label is missing")
        if len(uniques) < 2**15:
            codes = codes.astype(np.int16)  # a stable sort of small integers is a linear radix sort
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
        return [(str(u), order[bounds[i] : bounds[i + 1]]) for i, u in enumerate(uniques)]

    # ------------------------------------------------------------------ meta
    def meta(self) -> dict[str, Any] | None:
        """``index.json``, or None when the dataset has no index (of this format and scheme) yet."""
        if not self.store.exists(self.meta_key):
            return None
        value = json.loads(self.store.get_bytes(self.meta_key))
        if (
            not isinstance(value, dict)
            or value.get("format") != INDEX_FORMAT
            or value.get("scheme") != self.scheme
            or (self.scheme == SCHEME_HASH and value.get("bucket_chars") != BUCKET_CHARS)
        ):
            return None  # another layout: rebuilt
        return value

    def _write_meta(self, meta: Mapping[str, Any]) -> None:
        data = json.dumps(dict(meta), indent=2, sort_keys=True, ensure_ascii=True).encode("ascii")
        if self.store.exists(self.meta_key) and self.store.get_bytes(self.meta_key) == data:
            return  # unchanged: a re-run writes nothing
        self.store.put_bytes(self.meta_key, data)

    def ensure(
        self,
        manifests: Callable[[], list[dict[str, Any]]],
        row_keys_of: Callable[[str], pd.Series],
        partition_keys_of: Callable[[str], pd.Series] | None = None,
    ) -> dict[str, Any]:
        """The index's meta, building the index from the committed versions when it is missing.

        ``row_keys_of(version_id)`` gives a version's row keys (the ``hash`` scheme);
        ``partition_keys_of(object_key)`` the ``_row_key`` column of one ``event_date=`` partition
        named in a manifest (the ``event_date`` scheme: the partition's date is its keys' bucket).
        """
        meta = self.meta()
        if meta is not None:
            return self._settle_pending(meta)
        if self.scheme == SCHEME_EVENT_DATE and partition_keys_of is None:
            raise ValueError("RowKeyIndex.ensure: the event_date scheme needs partition_keys_of")
        versions = manifests()
        log.info(
            "building the %s row-key index of %s from %d committed version(s)", self.scheme, self.folder, len(versions)
        )
        for stale in [k for k in self.store.list_keys(f"{self.folder}/") if k.startswith(f"{self.folder}/")]:
            self.store.delete(stale)
        self._buckets.clear()
        keys: list[pd.Series] = []
        owners: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        for manifest in versions:
            version_id = str(manifest["version_id"])
            if partition_keys_of is not None and self.scheme == SCHEME_EVENT_DATE:
                for day, partition in sorted(manifest["partitions"].items()):
                    part = partition_keys_of(str(partition["key"])).astype(str)
                    keys.append(part)
                    labels.append(np.full(len(part), str(day), dtype=object))
                    owners.append(np.full(len(part), version_id, dtype=object))
            else:
                part = row_keys_of(version_id).astype(str)
                keys.append(part)
                owners.append(np.full(len(part), version_id, dtype=object))
        if keys:
            every = pd.concat(keys, ignore_index=True)
            self._put(
                every,
                np.concatenate(owners) if owners else np.array([], dtype=object),
                pd.Series(np.concatenate(labels), dtype=object) if labels else None,
            )
        latest = versions[-1] if versions else None
        meta = {
            "format": INDEX_FORMAT,
            "scheme": self.scheme,
            "latest": None if latest is None else _version_ref(latest),
            "pending": None,
        }
        if self.scheme == SCHEME_HASH:
            meta["bucket_chars"] = BUCKET_CHARS
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

    def lookup(self, keys: pd.Series, labels: Labels | None = None) -> pd.Series:
        """The committed version holding each key (aligned with ``keys``), None where none does.

        ``labels``: the bucket of each key (:meth:`labels_for`); needed by the ``event_date``
        scheme, computed from the keys by the ``hash`` scheme when omitted. Reads only those buckets.
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        if labels is None and self.scheme == SCHEME_EVENT_DATE:
            raise ValueError("RowKeyIndex.lookup: the event_date scheme needs the bucket labels")
        array = _key_array(keys)
        found = np.full(len(array), None, dtype=object)
        for bucket, positions in self._groups(array, labels):
            entries = self._bucket(bucket)
            if entries.num_rows == 0:
                continue
            mine = array if len(positions) == len(array) else array.take(pa.array(positions))  # one bucket: all
            where = _positions_in_sorted(mine, entries.column(ROW_KEY_COLUMN))
            if where is None:
                where = pc.index_in(mine, value_set=entries.column(ROW_KEY_COLUMN)).to_numpy(zero_copy_only=False)
                where = np.where(pd.isna(where), -1, where).astype(np.int64)
            hit = where >= 0
            if hit.any():
                owners = pc.dictionary_encode(entries.column(VERSION_COLUMN).take(pa.array(where[hit])))
                if isinstance(owners, pa.ChunkedArray):
                    owners = owners.combine_chunks()
                names = owners.dictionary.to_numpy(zero_copy_only=False)
                found[positions[hit]] = names[owners.indices.to_numpy(zero_copy_only=False)]
        result = pd.Series(found, index=keys.index, dtype=object)
        hits = result.notna()
        if hits.any():
            dead = [v for v in pd.unique(result[hits]) if not self.is_committed(str(v))]
            if dead:
                result[result.isin(dead)] = None
        return result

    def add(self, keys: Iterable[str], version_id: str, labels: Labels | None = None) -> None:
        """Point ``keys`` at ``version_id``: rewrites only the buckets the keys fall in (``labels`` as in lookup)."""
        if labels is None and self.scheme == SCHEME_EVENT_DATE:
            raise ValueError("RowKeyIndex.add: the event_date scheme needs the bucket labels")
        import pyarrow as pa

        array = pa.array(keys if isinstance(keys, (pd.Series, list)) else list(keys), pa.string())
        if len(array) == 0:
            return
        self._put(array, version_id, labels)

    def _put(self, keys: Any, versions: np.ndarray | str, labels: Labels | None) -> None:
        """Point each key at its version (one for all, or one each: later entries of a key win), by bucket.

        ``keys``: a Series of str or an Arrow string array.
        """
        import pyarrow as pa

        array = keys if isinstance(keys, pa.Array) else pa.array(keys, pa.string())  # no Python list of the keys
        owners = None if isinstance(versions, str) else pa.array(versions.tolist(), pa.string())
        for bucket, positions in self._groups(array, labels):
            whole = len(positions) == len(array)  # one bucket holds all the keys: no copy
            taken = None if whole else pa.array(positions)
            if owners is None:
                owner = _repeated(str(versions), len(positions))
            else:
                owner = owners if taken is None else owners.take(taken)
            new = pa.table({ROW_KEY_COLUMN: array if taken is None else array.take(taken), VERSION_COLUMN: owner})
            existing = self._bucket(bucket)
            merged = _merge_sorted(existing, new)
            if merged is not None:
                self._write_bucket(bucket, merged, ordered=True)
            else:
                self._write_bucket(bucket, _merge_any(existing, new))

    # ------------------------------------------------------------------ streaming writes
    def bucket_numbers(self, days: np.ndarray, high: np.ndarray) -> np.ndarray:
        """The bucket of each key as a number, ordered as the bucket names: its UTC event day number
        (``event_date``) or its first :data:`BUCKET_CHARS` hex digits (``hash``); ``high`` is the
        key's first 16 hex digits as an unsigned number (``mlops_core.datasets.key_numbers``)."""
        if self.scheme == SCHEME_EVENT_DATE:
            return np.asarray(days, dtype=np.int64)
        return (np.asarray(high, dtype=np.uint64) >> np.uint64(64 - 4 * BUCKET_CHARS)).astype(np.int64)

    def bucket_name(self, number: int) -> str:
        """The name of a bucket :meth:`bucket_numbers` gave (``YYYY-MM-DD`` or hex digits)."""
        if self.scheme == SCHEME_EVENT_DATE:
            return str(np.datetime64(int(number), "D"))
        return f"{int(number):0{BUCKET_CHARS}x}"

    def buckets_for(self, day: str) -> list[str]:
        """The buckets keys of UTC event date ``day`` (``YYYY-MM-DD``) can fall in."""
        if self.scheme == SCHEME_EVENT_DATE:
            return [day]
        return [self.bucket_name(i) for i in range(16**BUCKET_CHARS)]

    def forget(self) -> None:
        """Let go of the buckets read so far (the next lookup reads its bucket again)."""
        self._buckets.clear()

    def add_sorted(self, bucket: str, keys: Iterable[Any], version_id: str, scratch_path: Path) -> int:
        """Point ``keys`` (Arrow string arrays, ascending and distinct over the whole stream) of one
        bucket at ``version_id``, streaming: the bucket's entries are merged with them chunk by
        chunk into a local Parquet file (``scratch_path``) that is uploaded whole (``put_file``).

        Holds the stored bucket's bytes (the store has no streaming read) and a few chunks, never
        the bucket as a table. Returns the number of entries written.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._buckets.pop(bucket, None)
        schema = pa.schema([(ROW_KEY_COLUMN, pa.string()), (VERSION_COLUMN, pa.string())])
        new = (
            pa.table(
                {ROW_KEY_COLUMN: k, VERSION_COLUMN: _repeated(version_id, len(k)), _ORIGIN: _repeated_int(1, len(k))}
            )
            for k in keys
            if len(k)
        )
        key = self.bucket_key(bucket)
        stored = self.store.get_bytes(key) if self.store.exists(key) else None
        sources: list[Iterable[Any]] = [new]
        if stored is not None:
            sources.insert(0, _stored_entries(stored, schema))
        written = 0
        with pq.ParquetWriter(
            str(scratch_path), schema, compression="none", use_dictionary=[VERSION_COLUMN], write_statistics=False
        ) as writer:
            merged = new if stored is None else _last_of_each_key(spill_merge(sources, [ROW_KEY_COLUMN, _ORIGIN]))
            for table in merged:  # without stored entries, the new keys (distinct, in order) as they come
                writer.write_table(table.select([ROW_KEY_COLUMN, VERSION_COLUMN]).cast(schema))
                written += table.num_rows
        del stored
        self.store.put_file(key, scratch_path)
        scratch_path.unlink(missing_ok=True)
        return written

    def _write_bucket(self, bucket: str, entries: Any, *, ordered: bool = False) -> None:
        """Write a bucket's entries, sorted by key first unless ``ordered`` says they are."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        if ordered:
            ordered_entries = entries.combine_chunks()
        else:
            ordered_entries = entries.take(
                pc.sort_indices(entries, sort_keys=[(ROW_KEY_COLUMN, "ascending")])
            ).combine_chunks()
        buffer = io.BytesIO()
        # Uncompressed: hex keys barely compress, and compressing costs more than the bytes saved.
        pq.write_table(
            ordered_entries, buffer, compression="none", use_dictionary=[VERSION_COLUMN], write_statistics=False
        )
        self.store.put_bytes(self.bucket_key(bucket), buffer.getvalue())
        self._buckets[bucket] = ordered_entries


_ORIGIN = "_origin"  # in a streaming bucket merge: 0 stored entry, 1 new entry (equal keys: the new one wins)
_STORED_CHUNK_ROWS = 1 << 16


def _repeated_int(value: int, n: int) -> Any:
    import pyarrow as pa

    return pa.array(np.full(n, value, dtype=np.int8))


def _stored_entries(data: bytes, schema: Any) -> Iterator[Any]:
    """A stored bucket's entries in key order, in chunks; sorted in memory first when they are not
    (a bucket written by other code): the merge needs both inputs in order."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    def chunks() -> Iterator[Any]:
        reader = pq.ParquetFile(pa.BufferReader(data))
        for batch in reader.iter_batches(batch_size=_STORED_CHUNK_ROWS):
            table = pa.Table.from_batches([batch]).cast(schema)
            yield table.append_column(_ORIGIN, _repeated_int(0, table.num_rows))

    last: str | None = None
    for table in chunks():
        keys = table.column(ROW_KEY_COLUMN)
        if table.num_rows and (
            (last is not None and keys[0].as_py() <= last)
            or (table.num_rows > 1 and not pc.all(pc.less(keys.slice(0, table.num_rows - 1), keys.slice(1))).as_py())
        ):
            break  # not in strict key order
        last = keys[table.num_rows - 1].as_py() if table.num_rows else last
    else:
        yield from chunks()
        return
    whole = pq.read_table(pa.BufferReader(data)).cast(schema).sort_by(ROW_KEY_COLUMN)  # stable: the last one wins
    yield whole.append_column(_ORIGIN, _repeated_int(0, whole.num_rows))


def _last_of_each_key(tables: Iterable[Any]) -> Iterator[Any]:
    """Rows of a stream sorted by key (then origin) without those followed by a row of the same key:
    the last entry of each key wins, also across table boundaries."""
    import pyarrow as pa

    held: Any = None  # the last row of the previous table: it may be followed by its key
    for table in tables:
        if held is not None:
            table = pa.concat_tables([held, table])
        keys = _fixed_width(table.column(ROW_KEY_COLUMN))
        if keys is None:
            values = np.array(table.column(ROW_KEY_COLUMN).to_pylist(), dtype=object)
            followed = values[:-1] == values[1:]
        else:
            followed = keys[:-1] == keys[1:]
        keep = np.r_[~followed, False]  # the last row waits for the next table
        held = table.slice(table.num_rows - 1, 1)
        if keep.any():
            yield table.filter(pa.array(keep))
    if held is not None:
        yield held


def _hash_labels(array: Any) -> pd.Series:
    """The hash-scheme bucket of each key (its first :data:`BUCKET_CHARS` characters, lower case)."""
    import pyarrow.compute as pc

    labels: pd.Series = pc.dictionary_encode(pc.utf8_lower(pc.utf8_slice_codeunits(array, 0, BUCKET_CHARS))).to_pandas()
    return labels


def _key_array(keys: Any) -> Any:
    """Row keys (a Series, list or Arrow array of str) as one Arrow string array, as ``keys.astype(str)``."""
    import pyarrow as pa

    if isinstance(keys, pa.ChunkedArray):
        return keys.chunk(0) if keys.num_chunks == 1 else keys.combine_chunks()  # one chunk: no copy
    if isinstance(keys, pa.Array):
        return keys
    series = keys if isinstance(keys, pd.Series) else pd.Series(list(keys), dtype=object)
    values = series.to_numpy(dtype=object)
    if pd.api.types.infer_dtype(values, skipna=False) != "string":
        values = series.astype(str).to_numpy(dtype=object)
    return pa.array(values, pa.string())


def _repeated(text: str, n: int) -> Any:
    """An Arrow string array of ``n`` times ``text``."""
    import pyarrow as pa

    return pa.array([text], pa.string()).take(pa.array(np.zeros(n, dtype=np.int32)))


def _fixed_width(array: Any) -> np.ndarray | None:
    """The values of an Arrow string array as numpy fixed-width bytes (``S<w>``, no copy), or None.

    Only when every value has the same length ``w`` > 0 and holds ASCII without NUL (row keys are
    32 hex digits): then numpy orders and compares them as Python and Arrow order the text.
    """
    import pyarrow as pa

    if isinstance(array, pa.ChunkedArray):
        array = array.chunk(0) if array.num_chunks == 1 else array.combine_chunks()
    if array.null_count or not pa.types.is_string(array.type) or len(array) == 0:
        return None
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32, count=len(array) + 1, offset=array.offset * 4)
    width = int(offsets[1] - offsets[0])
    if width <= 0 or int(offsets[-1] - offsets[0]) != width * len(array):
        return None
    if not (np.diff(offsets) == width).all():
        return None
    data = np.frombuffer(buffers[2], dtype=np.uint8)[int(offsets[0]) : int(offsets[-1])]
    if data.min() == 0 or data.max() >= 0x80:  # NUL or beyond ASCII
        return None
    return data.view(f"S{width}")


def _is_sorted(values: np.ndarray, strictly: bool = False) -> bool:
    if len(values) < 2:
        return True
    return bool((values[1:] > values[:-1]).all() if strictly else (values[1:] >= values[:-1]).all())


def _prefixes(keys: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each fixed-width key as an unsigned integer: ordered as the keys' starts."""
    width = keys.dtype.itemsize
    head = np.ascontiguousarray(keys.view(np.uint8).reshape(len(keys), width)[:, :8])
    prefixes: np.ndarray = head.view(">u8").ravel().astype(np.uint64)
    return prefixes


def _search(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``np.searchsorted(sorted_keys, keys)`` (left) on fixed-width keys, by integer prefixes where they decide.

    Comparing 32-byte strings is slow in numpy, and so is a binary search per key in random order
    (a cache miss per step): the keys' 8-byte prefixes are searched in sorted order; they decide
    where no sorted key shares a key's prefix, one comparison decides where one does, and the
    strings only where several do.
    """
    if keys.dtype.itemsize < 8 or len(sorted_keys) == 0 or len(keys) == 0:
        return np.searchsorted(sorted_keys, keys)
    theirs, mine = _prefixes(sorted_keys), _prefixes(keys)
    order = None if _is_sorted(mine) else np.argsort(mine, kind="stable")
    queries = mine if order is None else mine[order]
    left = np.searchsorted(theirs, queries, side="left")
    right = np.searchsorted(theirs, queries, side="right")
    if order is not None:
        left[order], right[order] = left.copy(), right.copy()
    one = np.flatnonzero(right - left == 1)
    left[one] += keys[one] > sorted_keys[left[one]]
    several = np.flatnonzero(right - left > 1)
    if len(several):
        left[several] = np.searchsorted(sorted_keys, keys[several])
    return left


def _positions_in_sorted(keys: Any, sorted_keys: Any) -> np.ndarray | None:
    """Where each key is in the bucket's sorted, distinct keys (-1: absent), by binary search; None
    when the keys are not of one fixed width (the caller hashes instead)."""
    mine, theirs = _fixed_width(keys), _fixed_width(sorted_keys)
    if mine is None or theirs is None or mine.dtype != theirs.dtype or not _is_sorted(theirs, strictly=True):
        return None
    where = np.minimum(_search(theirs, mine), len(theirs) - 1)
    return np.where(theirs[where] == mine, where, -1).astype(np.int64)


def _merge_sorted(existing: Any, new: Any) -> Any:
    """``existing`` entries (sorted, distinct keys) with ``new`` ones put in (the last entry of a key
    wins), sorted by key, by numpy on fixed-width keys; None when the keys are not of one width."""
    import pyarrow as pa

    new_keys = _fixed_width(new.column(ROW_KEY_COLUMN))
    if new_keys is None:
        return None
    if not _is_sorted(new_keys, strictly=True):
        order = np.argsort(new_keys, kind="stable")  # equal keys keep their order: the last one wins
        ordered = new_keys[order]
        last = np.r_[ordered[1:] != ordered[:-1], True]
        new = new.take(pa.array(order[last]))
        new_keys = ordered[last]
    if existing.num_rows == 0:
        return new
    old_keys = _fixed_width(existing.column(ROW_KEY_COLUMN))
    if old_keys is None or old_keys.dtype != new_keys.dtype or not _is_sorted(old_keys, strictly=True):
        return None
    where = np.minimum(_search(new_keys, old_keys), len(new_keys) - 1)
    kept = new_keys[where] != old_keys  # an old entry of a key that comes again is replaced
    if not kept.all():
        existing = existing.filter(pa.array(kept))
        old_keys = old_keys[kept]
    total = len(old_keys) + len(new_keys)
    at = _search(old_keys, new_keys) + np.arange(len(new_keys))  # places of the new entries
    order = np.empty(total, dtype=np.int64)
    from_new = np.zeros(total, dtype=bool)
    from_new[at] = True
    order[from_new] = len(old_keys) + np.arange(len(new_keys))
    order[~from_new] = np.arange(len(old_keys))
    both = pa.concat_tables([existing.cast(new.schema), new])
    return both.take(pa.array(order))


def _merge_any(existing: Any, new: Any) -> Any:
    """``existing`` entries with ``new`` ones put in (the last entry of a key wins), any keys; unsorted."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(pc.unique(new.column(ROW_KEY_COLUMN))) != new.num_rows:  # keep the last entry of a key
        frame = new.to_pandas().drop_duplicates(ROW_KEY_COLUMN, keep="last")
        columns = (ROW_KEY_COLUMN, VERSION_COLUMN)
        new = pa.table({c: pa.array(frame[c].tolist(), pa.string()) for c in columns})
    kept = existing.filter(pc.invert(pc.is_in(existing.column(ROW_KEY_COLUMN), value_set=new.column(ROW_KEY_COLUMN))))
    return pa.concat_tables([kept, new])


def _version_ref(manifest: Mapping[str, Any]) -> dict[str, str]:
    return {"version_id": str(manifest["version_id"]), "created_at": str(manifest["created_at"])}


def _newest(current: Mapping[str, Any] | None, candidate: Mapping[str, Any]) -> dict[str, str]:
    if not current:
        return dict(candidate)
    order = (str(current["created_at"]), str(current["version_id"]))
    return dict(candidate) if (str(candidate["created_at"]), str(candidate["version_id"])) > order else dict(current)
