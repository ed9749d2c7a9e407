"""Immutable, content-addressed dataset versions on an :class:`~mlops_core.storage.ObjectStore`.

Layout (keys relative to the store root)::

    datasets/<dataset>/versions/<version_id>/event_date=YYYY-MM-DD/part-0000.parquet
    datasets/<dataset>/versions/<version_id>/row_keys.parquet     # the version's row keys, sorted
    datasets/<dataset>/versions/<version_id>/manifest.json        # written LAST = commit point
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

import hashlib
import io
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

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
from mlops_core.storage import ObjectNotFound, ObjectStore
from mlops_core.validation import REASON_COLUMN, ROW_KEY_LENGTH

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
    input), with ``_reason``, for the caller to quarantine.
    """

    manifest: dict[str, Any] | None
    created: bool
    duplicates: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def version_id(self) -> str | None:
        return None if self.manifest is None else self.manifest["version_id"]


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
        parts = [self._read_parquet(p["key"], columns) for _, p in sorted(manifest["partitions"].items())]
        return _concat(parts)

    def read_versions(self, version_ids: Iterable[str], columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Rows of several versions, concatenated in the given order."""
        return _concat([self.read_version(v, columns) for v in version_ids])

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
                    frame = self._read_parquet(partition["key"], read_columns)
                    times = frame[EVENT_TIME_COLUMN]
                    parts.append(frame.loc[(times >= start_ts) & (times < end_ts)])
        out = _concat(parts)
        if columns is not None and not out.empty:
            out = out[list(columns)]
        log.info(
            "read_window %s [%s, %s): %d rows from %d partitions", self.dataset, start_ts, end_ts, len(out), len(parts)
        )
        return out

    def _read_parquet(self, key: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(
            pa.BufferReader(self.store.get_bytes(key)), columns=None if columns is None else list(columns)
        )
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
        accepted: pd.DataFrame,
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

        Args:
            accepted: validated rows (``ValidationResult.accepted`` of one or more sources).
            contract: the contract they were validated against (its fingerprint is in the id).
            sources: one ``{key, sha256, rows_accepted, rows_rejected}`` per source file.
            run_id: the pipeline run (Airflow run id) committing the version.
            created_at: ISO timestamp of the run (logical date), never ``now()``.
            earlier_attempts: versions the caller knows an earlier attempt of this run committed
                (e.g. from the source ledger, when that attempt already moved some files away).
        """
        missing = [c for c in (*contract.column_names, *REQUIRED_COLUMNS) if c not in accepted.columns]
        if missing:
            raise ValueError(
                f"commit_version: columns {missing} missing; pass ValidationResult.accepted from mlops_core.validation"
            )
        if accepted[EVENT_TIME_COLUMN].isna().any() or accepted[ROW_KEY_COLUMN].isna().any():
            raise ValueError("commit_version: _event_time and _row_key may not be null; validate the rows first")
        plain_index = isinstance(accepted.index, pd.RangeIndex) and accepted.index.equals(pd.RangeIndex(len(accepted)))
        frame = accepted if plain_index else accepted.reset_index(drop=True)  # no copy of big inputs
        keys = frame[ROW_KEY_COLUMN].astype(str)
        fingerprint = contract.fingerprint

        # Same rows as an existing version (a retry, or the same rows delivered again): no-op.
        unique_sorted = _sorted_text(pd.Series(keys.unique(), dtype=object))
        same_id = version_id_for(fingerprint, unique_sorted)
        if self.store.exists(self._manifest_key(same_id)) and not keys.duplicated().any():
            log.info("commit %s: rows already committed as version %s", self.dataset, same_id)
            return CommitResult(self.get_manifest(same_id), created=False, duplicates=_empty_like(frame))

        repeated = keys.duplicated(keep="first")
        index = self._key_index(contract)
        meta = index.ensure(self.list_versions, self._version_row_keys, self._partition_row_keys)
        version_of = index.lookup(keys, index.labels_for(keys, frame[EVENT_TIME_COLUMN]))
        # Versions written by an earlier attempt of this very commit (same run, same sources):
        # only versions holding some of these keys can matter, so only their manifests are read.
        claimed = set(earlier_attempts)
        attempts = set()
        for hit in sorted(set(version_of.dropna())):
            m = self.get_manifest(hit)
            if _same_commit(m, run_id, sources) or (hit in claimed and m.get("run_id") == run_id):
                attempts.add(hit)
        mine = version_of.isin(attempts) & ~repeated
        old = version_of.notna() & ~mine & ~repeated
        new = version_of.isna() & ~repeated

        reasons = pd.Series([None] * len(frame), dtype=object)
        reasons[repeated] = "duplicate_row: repeated within this commit"
        reasons[old] = "duplicate_row: already in version " + version_of[old].astype(str)
        duplicates = frame.loc[repeated | old].copy()
        duplicates[REASON_COLUMN] = reasons[repeated | old]
        duplicates = duplicates.reset_index(drop=True)

        if not new.any():
            own_versions = sorted(set(version_of[mine]))
            manifest = self.get_manifest(own_versions[-1]) if own_versions else None
            log.info(
                "commit %s: nothing new (%d duplicate rows, %d already committed by run %s)",
                self.dataset,
                len(duplicates),
                int(mine.sum()),
                run_id,
            )
            return CommitResult(manifest, created=False, duplicates=duplicates)

        rows = _sorted_rows(frame if bool(new.all()) else frame.loc[new])
        row_keys = unique_sorted if bool(new.all()) else _sorted_text(rows[ROW_KEY_COLUMN])
        version_id = version_id_for(fingerprint, row_keys)
        if self.store.exists(self._manifest_key(version_id)):
            return CommitResult(self.get_manifest(version_id), created=False, duplicates=duplicates)

        manifest = self._write_version(version_id, rows, row_keys, contract, sources, run_id, created_at, index, meta)
        log.info(
            "committed %s version %s: %d rows in %d partitions, %d duplicates left out",
            self.dataset,
            version_id,
            len(rows),
            len(manifest["partitions"]),
            len(duplicates),
        )
        return CommitResult(manifest, created=True, duplicates=duplicates)

    def _write_version(
        self,
        version_id: str,
        rows: pd.DataFrame,
        sorted_keys: list[str],
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
        # rows are sorted by event time: each day is one contiguous slice
        days = rows[EVENT_TIME_COLUMN].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]")
        days = days.astype("datetime64[D]")
        starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]]) if len(days) else np.array([], dtype=int)
        slices: list[tuple[str, int, int]] = []
        for start, stop in zip(starts.tolist(), [*starts[1:].tolist(), len(days)], strict=True):
            day = str(days[start])
            slices.append((day, start, stop))
            part = rows if (start, stop) == (0, len(rows)) else rows.iloc[start:stop].reset_index(drop=True)
            key = f"{prefix}/event_date={day}/part-0000.parquet"
            self._write_parquet(key, part)
            partitions[day] = {"rows": len(part), "key": key}
        self._write_parquet(
            f"{prefix}/{ROW_KEYS_NAME}", pd.DataFrame({ROW_KEY_COLUMN: pd.Series(sorted_keys, dtype="string")})
        )
        manifest = {
            "version_id": version_id,
            "dataset": self.dataset,
            "contract_fingerprint": contract.fingerprint,
            "created_at": created_at,
            "row_count": len(rows),
            "partitions": partitions,
            "schema": {c: str(t) for c, t in rows.dtypes.items()},
            "checksum": hashlib.sha256("\n".join(sorted_keys).encode("utf-8")).hexdigest(),
            "sources": json.loads(json.dumps([dict(s) for s in sources], sort_keys=True, default=str)),
            "event_time_min": rows[EVENT_TIME_COLUMN].min().isoformat(),
            "event_time_max": rows[EVENT_TIME_COLUMN].max().isoformat(),
            "parent": parent,
            "run_id": run_id,
        }
        # The index entries, before the manifest (lookups ignore uncommitted versions). Keys go in
        # sorted within each bucket (sorted input keeps the bucket rewrite cheap).
        index_keys: list[str] = sorted_keys
        labels: Any = None  # hash buckets: from the keys
        if index.scheme == SCHEME_EVENT_DATE:  # bucket = event date: each day slice's keys
            if len(slices) > 1:
                index_keys = [k for _, a, b in slices for k in _sorted_text(rows[ROW_KEY_COLUMN].iloc[a:b])]
            codes = np.repeat(np.arange(len(slices)), [b - a for _, a, b in slices])
            labels = pd.Categorical.from_codes(
                cast("Sequence[int]", codes), categories=pd.Index([d for d, _, _ in slices])
            )
        index.add(index_keys, version_id, labels)
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
        rejected: pd.DataFrame | None,
        reason_summary: str,
        raw: bytes | None = None,
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
            self._write_parquet(record["rejected_key"], _quarantinable(rejected))
        if raw is not None:
            record["raw_key"] = f"{folder}/{QUARANTINE_RAW_NAME}"
            record["raw_sha256"] = hashlib.sha256(raw).hexdigest()
            self.store.put_bytes(record["raw_key"], raw)
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


