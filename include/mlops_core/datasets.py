"""Immutable, content-addressed dataset versions on an :class:`~mlops_core.storage.ObjectStore`.

Layout (keys relative to the store root)::

    datasets/<dataset>/versions/<version_id>/event_date=YYYY-MM-DD/part-0000.parquet
    datasets/<dataset>/versions/<version_id>/row_keys.parquet     # the version's row keys, sorted
    datasets/<dataset>/versions/<version_id>/manifest.json        # written LAST = commit point
                                                                  #   (on a versioned bucket each partition
                                                                  #   records its object_version; reads pin it)
    datasets/<dataset>/key_index/index.json                       # row key -> version index
    datasets/<dataset>/key_index/date=YYYY-MM-DD.parquet          #   (mlops_core.key_index; bucket-<x>
                                                                  #   when keys are whole rows)
    datasets/<dataset>/sources/<sha256>.json                      # which version consumed a file
    datasets/<dataset>/state/<name>.json                          # watermarks of incremental reads
    quarantine/<dataset>/<run_id>/<identity>/reason.json                 # why, always
    quarantine/<dataset>/<run_id>/<identity>/rejected.parquet            # rejected rows with _reason
    quarantine/<dataset>/<run_id>/<identity>/raw                         # the delivered bytes (file rejects)

``<identity>`` is the SHA-256 of what was quarantined (:func:`quarantine_identity`: its kind, its
escaped source name and its content checksum), so two different sources never share a folder and
the same source quarantined again by a retry lands on the same objects.

A version holds only rows whose ``_row_key`` is in no earlier version, so the union of all
versions is the dataset with every row exactly once. Its id is derived from the contract
fingerprint and its row keys, so committing the same rows again is a no-op. A version folder
without ``manifest.json`` (a crash mid-write) does not exist for readers and is overwritten by
the next commit of the same rows.

Commits assume one writer per dataset at a time (the ingest DAG runs with ``max_active_runs=1``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from mlops_core.contract import (
    ENTITY_COLUMN,
    EVENT_TIME_COLUMN,
    ROW_KEY_COLUMN,
    SOURCE_COLUMN,
    DatasetContract,
)
from mlops_core.errors import PermanentError
from mlops_core.key_index import SCHEME_EVENT_DATE, RowKeyIndex, scheme_for
from mlops_core.spill import ExternalSorter, ScratchDir, release_memory
from mlops_core.storage import LocalObjectStore, ObjectNotFound, ObjectStore
from mlops_core.validation import REASON_COLUMN, ROW_KEY_LENGTH, ROW_NUMBER_COLUMN

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pyarrow as pa

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
ROW_KEYS_NAME = "row_keys.parquet"
QUARANTINED = "quarantined"  # source_seen() answer for a file that produced no version
QUARANTINE_RECORD_NAME = "reason.json"
QUARANTINE_ROWS_NAME = "rejected.parquet"
QUARANTINE_RAW_NAME = "raw"
VERSION_ID_LENGTH = 16
REQUIRED_COLUMNS = (EVENT_TIME_COLUMN, ENTITY_COLUMN, ROW_KEY_COLUMN, SOURCE_COLUMN)

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# A reason record; ``<source>.reason.json`` directly in the run folder is the layout before identities.
_QUARANTINE_RECORD = re.compile(r"/[0-9a-f]{64}/reason\.json$")


class DatasetVersionNotFound(PermanentError, LookupError):
    """No committed version with this id."""


@dataclass(frozen=True)
class CommitResult:
    """Outcome of :meth:`DatasetStore.commit_version`.

    ``manifest`` is the new version's manifest, or the existing one when these rows were already
    committed (then ``created`` is False), or None when nothing new was left to commit.
    ``duplicates`` are input rows already present in an earlier version (or repeated within the
    input), with ``_reason``, for the caller to quarantine: ``duplicate_count`` of them, in input
    order; ``duplicate_rows`` holds them as a local Parquet file when the input was a
    :class:`StagedRows` (read them through ``duplicates`` only when they fit in memory);
    ``duplicates_sha256`` is the SHA-256 of their row keys, sorted, one per line, and
    ``duplicates_by_source`` counts them per ``_source``.
    """

    manifest: dict[str, Any] | None
    created: bool
    duplicate_count: int = 0
    duplicate_rows: RowsFile | None = None
    duplicates_sha256: str | None = None
    duplicates_by_source: dict[str, int] = field(default_factory=dict)
    duplicates_frame: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    @property
    def version_id(self) -> str | None:
        return None if self.manifest is None else self.manifest["version_id"]

    @property
    def duplicates(self) -> pd.DataFrame:
        """The duplicate rows with ``_reason`` (read from ``duplicate_rows`` when they are there)."""
        if self.duplicates_frame is not None:
            return self.duplicates_frame
        if self.duplicate_rows is not None:
            return self.duplicate_rows.read()
        return pd.DataFrame()

    def in_memory(self) -> CommitResult:
        """The same result with the duplicate rows read into ``duplicates`` (before the scratch folder goes)."""
        return dataclasses.replace(self, duplicate_rows=None, duplicates_frame=self.duplicates)


def content_sha256(data: bytes) -> str:
    """Checksum of a delivered file, as used by :meth:`DatasetStore.source_seen`."""
    return hashlib.sha256(data).hexdigest()


def version_id_for(contract_fingerprint: str, row_keys: Iterable[str]) -> str:
    """Content address of a version: contract fingerprint + sorted row keys."""
    digest = hashlib.sha256(contract_fingerprint.encode("utf-8"))
    ordered = sorted(row_keys)
    if ordered:
        digest.update(("\n" + "\n".join(ordered)).encode("utf-8"))
    return digest.hexdigest()[:VERSION_ID_LENGTH]


def safe_key_part(name: str) -> str:
    """A string usable as one key segment on every backend.

    Unchanged when it only uses letters, digits, ``.``, ``_`` and ``-``; otherwise the other
    characters become ``_`` and a short hash of the original keeps distinct names distinct.
    """
    cleaned = _SAFE.sub("_", name).strip("._")[:120] or "unnamed"
    if cleaned == name:
        return name
    return f"{cleaned}-{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"


def quarantine_identity(kind: str, source: str, content_sha256: str | None) -> str:
    """The folder name of one quarantined source: SHA-256 of ``[kind, source, content_sha256]`` as JSON.

    The JSON array encoding is injective, so distinct (kind, source, content) triples never share
    a folder (short of a SHA-256 collision); ``kind`` separates delivered files from records the
    pipeline makes itself (rows repeated across a batch, SQL reads, unparsed tails).
    """
    payload = json.dumps([kind, source, content_sha256], ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("ascii")).hexdigest()


class DatasetStore:
    """Versions, source records, quarantine and watermarks of one dataset on an object store."""

    def __init__(self, store: ObjectStore, dataset: str) -> None:
        if not dataset or _SAFE.search(dataset) or dataset.startswith("."):
            raise ValueError(f"dataset name {dataset!r} may only use letters, digits, '.', '_' and '-'")
        self.store = store
        self.dataset = dataset
        self.prefix = f"datasets/{dataset}"

    def __repr__(self) -> str:
        return f"DatasetStore({self.store!r}, {self.dataset!r})"

    # ------------------------------------------------------------------ keys
    def versions_uri(self) -> str:
        """Where the version folders live (``s3://.../datasets/<dataset>/versions/``): what a catalog points at."""
        return self.store.uri(f"{self.prefix}/versions").rstrip("/") + "/"

    def _version_prefix(self, version_id: str) -> str:
        return f"{self.prefix}/versions/{version_id}"

    def _manifest_key(self, version_id: str) -> str:
        return f"{self._version_prefix(version_id)}/{MANIFEST_NAME}"

    def _source_key(self, sha256: str) -> str:
        if not _SHA256.fullmatch(sha256):
            raise ValueError(f"not a lowercase hex SHA-256 checksum: {sha256!r}; use content_sha256(data)")
        return f"{self.prefix}/sources/{sha256}.json"

    def _quarantine_prefix(self, run_id: str | None = None) -> str:
        base = f"quarantine/{self.dataset}"
        return base if run_id is None else f"{base}/{safe_key_part(run_id)}"

    def _list(self, folder: str) -> list[str]:
        """Keys strictly inside ``folder`` (``folder`` ends with '/'; ``run1/`` never matches ``run10/``)."""
        return [k for k in self.store.list_keys(folder) if k.startswith(folder)]

    # ------------------------------------------------------------------ versions: read
    def list_versions(self) -> list[dict[str, Any]]:
        """Manifests of all committed versions, ordered by ``created_at`` then id."""
        manifests = [
            _json_object(self.store.get_bytes(key))
            for key in self._list(f"{self.prefix}/versions/")
            if key.endswith(f"/{MANIFEST_NAME}")
        ]
        return sorted(manifests, key=lambda m: (m["created_at"], m["version_id"]))

    def latest_version(self) -> dict[str, Any] | None:
        """Manifest of the newest committed version, or None when there is none."""
        versions = self.list_versions()
        return versions[-1] if versions else None

    def get_manifest(self, version_id: str) -> dict[str, Any]:
        """Manifest of a committed version; raises :class:`DatasetVersionNotFound`."""
        try:
            return _json_object(self.store.get_bytes(self._manifest_key(safe_key_part(version_id))))
        except ObjectNotFound:
            raise DatasetVersionNotFound(
                f"dataset {self.dataset!r} has no committed version {version_id!r}; "
                f"list_versions() shows the committed ones"
            ) from None

    def read_version(self, version_id: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """All rows of one committed version (optionally only some columns)."""
        manifest = self.get_manifest(version_id)
        parts = [self._read_part(p, columns) for _, p in sorted(manifest["partitions"].items())]
        return _concat(parts)

    def read_versions(self, version_ids: Iterable[str], columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Rows of several versions, concatenated in the given order."""
        return _concat([self.read_version(v, columns) for v in version_ids])

    def iter_batches(
        self, version_ids: Iterable[str], columns: Sequence[str] | None = None, batch_rows: int = 65_536
    ) -> Iterator[pa.RecordBatch]:
        """Rows of several versions as Arrow record batches of at most ``batch_rows`` rows, one
        partition after the other: what is held at a time is one batch, plus, on a store that
        verifies whole objects (S3), the bytes of one partition (a local store is read from disk)."""
        import pyarrow as pa

        for version_id in version_ids:
            manifest = self.get_manifest(version_id)
            for _, partition in sorted(manifest["partitions"].items()):
                object_version = partition.get("object_version")
                source: Any
                if object_version is None and isinstance(self.store, LocalObjectStore):
                    source = str(self.store.path(partition["key"]))
                else:
                    data = (
                        self.store.get_bytes(partition["key"])
                        if object_version is None
                        else self.store.get_bytes(partition["key"], object_version=object_version)
                    )
                    source = pa.BufferReader(data)
                yield from parquet_batches(source, columns, batch_rows)

    def read_window(self, start: Any, end: Any, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Rows with ``_event_time`` in ``[start, end)`` across all committed versions.

        Only partitions whose event date overlaps the window are read. Naive bounds are UTC.
        """
        start_ts, end_ts = _utc(start), _utc(end)
        if end_ts <= start_ts:
            raise ValueError(f"read_window: end {end_ts} must be after start {start_ts}")
        read_columns = None if columns is None else list(dict.fromkeys([*columns, EVENT_TIME_COLUMN]))
        parts = []
        for manifest in self.list_versions():
            for day, partition in sorted(manifest["partitions"].items()):
                day_start = pd.Timestamp(day, tz="UTC")
                if day_start < end_ts and day_start + pd.Timedelta(days=1) > start_ts:
                    frame = self._read_part(partition, read_columns)
                    times = frame[EVENT_TIME_COLUMN]
                    parts.append(frame.loc[(times >= start_ts) & (times < end_ts)])
        out = _concat(parts)
        if columns is not None and not out.empty:
            out = out[list(columns)]
        log.info(
            "read_window %s [%s, %s): %d rows from %d partitions", self.dataset, start_ts, end_ts, len(out), len(parts)
        )
        return out

    def _read_part(self, partition: Mapping[str, Any], columns: Sequence[str] | None = None) -> pd.DataFrame:
        """One partition of a manifest: the object version it recorded, when the bucket is versioned."""
        return self._read_parquet(partition["key"], columns, object_version=partition.get("object_version"))

    def _read_parquet(
        self, key: str, columns: Sequence[str] | None = None, *, object_version: str | None = None
    ) -> pd.DataFrame:
        import pyarrow as pa
        import pyarrow.parquet as pq

        data = (
            self.store.get_bytes(key)
            if object_version is None
            else self.store.get_bytes(key, object_version=object_version)
        )
        table = pq.read_table(pa.BufferReader(data), columns=None if columns is None else list(columns))
        frame: pd.DataFrame = table.to_pandas()
        return frame

    def _write_parquet(self, key: str, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer)
        self.store.put_bytes(key, buffer.getvalue())

    # ------------------------------------------------------------------ versions: write
    def _key_index(self, contract: DatasetContract) -> RowKeyIndex:
        return RowKeyIndex(self.store, self.prefix, self._manifest_key, scheme_for(contract))

    def _partition_row_keys(self, key: str) -> pd.Series:
        keys: pd.Series = self._read_parquet(key, [ROW_KEY_COLUMN])[ROW_KEY_COLUMN]
        return keys

    def _version_row_keys(self, version_id: str) -> pd.Series:
        keys: pd.Series = self._read_parquet(f"{self._version_prefix(version_id)}/{ROW_KEYS_NAME}", [ROW_KEY_COLUMN])[
            ROW_KEY_COLUMN
        ]
        return keys

    def committed_keys(self) -> pd.DataFrame:
        """``_row_key`` and ``version_id`` of every committed row; reads the key indexes only."""
        parts = []
        for manifest in self.list_versions():
            keys = self._read_parquet(
                f"{self._version_prefix(manifest['version_id'])}/{ROW_KEYS_NAME}", [ROW_KEY_COLUMN]
            )
            keys["version_id"] = manifest["version_id"]
            parts.append(keys)
        if not parts:
            return pd.DataFrame({ROW_KEY_COLUMN: pd.Series(dtype="string"), "version_id": pd.Series(dtype=object)})
        return pd.concat(parts, ignore_index=True)

    def commit_version(
        self,
        accepted: pd.DataFrame | StagedRows,
        contract: DatasetContract,
        sources: list[dict[str, Any]],
        run_id: str,
        created_at: str,
        earlier_attempts: Iterable[str] = (),
    ) -> CommitResult:
        """Write the new rows of ``accepted`` as one immutable version.

        Rows whose ``_row_key`` is already in a committed version (or repeated within
        ``accepted``) are left out and returned as ``duplicates``. Rows committed by an earlier
        attempt of this same commit (same ``run_id`` and ``sources``, or a version listed in
        ``earlier_attempts`` that this ``run_id`` committed) are neither rewritten nor reported,
        so a retried task ends exactly like the first attempt did.

        Memory does not grow with the rows: they are merged from local sorted runs (a
        :class:`StagedRows`; a DataFrame is staged first) one bounded chunk at a time, each
        event date's partition is written to a local Parquet file and uploaded whole
        (``ObjectStore.put_file``), and the content address is hashed from the keys as they come
        out of an external sort. What is held at once: about ``memory_bytes`` of rows, and the
        row-key index bucket (one event date of history) being looked up or rewritten.

        Args:
            accepted: validated rows: ``ValidationResult.accepted`` of one or more sources, or
                the :class:`StagedRows` they were added to (then duplicates stay in its scratch
                folder as ``duplicate_rows``, valid until that folder is removed).
            contract: the contract they were validated against (its fingerprint is in the id).
            sources: one ``{key, sha256, rows_accepted, rows_rejected}`` per source file.
            run_id: the pipeline run (Airflow run id) committing the version.
            created_at: ISO timestamp of the run (logical date), never ``now()``.
            earlier_attempts: versions the caller knows an earlier attempt of this run committed
                (e.g. from the source ledger, when that attempt already moved some files away).
        """
        if isinstance(accepted, StagedRows):
            return self._commit_staged(accepted, contract, sources, run_id, created_at, earlier_attempts)
        check_accepted(accepted, contract)
        with ScratchDir() as scratch:
            staged = StagedRows(scratch)
            staged.add(staged.new_source(), accepted)
            result = self._commit_staged(staged, contract, sources, run_id, created_at, earlier_attempts)
            return result.in_memory()

    def _commit_staged(
        self,
        staged: StagedRows,
        contract: DatasetContract,
        sources: list[dict[str, Any]],
        run_id: str,
        created_at: str,
        earlier_attempts: Iterable[str],
    ) -> CommitResult:
        if staged.rows == 0:
            return CommitResult(None, created=False)
        if staged.schema is not None:
            missing = [c for c in contract.column_names if c not in staged.schema.names]
            if missing:
                raise ValueError(f"commit_version: columns {missing} missing; stage ValidationResult.accepted")
        index = self._key_index(contract)
        meta = index.ensure(self.list_versions, self._version_row_keys, self._partition_row_keys)
        sorting = _CommitPass(self, staged, index, sources, run_id, set(earlier_attempts))
        sorting.run()
        release_memory()
        fingerprint = contract.fingerprint

        # Same rows as an existing version (the same rows delivered again): a no-op, nothing reported.
        if not sorting.repeats and not sorting.new_rows and len(sorting.hit_versions) == 1:
            (same,) = sorting.hit_versions
            manifest = self._manifest_cached(same, sorting.manifests)
            if manifest.get("row_count") == sorting.unique_keys and manifest.get("contract_fingerprint") == fingerprint:
                log.info("commit %s: rows already committed as version %s", self.dataset, same)
                return CommitResult(manifest, created=False)

        keys = sorting.hash_keys(fingerprint)  # refuses a key with two event times: nothing is written yet
        duplicates = sorting.duplicates()
        sorting.keys.delete()  # sorted out: only the files they became are needed from here on
        sorting.dups.delete()
        release_memory()
        if not sorting.new_rows:
            own = sorted(sorting.mine_versions)
            existing = self.get_manifest(own[-1]) if own else None
            log.info(
                "commit %s: nothing new (%d duplicate rows, %d already committed by run %s)",
                self.dataset,
                duplicates.count,
                sorting.mine_rows,
                run_id,
            )
            return CommitResult(existing, created=False, **duplicates.fields())
        version_id = keys.version_id
        if self.store.exists(self._manifest_key(version_id)):
            return CommitResult(self.get_manifest(version_id), created=False, **duplicates.fields())

        manifest = self._write_version(version_id, sorting, keys, contract, sources, run_id, created_at, index, meta)
        log.info(
            "committed %s version %s: %d rows in %d partitions, %d duplicates left out",
            self.dataset,
            version_id,
            manifest["row_count"],
            len(manifest["partitions"]),
            duplicates.count,
        )
        return CommitResult(manifest, created=True, **duplicates.fields())

    @staticmethod
    def _scratch_path(sorting: _CommitPass, stem: str) -> Path:
        path: Path = sorting.staged.scratch.new_path(stem)
        return path

    def _manifest_cached(self, version_id: str, cache: dict[str, dict[str, Any]]) -> dict[str, Any]:
        if version_id not in cache:
            cache[version_id] = self.get_manifest(version_id)
        return cache[version_id]

    def _write_version(
        self,
        version_id: str,
        sorting: _CommitPass,
        keys: _SortedKeys,
        contract: DatasetContract,
        sources: list[dict[str, Any]],
        run_id: str,
        created_at: str,
        index: RowKeyIndex,
        meta: dict[str, Any],
    ) -> dict[str, Any]:
        prefix = self._version_prefix(version_id)
        for stale in self._list(f"{prefix}/"):  # leftovers of an attempt that never committed
            self.store.delete(stale)
        parent = index.latest(meta)
        partitions: dict[str, dict[str, Any]] = {}
        for day, part in sorting.partitions.items():  # event dates in order
            key = f"{prefix}/event_date={day}/part-0000.parquet"
            object_version = self.store.put_file(key, part.path)
            partitions[day] = {"rows": part.rows, "key": key}
            if object_version is not None:  # a versioned bucket: reads pin the version written here
                partitions[day]["object_version"] = object_version
        self.store.put_file(f"{prefix}/{ROW_KEYS_NAME}", keys.row_keys_path)
        manifest = {
            "version_id": version_id,
            "dataset": self.dataset,
            "contract_fingerprint": contract.fingerprint,
            "created_at": created_at,
            "row_count": sorting.new_rows,
            "partitions": partitions,
            "schema": dict(sorting.staged.dtypes),
            "checksum": keys.checksum,
            "sources": json.loads(json.dumps([dict(s) for s in sources], sort_keys=True, default=str)),
            "event_time_min": _iso_from_ns(sorting.time_min),
            "event_time_max": _iso_from_ns(sorting.time_max),
            "parent": parent,
            "run_id": run_id,
        }
        # The index entries, before the manifest (lookups ignore uncommitted versions); one bucket
        # at a time, streamed from the sorted new keys into a local file that is uploaded whole.
        index.forget()
        for bucket, new_keys in sorting.new_keys_by_bucket():
            index.add_sorted(bucket, new_keys, version_id, self._scratch_path(sorting, f"index-{bucket}.parquet"))
        sorting.index_keys.delete()
        release_memory()
        index.begin(meta, manifest)
        self.store.put_bytes(self._manifest_key(version_id), _json_bytes(manifest))  # the commit point
        index.finish(meta, manifest)
        return manifest

    # ------------------------------------------------------------------ sources
    def source_seen(self, sha256: str) -> str | None:
        """Version id (or ``"quarantined"``) that already consumed a file with this checksum."""
        record = self.source_record(sha256)
        return None if record is None else str(record["consumed_by"])

    def source_record(self, sha256: str) -> dict[str, Any] | None:
        """The ledger record of a file with this checksum (``consumed_by``, ``run_id``, ...), or None."""
        key = self._source_key(sha256)
        if not self.store.exists(key):
            return None
        return _json_object(self.store.get_bytes(key))

    def record_sources(self, sources: Iterable[Mapping[str, Any]], version_id: str | None, run_id: str) -> list[str]:
        """Remember which version consumed each source file (``None`` = quarantined / nothing new).

        Call after :meth:`commit_version` so that a crash in between leaves the file unrecorded
        and the retry re-validates it (the commit is then a no-op). Each source needs ``sha256``.
        """
        written = []
        for source in sources:
            if "sha256" not in source:
                raise ValueError(f"record_sources: source {dict(source)} has no 'sha256'; use content_sha256(data)")
            key = self._source_key(source["sha256"])
            record = {**dict(source), "consumed_by": version_id or QUARANTINED, "run_id": run_id}
            self.store.put_bytes(key, _json_bytes(record))
            written.append(key)
        return written

    # ------------------------------------------------------------------ quarantine
    def quarantine(
        self,
        run_id: str,
        source: str,
        rejected: pd.DataFrame | RowsFile | None,
        reason_summary: str,
        raw: bytes | Path | None = None,
        *,
        kind: str = "file",
        content_sha256: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> str:
        """Keep what could not be accepted, with the reason; returns the key of the reason record.

        Everything goes to one folder per quarantined source (:func:`quarantine_identity` of
        ``kind``, ``source`` and ``content_sha256``): ``rejected.parquet`` (rejected rows with
        ``_reason``) when there are any, ``raw`` (the delivered bytes) when given, and always
        ``reason.json``, written last. Same inputs give the same objects, so a re-run overwrites
        them with identical content.

        Args:
            rejected: the rejected rows: a frame, or a :class:`RowsFile` already in their stored form
                (:class:`QuarantineRows`, ``CommitResult.duplicate_rows``), uploaded as it is.
            raw: the delivered bytes, or a local file holding them (uploaded streamed).
            source: the escaped source name (file name, SQL read) shown in the record.
            kind: ``file`` for a delivered file; other kinds for records the pipeline makes.
            content_sha256: checksum of the source's content (or of what identifies it).
            details: extra JSON-safe fields for the record (e.g. the reason code).
        """
        folder = f"{self._quarantine_prefix(run_id)}/{quarantine_identity(kind, source, content_sha256)}"
        record: dict[str, Any] = {
            **dict(details or {}),
            "dataset": self.dataset,
            "run_id": run_id,
            "kind": kind,
            "source": source,
            "content_sha256": content_sha256,
            "reason": reason_summary,
            "rows_rejected": 0,
            "rejected_key": None,
            "raw_key": None,
            "raw_sha256": None,
        }
        if rejected is not None and len(rejected):
            record["rows_rejected"] = len(rejected)
            record["rejected_key"] = f"{folder}/{QUARANTINE_ROWS_NAME}"
            if isinstance(rejected, RowsFile):
                self.store.put_file(record["rejected_key"], rejected.path)
            else:
                self._write_parquet(record["rejected_key"], _quarantinable(rejected))
        if raw is not None:
            record["raw_key"] = f"{folder}/{QUARANTINE_RAW_NAME}"
            if isinstance(raw, bytes):
                record["raw_sha256"] = hashlib.sha256(raw).hexdigest()
                self.store.put_bytes(record["raw_key"], raw)
            else:
                record["raw_sha256"] = _file_sha256(raw)
                self.store.put_file(record["raw_key"], raw)
        reason_key = f"{folder}/{QUARANTINE_RECORD_NAME}"
        self.store.put_bytes(reason_key, _json_bytes(record))
        log.info("quarantined %s of %s (run %s): %s -> %s", source, self.dataset, run_id, reason_summary, reason_key)
        return reason_key

    def list_quarantine(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Reason records of quarantined sources (all runs, or one run), ordered by key."""
        prefix = f"{self._quarantine_prefix(run_id)}/"
        keys = [k for k in self._list(prefix) if _QUARANTINE_RECORD.search(k) or k.endswith(".reason.json")]
        return [_json_object(self.store.get_bytes(k)) for k in keys]

    def read_quarantined_rows(self, record: Mapping[str, Any]) -> pd.DataFrame:
        """The rejected rows behind a reason record (empty when it was a file-level reject)."""
        if not record.get("rejected_key"):
            return pd.DataFrame()
        return self._read_parquet(record["rejected_key"])

    # ------------------------------------------------------------------ watermarks
    def watermark(self, name: str) -> Any:
        """Last stored value of watermark ``name`` (e.g. the max ``updated_at`` read), or None."""
        key = f"{self.prefix}/state/{safe_key_part(name)}.json"
        if not self.store.exists(key):
            return None
        return json.loads(self.store.get_bytes(key))["value"]

    def set_watermark(self, name: str, value: Any) -> None:
        """Store watermark ``name``; ``value`` must be JSON-serialisable (ISO strings for times)."""
        key = f"{self.prefix}/state/{safe_key_part(name)}.json"
        self.store.put_bytes(key, _json_bytes({"name": name, "value": value}))


def parquet_batches(
    source: Any, columns: Sequence[str] | None = None, batch_rows: int = 65_536
) -> Iterator[pa.RecordBatch]:
    """The record batches of one Parquet file (a path or a ``pyarrow`` buffer reader), one row group
    decoded at a time: single-threaded, which holds about one row group's columns (threads read
    ahead and more than double the peak) and costs no CPU time on a shared machine."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(source)
    try:
        yield from parquet.iter_batches(
            batch_size=batch_rows, columns=None if columns is None else list(columns), use_threads=False
        )
    finally:
        parquet.close()


def _same_commit(manifest: Mapping[str, Any], run_id: str, sources: list[dict[str, Any]]) -> bool:
    normalized = json.loads(json.dumps([dict(s) for s in sources], sort_keys=True, default=str))
    return manifest.get("run_id") == run_id and manifest.get("sources") == normalized


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _json_bytes(payload: Mapping[str, Any]) -> bytes:
    # ensure_ascii: a lone surrogate (a name that was not UTF-8, unescaped) is written as \\udcxx
    # instead of failing the write.
    return json.dumps(payload, indent=2, sort_keys=True, default=str, ensure_ascii=True).encode("ascii")


def _json_object(data: bytes) -> dict[str, Any]:
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _utc(value: Any) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    parts = [p for p in parts if len(p)] or parts[:1]
    if not parts:
        return pd.DataFrame()
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)


def _quarantinable(rejected: pd.DataFrame) -> pd.DataFrame:
    """Rejected rows in a Parquet-safe shape: mixed-type object columns become text."""
    out = rejected.reset_index(drop=True).copy()
    for column in out.columns:
        if out[column].dtype == object:
            out[column] = out[column].map(lambda v: None if v is None or (isinstance(v, float) and v != v) else str(v))
    return out


# --------------------------------------------------------------------------- staged rows
TIME_COLUMN = "_t"  # _event_time as int64 ns (UTC): the first sort key of staged rows
KEY_HIGH, KEY_LOW = "_k1", "_k2"  # the row key's 32 hex digits as two uint64 numbers, ordered as the text
INPUT_COLUMN = "_input"  # which source (in input order) a staged row came from
ORDER_KEYS = (TIME_COLUMN, KEY_HIGH, KEY_LOW, INPUT_COLUMN, ROW_NUMBER_COLUMN)
DEFAULT_MEMORY_BYTES = 16 * 1024**2
_NS_PER_DAY = 86_400 * 1_000_000_000
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_HEX_VALUE = np.full(256, 255, dtype=np.uint8)
_HEX_VALUE[_HEX_DIGITS] = np.arange(16, dtype=np.uint8)


def key_numbers(keys: Any) -> tuple[np.ndarray, np.ndarray]:
    """Row keys (32 lowercase hex digits, :func:`mlops_core.validation.row_keys`) as two uint64 arrays.

    ``(high, low)`` compare as the text does, so rows sort by number instead of by string.
    Raises ValueError for a key of another shape.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    array = _array(keys)
    if not pa.types.is_string(array.type):
        array = pc.cast(array, pa.string())
    n = len(array)
    if n == 0:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.uint64)
    if array.null_count:
        raise ValueError("commit_version: _row_key may not be null; validate the rows first")
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32, count=n + 1, offset=4 * array.offset)
    if (np.diff(offsets) != ROW_KEY_LENGTH).any():
        raise ValueError(f"commit_version: every _row_key must be {ROW_KEY_LENGTH} hex digits; validate the rows first")
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8, count=ROW_KEY_LENGTH * n, offset=int(offsets[0]))
    digits = _HEX_VALUE[data.reshape(n, ROW_KEY_LENGTH)]
    if (digits == 255).any():
        raise ValueError("commit_version: every _row_key must be lowercase hex digits; validate the rows first")
    packed = np.ascontiguousarray((digits[:, 0::2] << 4) | digits[:, 1::2]).view(">u8")  # (n, 2) big-endian
    return packed[:, 0].astype(np.uint64), packed[:, 1].astype(np.uint64)


def key_texts(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """The inverse of :func:`key_numbers`: an ``(n, 32)`` array of the keys' ASCII hex digits."""
    n = len(high)
    packed = np.empty((n, 2), dtype=">u8")
    packed[:, 0], packed[:, 1] = high, low
    raw = packed.view(np.uint8).reshape(n, 16)
    text = np.empty((n, ROW_KEY_LENGTH), dtype=np.uint8)
    text[:, 0::2], text[:, 1::2] = _HEX_DIGITS[raw >> 4], _HEX_DIGITS[raw & 15]
    return text


def _key_strings(text: np.ndarray) -> Any:
    """An Arrow string array of the keys in an ``(n, 32)`` digit array."""
    import pyarrow as pa

    n = len(text)
    offsets = np.arange(0, ROW_KEY_LENGTH * n + 1, ROW_KEY_LENGTH, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(text.tobytes())])


@dataclass(frozen=True)
class RowsFile:
    """Rows already written to a local Parquet file (scratch), ready to be stored as they are."""

    path: Path
    rows: int

    def __len__(self) -> int:
        return self.rows

    def read(self) -> pd.DataFrame:
        import pyarrow.parquet as pq

        frame: pd.DataFrame = pq.read_table(self.path).to_pandas()
        return frame


class StagedRows:
    """The accepted rows of one commit, staged on local disk (sorted runs in a :class:`ScratchDir`).

    Rows are added per source (a delivered file, a SQL read) with their data row numbers; sources
    are numbered in input order, so "the first of repeated rows" means the first by (source, row
    number), as in the concatenated input. The rows are kept sorted by ``(_event_time, _row_key,
    source, row number)`` (:data:`ORDER_KEYS`; the key as two numbers, :func:`key_numbers`): rows
    with one row key always have one event time (the key is a digest of the entity and the event
    time, or of the whole row, which holds the event time or shares the ingestion time), so
    repeats of a key end up next to each other and each event date is one stretch. Memory: about
    ``memory_bytes`` (see :class:`ExternalSorter`).
    """

    def __init__(self, scratch: ScratchDir, memory_bytes: int = DEFAULT_MEMORY_BYTES) -> None:
        self.scratch = scratch
        self.memory_bytes = max(1, memory_bytes)
        self._sorter = ExternalSorter(scratch, ORDER_KEYS, self.memory_bytes, name="accepted")
        self.schema: Any = None  # Arrow schema of the rows (pandas metadata included), without helper columns
        self.dtypes: dict[str, str] = {}  # pandas dtype of each column, as the manifest records it
        self._sources = 0
        self._added: Counter[int] = Counter()  # source -> number of add() calls
        self._rows: Counter[int] = Counter()  # source -> rows added
        self._next_row: Counter[int] = Counter()
        self._discarded: set[int] = set()

    @property
    def rows(self) -> int:
        """Rows staged for the sources that were not discarded."""
        return sum(n for source, n in self._rows.items() if source not in self._discarded)

    def new_source(self) -> int:
        """Number the next source (input order)."""
        self._sources += 1
        return self._sources - 1

    def add(
        self, source: int, accepted: pd.DataFrame | Any, row_numbers: Sequence[int] | np.ndarray | None = None
    ) -> None:
        """Stage validated rows of ``source`` with their data row numbers: ``ValidationResult.accepted_rows``
        (an Arrow table, staged as it is) or ``ValidationResult.accepted`` (a DataFrame, converted).

        ``row_numbers`` (1-based, increasing through the source) default to the next numbers after
        the rows added for this source so far.
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        if source in self._discarded:
            raise ValueError(f"StagedRows: source {source} was discarded")
        check_accepted(accepted)
        n = len(accepted) if isinstance(accepted, pd.DataFrame) else accepted.num_rows
        if n == 0:
            return
        if row_numbers is None:
            numbers = np.arange(self._next_row[source] + 1, self._next_row[source] + n + 1, dtype=np.int64)
        else:
            numbers = np.asarray(row_numbers, dtype=np.int64)
            if len(numbers) != n:
                raise ValueError(f"StagedRows.add: {len(numbers)} row numbers for {n} rows")
        self._next_row[source] = int(numbers[-1])
        if isinstance(accepted, pd.DataFrame):
            table = pa.Table.from_pandas(accepted.reset_index(drop=True), preserve_index=False)
        else:
            table = accepted
        if self.schema is None:
            self.schema = table.schema
            self.dtypes = {str(c): str(t) for c, t in table.schema.empty_table().to_pandas().dtypes.items()}
        elif not table.schema.equals(self.schema, check_metadata=False):
            table = table.cast(self.schema)
        times = pc.cast(pc.cast(table.column(EVENT_TIME_COLUMN), pa.timestamp("ns", tz="UTC")), pa.int64())
        high, low = key_numbers(table.column(ROW_KEY_COLUMN))
        table = (
            table.append_column(TIME_COLUMN, times)
            .append_column(KEY_HIGH, pa.array(high))
            .append_column(KEY_LOW, pa.array(low))
            .append_column(INPUT_COLUMN, pa.array(np.full(n, source, dtype=np.int32)))
            .append_column(ROW_NUMBER_COLUMN, pa.array(numbers))
        )
        self._added[source] += 1
        self._rows[source] += n
        self._sorter.add(table, tag=source)

    def discard(self, source: int) -> None:
        """Forget every row of ``source`` (a file deferred or re-read after it was staged)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        self._discarded.add(source)
        self._sorter.filter_buffer(lambda t: pc.invert(pc.equal(t.column(INPUT_COLUMN), pa.scalar(source, pa.int32()))))

    def replace(self, source: int) -> int:
        """Discard ``source`` and number a new source that takes its place in the input order."""
        self.discard(source)
        return self.new_source()

    def repeated_keys(self, source: int) -> set[str]:
        """Row keys staged more than once for ``source`` (only possible when it was added in several parts)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self._added[source] < 2 or source in self._discarded:
            return set()
        mine = pa.scalar(source, pa.int32())
        repeated: set[str] = set()
        last: tuple[int, ...] | None = None
        for table in self._sorter.sorted(
            columns=[*ORDER_KEYS, ROW_KEY_COLUMN], tag=source, keep=lambda t: pc.equal(t.column(INPUT_COLUMN), mine)
        ):
            same, last = _same_as_previous(table, last)
            if same.any():
                repeated.update(table.column(ROW_KEY_COLUMN).filter(pa.array(same)).to_pylist())
        return repeated

    def ordered(self) -> Iterator[Any]:
        """Every staged row that was not discarded, as Arrow tables in :data:`ORDER_KEYS` order."""
        import pyarrow as pa
        import pyarrow.compute as pc

        dropped = pa.array(sorted(self._discarded), pa.int32())
        keep = (lambda t: pc.invert(pc.is_in(t.column(INPUT_COLUMN), value_set=dropped))) if len(dropped) else None
        yield from self._sorter.sorted(keep=keep)


def check_accepted(accepted: pd.DataFrame | Any, contract: DatasetContract | None = None) -> None:
    """Raise ValueError unless ``accepted`` looks like ``ValidationResult.accepted`` (a DataFrame) or
    ``ValidationResult.accepted_rows`` (an Arrow table) of ``contract``."""
    needed = (*(contract.column_names if contract is not None else ()), *REQUIRED_COLUMNS)
    names = list(accepted.columns) if isinstance(accepted, pd.DataFrame) else accepted.schema.names
    missing = [c for c in needed if c not in names]
    if missing:
        raise ValueError(
            f"commit_version: columns {missing} missing; pass ValidationResult.accepted from mlops_core.validation"
        )
    if isinstance(accepted, pd.DataFrame):
        nulls = accepted[EVENT_TIME_COLUMN].isna().any() or accepted[ROW_KEY_COLUMN].isna().any()
    else:
        nulls = accepted.column(EVENT_TIME_COLUMN).null_count or accepted.column(ROW_KEY_COLUMN).null_count
    if nulls:
        raise ValueError("commit_version: _event_time and _row_key may not be null; validate the rows first")


def _same_as_previous(table: Any, last: tuple[int, ...] | None) -> tuple[np.ndarray, tuple[int, ...]]:
    """Where a row has the (time, key) of the row before it (``last``: the row before the first's), and the new last."""
    columns = [table.column(c).to_numpy() for c in (TIME_COLUMN, KEY_HIGH, KEY_LOW)]
    n = len(columns[0])
    same = np.ones(n, dtype=bool)
    for values in columns:
        same[1:] &= values[1:] == values[:-1]
    same[0] = last is not None and all(
        int(values[0]) == previous for values, previous in zip(columns, last, strict=True)
    )
    return same, tuple(int(values[n - 1]) for values in columns)


def _array(column: Any) -> Any:
    if not hasattr(column, "num_chunks"):
        return column
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()  # one chunk: no copy


class QuarantineRows:
    """Rejected rows of one source, written batch by batch to a local Parquet file in their stored form.

    Each batch goes through the same conversion as :meth:`DatasetStore.quarantine` applies to a
    frame (mixed-type object columns become text); :meth:`close` gives the :class:`RowsFile`
    to pass as ``rejected``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0
        self._writer: Any = None
        self._schema: Any = None

    def add(self, rejected: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not len(rejected):
            return
        frame = _quarantinable(rejected)
        if self._schema is None:
            inferred = pa.Schema.from_pandas(frame, preserve_index=False)
            fields = [
                pa.field(f.name, pa.string()) if frame[f.name].dtype == object else f for f in inferred
            ]  # object columns are text (or null) in every batch
            self._schema = pa.schema(fields, metadata=inferred.metadata)
            self._writer = pq.ParquetWriter(self.path, self._schema)
        self._writer.write_table(pa.Table.from_pandas(frame, schema=self._schema, preserve_index=False))
        self.rows += len(frame)

    def reset(self) -> None:
        """Forget the rows written so far (the source is read again)."""
        if self._writer is not None:
            self._writer.close()
        self._writer = self._schema = None
        self.rows = 0
        self.path.unlink(missing_ok=True)

    def close(self) -> RowsFile | None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return RowsFile(self.path, self.rows) if self.rows else None


KIND_COLUMN = "_kind"  # in the sorted keys of a commit: NEW_KEY or DUPLICATE_KEY
BUCKET_COLUMN = "_bucket"  # in the sorted new keys of a commit: their index bucket (RowKeyIndex.bucket_numbers)
NEW_KEY, DUPLICATE_KEY = 0, 1
REPEATED_REASON = "duplicate_row: repeated within this commit"
ALREADY_REASON = "duplicate_row: already in version "


@dataclass
class _Partition:
    path: Path
    rows: int = 0


class _CommitPass:
    """One pass over the staged rows in order: each row is new, a duplicate, or committed by this very run.

    Writes only to the scratch folder: each event date's partition (a local Parquet file), the
    new keys of each index bucket, and two external sorts (row keys; duplicate rows in input
    order). The store is only read (index buckets, manifests of versions that hold some keys).
    """

    def __init__(
        self,
        ds: DatasetStore,
        staged: StagedRows,
        index: RowKeyIndex,
        sources: list[dict[str, Any]],
        run_id: str,
        claimed: set[str],
    ) -> None:
        self.ds = ds
        self.staged = staged
        self.index = index  # the dataset's own index: its scheme names the buckets, read and written
        self.sources = sources
        self.run_id = run_id
        self.claimed = claimed
        self.scheme = index.scheme
        self.budget = staged.memory_bytes
        scratch = staged.scratch
        self.keys = ExternalSorter(scratch, [KEY_HIGH, KEY_LOW, KIND_COLUMN], self.budget, name="keys")
        self.index_keys = ExternalSorter(scratch, [BUCKET_COLUMN, KEY_HIGH, KEY_LOW], self.budget, name="index-keys")
        self.dups = ExternalSorter(scratch, [INPUT_COLUMN, ROW_NUMBER_COLUMN], self.budget, name="duplicates")
        self.partitions: dict[str, _Partition] = {}
        self.manifests: dict[str, dict[str, Any]] = {}
        self.attempts: set[str] = set()
        self.hit_versions: set[str] = set()
        self.mine_versions: set[str] = set()
        self.repeats = self.new_rows = self.unique_keys = self.mine_rows = self.dup_count = 0
        self.time_min: int | None = None
        self.time_max: int | None = None
        self.by_source: Counter[str] = Counter()
        self.duplicates_sha256: str | None = None
        self._last: tuple[int, ...] | None = None
        self._buckets_present: dict[str, bool] = {}
        self._index_day: str | None = None
        self._writer: Any = None
        self._pending: list[Any] = []
        self._pending_bytes = 0
        self._open_day: str | None = None

    # ------------------------------------------------------------------ the pass
    def run(self) -> None:
        try:
            for table in self.staged.ordered():
                for day, segment in _by_day(table):
                    self._segment(day, segment)
        finally:
            self._close_partition()

    def _segment(self, day: str, segment: Any) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        if day != self._open_day:
            self._close_partition()
            self._open_day = day
        n = segment.num_rows
        keys = _array(segment.column(ROW_KEY_COLUMN))
        same, self._last = _same_as_previous(segment, self._last)
        first = np.flatnonzero(~same)
        self.repeats += n - len(first)
        self.unique_keys += len(first)
        found = np.full(n, None, dtype=object)
        if len(first):
            looked_up = keys if len(first) == n else keys.take(pa.array(first))
            found[first] = self._lookup(day, looked_up)
        hit = pd.notna(found)
        versions = set(found[hit].tolist())
        self.hit_versions |= versions
        for version in versions - self.attempts - set(self.manifests):
            manifest = self.ds._manifest_cached(version, self.manifests)
            if _same_commit(manifest, self.run_id, self.sources) or (
                version in self.claimed and manifest.get("run_id") == self.run_id
            ):
                self.attempts.add(version)
        mine = hit & pd.Series(found).isin(self.attempts).to_numpy(dtype=bool)
        if mine.any():
            self.mine_rows += int(mine.sum())
            self.mine_versions |= set(found[mine].tolist())
        new = ~same & ~hit
        old = hit & ~mine
        if new.any():
            self._new(day, segment.filter(pa.array(new)))
        duplicate = same | old
        if duplicate.any():
            reasons = [
                ALREADY_REASON + str(version) if is_old else REPEATED_REASON
                for version, is_old in zip(found[duplicate].tolist(), old[duplicate].tolist(), strict=True)
            ]
            rows = segment.filter(pa.array(duplicate)).append_column(REASON_COLUMN, pa.array(reasons, pa.string()))
            self.dup_count += rows.num_rows
            for entry in pc.value_counts(rows.column(SOURCE_COLUMN)).to_pylist():
                self.by_source[str(entry["values"])] += int(entry["counts"])
            self.dups.add(rows.drop_columns([TIME_COLUMN, KEY_HIGH, KEY_LOW]))
            self.keys.add(_kinds(rows, DUPLICATE_KEY))

    def _lookup(self, day: str, keys: Any) -> np.ndarray:
        """The committed version of each key (None: none); one event date's bucket held at a time."""
        if not self._index_has_entries(day):
            return np.full(len(keys), None, dtype=object)
        if self.scheme == SCHEME_EVENT_DATE and day != self._index_day:
            self.index.forget()  # dates come in order: the last date's bucket is let go
            self._index_day = day
        series = pd.Series(pd.arrays.ArrowExtensionArray(keys))
        labels = _one_label(day, len(keys)) if self.scheme == SCHEME_EVENT_DATE else None
        found: np.ndarray = self.index.lookup(series, labels).to_numpy(dtype=object)
        return found

    def _index_has_entries(self, day: str) -> bool:
        """False when no bucket these keys can fall in exists yet (a new event date, a new dataset)."""
        buckets = self.index.buckets_for(day)
        for bucket in buckets:
            if bucket not in self._buckets_present:
                self._buckets_present[bucket] = self.ds.store.exists(self.index.bucket_key(bucket))
        return any(self._buckets_present[b] for b in buckets)

    def _new(self, day: str, rows: Any) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        self.new_rows += rows.num_rows
        times = rows.column(TIME_COLUMN)
        low, high = pc.min_max(times).values()
        self.time_min = low.as_py() if self.time_min is None else min(self.time_min, low.as_py())
        self.time_max = high.as_py() if self.time_max is None else max(self.time_max, high.as_py())
        self.keys.add(_kinds(rows, NEW_KEY))
        high = rows.column(KEY_HIGH)
        days = np.floor_divide(times.to_numpy(), _NS_PER_DAY)
        buckets = self.index.bucket_numbers(days, high.to_numpy())
        self.index_keys.add(pa.table({BUCKET_COLUMN: pa.array(buckets), KEY_HIGH: high, KEY_LOW: rows.column(KEY_LOW)}))
        self._partition(day, rows.select(self.staged.schema.names))

    # ------------------------------------------------------------------ partitions
    def _partition(self, day: str, rows: Any) -> None:
        import pyarrow.parquet as pq

        if self._writer is None:
            if day in self.partitions:
                raise RuntimeError(f"commit: event date {day} came back after later dates; staged rows out of order")
            path = self.staged.scratch.new_path(f"part-{day}.parquet")
            self.partitions[day] = _Partition(path)
            self._writer = pq.ParquetWriter(
                path,
                self.staged.schema,
                use_dictionary=self._dictionary_columns(),
                compression=self._compression(),
            )
        self.partitions[day].rows += rows.num_rows
        self._pending.append(rows)
        self._pending_bytes += rows.nbytes
        if self._pending_bytes >= PARTITION_ROW_GROUP_BUDGETS * self.budget:
            self._flush_partition()

    def _dictionary_columns(self) -> list[str]:
        """Columns dictionary-encoded in a partition: all but ``_row_key`` (distinct digests, where the
        encoder's attempt is wasted work before it falls back to plain values)."""
        return [name for name in self.staged.schema.names if name != ROW_KEY_COLUMN]

    def _compression(self) -> dict[str, str]:
        """Snappy for every column of a partition but ``_row_key``: hex digests, which snappy shrinks by
        about a tenth for a third of the partition's write time (stored plain, as in the key index)."""
        return {name: "none" if name == ROW_KEY_COLUMN else "snappy" for name in self.staged.schema.names}

    def _flush_partition(self) -> None:
        import pyarrow as pa

        if self._pending:
            self._writer.write_table(pa.concat_tables(self._pending))
        self._pending, self._pending_bytes = [], 0

    def _close_partition(self) -> None:
        if self._writer is not None:
            self._flush_partition()
            self._writer.close()
            self._writer = None

    def new_keys_by_bucket(self) -> Iterator[tuple[str, Iterator[Any]]]:
        """The new keys of each index bucket, bucket by bucket, each as a stream of Arrow string arrays
        in key order (consume each stream before the next bucket)."""
        for number, group in itertools.groupby(self._bucket_pieces(), key=lambda piece: piece[0]):
            yield self.index.bucket_name(number), (keys for _, keys in group)

    def _bucket_pieces(self) -> Iterator[tuple[int, Any]]:
        for table in _in_slices(self.index_keys.sorted()):
            buckets = table.column(BUCKET_COLUMN).to_numpy()
            starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
            stops = [*starts[1:].tolist(), len(buckets)]
            high, low = table.column(KEY_HIGH).to_numpy(), table.column(KEY_LOW).to_numpy()
            for start, stop in zip(starts.tolist(), stops, strict=True):
                yield int(buckets[start]), _key_strings(key_texts(high[start:stop], low[start:stop]))

    # ------------------------------------------------------------------ after the pass
    def hash_keys(self, fingerprint: str) -> _SortedKeys:
        """Content address, checksum and ``row_keys.parquet`` of the new keys; checksum of the duplicates' keys.

        The keys come out of an external sort; each hash is fed ``"\\n" + key`` per key in order
        (:func:`version_id_for`; the checksums leave out the first ``"\\n"``).
        """
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        version = hashlib.sha256(fingerprint.encode("utf-8"))
        checksum = hashlib.sha256()
        duplicates = hashlib.sha256()
        path = self.staged.scratch.new_path(ROW_KEYS_NAME)
        schema = pa.Schema.from_pandas(
            pd.DataFrame({ROW_KEY_COLUMN: pd.Series([], dtype="string")}), preserve_index=False
        )
        started = {NEW_KEY: False, DUPLICATE_KEY: False}
        pending: list[Any] = []
        held = 0
        last: tuple[int, int, int] | None = None
        # distinct hex digests: no dictionary, no compression (snappy saves ~10% at the most CPU of this file)
        with pq.ParquetWriter(path, schema, use_dictionary=False, compression="none") as writer:
            for table in _in_slices(self.keys.sorted()):
                last = _check_one_time_per_key(table, last)
                kinds = table.column(KIND_COLUMN)
                for kind in (NEW_KEY, DUPLICATE_KEY):
                    mine = pc.equal(kinds, kind)
                    high = table.column(KEY_HIGH).filter(mine).to_numpy()
                    if not len(high):
                        continue
                    text = key_texts(high, table.column(KEY_LOW).filter(mine).to_numpy())
                    lines = np.hstack([np.full((len(text), 1), ord("\n"), dtype=np.uint8), text]).tobytes()
                    if kind == NEW_KEY:
                        version.update(lines)
                        checksum.update(lines if started[kind] else lines[1:])
                        pending.append(pa.table({ROW_KEY_COLUMN: _key_strings(text)}, schema=schema))
                        held += pending[-1].nbytes
                        if held >= self.budget // 2:
                            writer.write_table(pa.concat_tables(pending))
                            pending, held = [], 0
                    else:
                        duplicates.update(lines if started[kind] else lines[1:])
                    started[kind] = True
            if pending:
                writer.write_table(pa.concat_tables(pending))
        self.duplicates_sha256 = duplicates.hexdigest() if started[DUPLICATE_KEY] else None
        return _SortedKeys(version.hexdigest()[:VERSION_ID_LENGTH], checksum.hexdigest(), path)

    def duplicates(self) -> _Duplicates:
        """The duplicate rows in input order, written to a local Parquet file with ``_reason``."""
        import pyarrow.parquet as pq

        if not self.dup_count:
            return _Duplicates(0, None, None, {})
        path = self.staged.scratch.new_path(QUARANTINE_ROWS_NAME)
        writer: Any = None
        try:
            for table in self.dups.sorted():
                rows = table.drop_columns([INPUT_COLUMN, ROW_NUMBER_COLUMN])
                if writer is None:
                    writer = pq.ParquetWriter(path, rows.schema)
                writer.write_table(rows)
        finally:
            if writer is not None:
                writer.close()
        return _Duplicates(self.dup_count, RowsFile(path, self.dup_count), self.duplicates_sha256, dict(self.by_source))


@dataclass(frozen=True)
class _SortedKeys:
    version_id: str
    checksum: str
    row_keys_path: Path


@dataclass(frozen=True)
class _Duplicates:
    count: int
    rows: RowsFile | None
    sha256: str | None
    by_source: dict[str, int]

    def fields(self) -> dict[str, Any]:
        return {
            "duplicate_count": self.count,
            "duplicate_rows": self.rows,
            "duplicates_sha256": self.sha256,
            "duplicates_by_source": self.by_source,
        }


# A partition's rows are written in row groups of about this many commit budgets (StagedRows.memory_bytes)
# of Arrow data: fewer, larger row groups cost less to write; the commit holds them besides its merge, still
# below the peak of validating a batch (the commit budget is a quarter of one batch).
PARTITION_ROW_GROUP_BUDGETS = 2
SLICE_ROWS = 1 << 16  # keys turned into text at a time (each row becomes several temporaries of 16-32 bytes)


def _in_slices(tables: Iterable[Any], rows: int = SLICE_ROWS) -> Iterator[Any]:
    """The rows of ``tables`` in slices of at most ``rows`` (a merge step can yield its whole budget at once)."""
    for table in tables:
        for start in range(0, table.num_rows, rows):
            yield table.slice(start, rows)


def _by_day(table: Any) -> Iterator[tuple[str, Any]]:
    """``(YYYY-MM-DD, rows)`` for each UTC event date of a table sorted by time (one stretch per date)."""
    days = np.floor_divide(table.column(TIME_COLUMN).to_numpy(), _NS_PER_DAY)
    starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
    stops = [*starts[1:].tolist(), len(days)]
    for start, stop in zip(starts.tolist(), stops, strict=True):
        day = str(np.datetime64(int(days[start]), "D"))
        yield day, table if (start, stop) == (0, len(days)) else table.slice(start, stop - start)


def _kinds(rows: Any, kind: int) -> Any:
    """The numeric keys of ``rows`` with their kind, for the commit's sort of keys."""
    import pyarrow as pa

    kinds = pa.array(np.full(rows.num_rows, kind, dtype=np.int8))
    columns = {KEY_HIGH: rows.column(KEY_HIGH), KEY_LOW: rows.column(KEY_LOW), KIND_COLUMN: kinds}
    return pa.table({**columns, TIME_COLUMN: rows.column(TIME_COLUMN)})


def _check_one_time_per_key(table: Any, last: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
    """Raise ValueError where a row key (in a table sorted by key) comes with two event times.

    A row key is a digest of the entity and the event time (or of the whole row): one key, one
    event time. Rows that break this (not made by validate) would be indexed under two event
    dates and slip past duplicate detection, so the commit refuses them before any write.
    ``last``: (high, low, time) of the row before the table's first; returns the table's last.
    """
    if table.num_rows == 0:
        return last
    high, low = table.column(KEY_HIGH).to_numpy(), table.column(KEY_LOW).to_numpy()
    times = table.column(TIME_COLUMN).to_numpy()
    if last is not None:
        high, low, times = (
            np.r_[np.array([prev], dtype=now.dtype), now] for now, prev in zip((high, low, times), last, strict=True)
        )
    clash = np.flatnonzero((high[1:] == high[:-1]) & (low[1:] == low[:-1]) & (times[1:] != times[:-1]))
    if len(clash):
        at = int(clash[0])
        key = key_texts(high[at : at + 1], low[at : at + 1]).tobytes().decode("ascii")
        first, second = sorted((_iso_from_ns(int(times[at])), _iso_from_ns(int(times[at + 1]))), key=str)
        raise ValueError(
            f"commit_version: row key {key} comes with two event times ({first} and {second}); a row key stands for "
            "one entity at one event time: pass rows made by mlops_core.validation (nothing was written)"
        )
    return int(high[-1]), int(low[-1]), int(times[-1])


def _one_label(label: str, n: int) -> pd.Categorical:
    """Bucket labels for :class:`RowKeyIndex`: ``label`` for each of ``n`` keys."""
    return pd.Categorical.from_codes(cast("Sequence[int]", np.zeros(n, dtype=np.int8)), categories=pd.Index([label]))


def _iso_from_ns(ns: int | None) -> str | None:
    return None if ns is None else pd.Timestamp(ns, unit="ns", tz="UTC").isoformat()