def _same_commit(manifest: Mapping[str, Any], run_id: str, sources: list[dict[str, Any]]) -> bool:
    normalized = json.loads(json.dumps([dict(s) for s in sources], sort_keys=True, default=str))
    return manifest.get("run_id") == run_id and manifest.get("sources") == normalized


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


def _sorted_text(values: pd.Series) -> list[str]:
    """``sorted(values.astype(str))``, sorted by Arrow (code point order, as Python sorts str)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    texts = values.astype(str).tolist()
    if texts and all(len(t) == ROW_KEY_LENGTH for t in texts) and all(t.isascii() for t in texts):
        fixed: list[str] = np.sort(np.array(texts, dtype=f"U{ROW_KEY_LENGTH}")).tolist()  # row keys: fast
        return fixed
    array = pa.array(texts, pa.string())
    ordered: list[str] = array.take(pc.array_sort_indices(array)).to_pylist()
    return ordered


def _sorted_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows by ``_event_time`` then ``_row_key`` (a stable sort, as ``sort_values(kind="mergesort")``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    times = frame[EVENT_TIME_COLUMN].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]")
    order_table = pa.table(
        {
            "t": pa.array(times.view(np.int64)),
            "k": pa.array(frame[ROW_KEY_COLUMN].astype(str).tolist(), pa.string()),
            "i": pa.array(np.arange(len(frame))),
        }
    )
    order = pc.sort_indices(order_table, sort_keys=[("t", "ascending"), ("k", "ascending"), ("i", "ascending")])
    ordered: pd.DataFrame = frame.iloc[order.to_numpy()].reset_index(drop=True)
    return ordered


def _empty_like(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.iloc[0:0].copy()
    out[REASON_COLUMN] = pd.Series(dtype=object)
    return out


def _quarantinable(rejected: pd.DataFrame) -> pd.DataFrame:
    """Rejected rows in a Parquet-safe shape: mixed-type object columns become text."""
    out = rejected.reset_index(drop=True).copy()
    for column in out.columns:
        if out[column].dtype == object:
            out[column] = out[column].map(lambda v: None if v is None or (isinstance(v, float) and v != v) else str(v))
    return out
