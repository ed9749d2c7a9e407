"""Feast offline store over an event-date-partitioned Parquet layout (see :mod:`mlops_core.features`).

Layout below the feature view's ``FileSource`` path: a prefix of the environment's object store
(a local folder, or ``s3://bucket/prefix/features/<dataset>/``)::

    event_date=YYYY-MM-DD/version=<version_id>.parquet   # rows of one dataset version with that UTC event date
    _latest/before=YYYY-MM-DD.parquet                    # compacted: latest row per entity, event date < D

A point-in-time join for requests in ``[t_min, t_max]`` reads the partitions of
``[date(t_min), date(t_max)]`` in full and, for anything older, one compacted snapshot: only
the latest row per entity before ``date(t_min)`` can ever answer a request at or after
``t_min``, and whether it is within the feature view's TTL is checked per request. Snapshots
sit on a grid of :data:`SNAPSHOT_DAYS` days, so a join reads at most ``SNAPSHOT_DAYS - 1``
partitions between the snapshot and the window. Each snapshot records a fingerprint of the
partition files it summarises (name, size and change tag -- modification time locally, ETag on
S3 -- of every file before its date);
one that no longer matches (a late or re-materialized version) is never used and is rebuilt
from the newest still-valid snapshot. Nothing here is a second source of truth: deleting
``_latest`` only costs one rebuild. When the TTL is shorter than the grid, only the partitions
inside ``[t_min - ttl, t_max]`` are read and no snapshot is needed.

Feast loads this module by name (``offline_store.type`` of the repo config); it imports Feast,
pandas and pyarrow at module level, so only :mod:`mlops_core.features` methods import it.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast.data_source import DataSource
from feast.feature_view import FeatureView
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.offline_store import OfflineStore, RetrievalJob
from feast.infra.offline_stores.offline_utils import infer_event_timestamp_from_entity_df
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import FeastConfigBaseModel, RepoConfig

from mlops_core.storage import LocalObjectStore, ObjectNotFound, ObjectStore

PARTITION_DIR = re.compile(r"^event_date=(?P<day>\d{4}-\d{2}-\d{2})$")
VERSION_FILE = re.compile(r"^version=(?P<version_id>[A-Za-z0-9][A-Za-z0-9._-]*)\.parquet$")
SNAPSHOT_DIR = "_latest"
SNAPSHOT_FILE = re.compile(r"^before=(?P<day>\d{4}-\d{2}-\d{2})\.parquet$")
SNAPSHOT_DAYS = 7  # grid of the compacted snapshots (days since 0001-01-01, a Monday: weekly, on Mondays)
FINGERPRINT_KEY = b"mlops.fingerprint"
_NS_PER_DAY = 86_400 * 10**9


def utc_day(ts: Any) -> date:
    """UTC calendar date of a timestamp (naive = UTC)."""
    stamp = pd.Timestamp(ts)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return date(stamp.year, stamp.month, stamp.day)


def grid_floor(day: date) -> date:
    """The snapshot grid date at or before ``day``."""
    ordinal = day.toordinal()
    return date.fromordinal(ordinal - (ordinal - 1) % SNAPSHOT_DAYS)


@dataclass(frozen=True)
class PartitionFile:
    day: date
    version_id: str
    key: str  # the object's key in the layout's store
    size: int
    tag: str  # changes when the object is rewritten (local: mtime in ns; S3: ETag)


class OfflineLayout:
    """The date-partitioned offline data under ``prefix`` of an object store: write a version, list
    partitions, read for a join.

    Every object goes through the store (``put_bytes``, ``get_bytes``, ``list_objects``,
    ``delete``), so the layout is the same on a local folder and on S3, and reads of S3 objects are
    checked against the SHA-256 the store recorded when it wrote them. A local store is listed with
    ``os.scandir`` per partition folder and read in place (column projection without reading the
    whole file): the measured fast path of issue 6.
    """

    def __init__(self, objects: ObjectStore, prefix: str, entity_column: str, time_column: str) -> None:
        self.objects = objects
        cleaned = prefix.strip("/")
        self.prefix = f"{cleaned}/" if cleaned else ""
        self.entity_column = entity_column
        self.time_column = time_column
        self._local = objects if isinstance(objects, LocalObjectStore) else None

    def __repr__(self) -> str:
        return f"OfflineLayout({self.uri()!r})"

    def uri(self) -> str:
        return self.objects.uri(self.prefix) if self.prefix else self.objects.uri()

    def _local_dir(self, name: str = "") -> Path:
        if self._local is None:
            raise RuntimeError(f"{self!r} is not in a local folder")
        folder = self._local.path(self.prefix) if self.prefix else self._local.root
        return folder / name if name else folder

    # ------------------------------------------------------------------ listing
    def days(self) -> list[date]:
        """Dates that have a partition, sorted (one listing)."""
        if self._local is None:
            return sorted({f.day for f in self._all_files()})
        root = self._local_dir()
        if not root.is_dir():
            return []
        found = []
        with os.scandir(root) as entries:
            for entry in entries:
                match = PARTITION_DIR.match(entry.name)
                if match and entry.is_dir():
                    found.append(date.fromisoformat(match.group("day")))
        return sorted(found)

    def files(self, days: Iterable[date]) -> list[PartitionFile]:
        """Version files of the given dates, sorted by date then version (metadata only, no data read)."""
        wanted = set(days)
        if self._local is None:
            return [f for f in self._all_files() if f.day in wanted]
        out = []
        for day in sorted(wanted):
            folder = self._local_dir(partition_name(day))
            try:
                entries = list(os.scandir(folder))
            except FileNotFoundError:
                continue
            for entry in entries:
                match = VERSION_FILE.match(entry.name)
                if match and entry.is_file():
                    st = entry.stat()
                    key = f"{self.prefix}{partition_name(day)}/{entry.name}"
                    out.append(PartitionFile(day, match.group("version_id"), key, st.st_size, str(st.st_mtime_ns)))
        return sorted(out, key=lambda f: (f.day, f.version_id))

    def _all_files(self) -> list[PartitionFile]:
        """Every partition file, from one listing of the store (objects of other names are ignored)."""
        out = []
        for info in self.objects.list_objects(f"{self.prefix}event_date="):
            folder, _, name = info.key[len(self.prefix) :].partition("/")
            day_match, file_match = PARTITION_DIR.match(folder), VERSION_FILE.match(name)
            if day_match and file_match:
                day = date.fromisoformat(day_match.group("day"))
                out.append(PartitionFile(day, file_match.group("version_id"), info.key, info.size, info.tag))
        return sorted(out, key=lambda f: (f.day, f.version_id))

    def has_data(self) -> bool:
        if self._local is None:
            return bool(self._all_files())
        return any(self.files([day]) for day in self.days())

    def read(self, f: PartitionFile, columns: list[str] | None = None) -> pa.Table:
        """One partition file (only ``columns`` when given)."""
        if self._local is not None:
            return pq.read_table(self._local.path(f.key), columns=columns, partitioning=None)
        return pq.read_table(pa.BufferReader(self.objects.get_bytes(f.key)), columns=columns)

    # ------------------------------------------------------------------ writing
    def write_version(self, version_id: str, table: pa.Table) -> list[date]:
        """Write one version's rows split by UTC event date; drop its files of other dates.

        Each object is written whole or not at all (local: temp name, then rename; S3: one PUT or a
        completed multipart upload). Re-running a version rewrites the same objects, so rows are
        never duplicated. Returns the dates written.
        """
        name = f"version={version_id}.parquet"
        written: list[date] = []
        if table.num_rows:
            times = table.column(self.time_column).cast(pa.int64()).to_numpy()
            day_numbers = np.floor_divide(times, _NS_PER_DAY)
            order = np.argsort(day_numbers, kind="stable")
            sorted_days = day_numbers[order]
            bounds = np.flatnonzero(np.diff(sorted_days)) + 1
            epoch = date(1970, 1, 1).toordinal()
            for chunk in np.split(order, bounds):
                day = date.fromordinal(epoch + int(day_numbers[chunk[0]]))
                part = table if len(chunk) == table.num_rows else table.take(pa.array(np.sort(chunk)))
                sink = pa.BufferOutputStream()  # native buffer: the encoding runs without the GIL
                pq.write_table(part, sink)
                self.objects.put_bytes(f"{self.prefix}{partition_name(day)}/{name}", sink.getvalue().to_pybytes())
                written.append(day)
        keep = set(written)
        for old in self.files(self.days()):
            if old.version_id == version_id and old.day not in keep:
                self.objects.delete(old.key)
        return written

    # ------------------------------------------------------------------ snapshots
    def snapshot_key(self, boundary: date) -> str:
        return f"{self.prefix}{SNAPSHOT_DIR}/before={boundary.isoformat()}.parquet"

    def snapshot_keys(self) -> list[str]:
        return [k for k in self.objects.list_keys(f"{self.prefix}{SNAPSHOT_DIR}/") if k.endswith(".parquet")]

    @staticmethod
    def fingerprint(files: Sequence[PartitionFile]) -> str:
        text = "\n".join(f"{f.day.isoformat()}/{f.version_id}\t{f.size}\t{f.tag}" for f in files)
        return hashlib.sha256(text.encode()).hexdigest()

    def latest_before(self, boundary: date, listing: Sequence[PartitionFile] | None = None) -> pa.Table | None:
        """Latest row per entity among the rows with event date before ``boundary`` (a grid date).

        Uses the newest snapshot at or before ``boundary`` whose fingerprint matches the partition
        files it summarises and rolls forward from there, writing the snapshots it builds. Returns
        None when no partition is older than ``boundary``.
        """
        if grid_floor(boundary) != boundary:
            raise ValueError(f"{boundary} is not a snapshot grid date")
        files = list(self.files(self.days())) if listing is None else list(listing)
        if not files or files[0].day >= boundary:
            return None
        first = grid_floor(files[0].day)
        base: pa.Table | None = None
        start = first
        probe = boundary
        while probe > first:  # newest valid snapshot at or before boundary
            table = self._read_snapshot(probe, [f for f in files if f.day < probe])
            if table is not None:
                base, start = table, probe
                break
            probe -= timedelta(days=SNAPSHOT_DAYS)
        while start < boundary:
            end = start + timedelta(days=SNAPSHOT_DAYS)
            parts = [self.read(f) for f in files if start <= f.day < end]
            if base is not None:
                parts.insert(0, base)
            if parts:
                base = latest_per_entity(_concat(parts), self.entity_column, self.time_column)
                self._write_snapshot(end, base, [f for f in files if f.day < end])
            start = end
        return base

    def _read_snapshot(self, boundary: date, covered: Sequence[PartitionFile]) -> pa.Table | None:
        key = self.snapshot_key(boundary)
        expected = self.fingerprint(covered).encode()
        if self._local is not None:  # the footer first: a stale snapshot is never read in full
            path = self._local.path(key)
            try:
                meta = pq.read_schema(path).metadata or {}
            except (FileNotFoundError, pa.ArrowInvalid, OSError):
                return None
            if meta.get(FINGERPRINT_KEY) != expected:
                return None
            return pq.read_table(path, partitioning=None).replace_schema_metadata(None)
        try:
            table = pq.read_table(pa.BufferReader(self.objects.get_bytes(key)))
        except (ObjectNotFound, pa.ArrowInvalid):
            return None
        if (table.schema.metadata or {}).get(FINGERPRINT_KEY) != expected:
            return None
        return table.replace_schema_metadata(None)

    def _write_snapshot(self, boundary: date, table: pa.Table, covered: Sequence[PartitionFile]) -> None:
        stamped = table.replace_schema_metadata({FINGERPRINT_KEY: self.fingerprint(covered).encode()})
        buf = io.BytesIO()
        pq.write_table(stamped, buf)
        self.objects.put_bytes(self.snapshot_key(boundary), buf.getvalue())

    def refresh_snapshots(self) -> None:
        """Bring the snapshot at the grid date before the newest partition up to date (cheap when valid)."""
        days = self.days()
        if days:
            self.latest_before(grid_floor(days[-1]))

    # ------------------------------------------------------------------ reading for a join
    def rows_for(
        self, t_min: pd.Timestamp, t_max: pd.Timestamp, ttl: timedelta | None, columns: list[str]
    ) -> pa.Table | None:
        """Every offline row a request in ``[t_min, t_max]`` can be answered with (a superset), or None.

        Partitions of ``[date(t_min), date(t_max)]`` in full; older rows from the compacted
        snapshot plus at most ``SNAPSHOT_DAYS - 1`` partitions, or, when the TTL reaches back less
        than to the snapshot grid, only the partitions of ``[date(t_min - ttl), date(t_min))``.
        """
        first, last = utc_day(t_min), utc_day(t_max)
        listing = self.files(self.days()) if self._local is None else None  # one LIST on a remote store
        days = sorted({f.day for f in listing}) if listing is not None else self.days()

        def files(selected: list[date]) -> list[PartitionFile]:
            if listing is None:
                return self.files(selected)
            wanted = set(selected)
            return [f for f in listing if f.day in wanted]

        lo_day = _ttl_start_day(t_min, ttl)
        parts: list[pa.Table] = []
        if lo_day is not None and lo_day >= grid_floor(first):
            read_from = lo_day
        else:
            read_from = grid_floor(first)
            snapshot = self.latest_before(read_from, files([d for d in days if d < read_from]))
            if snapshot is not None:
                parts.append(snapshot.select(columns))
        for f in files([d for d in days if read_from <= d <= last]):
            parts.append(self.read(f, columns))
        return _concat(parts) if parts else None


def partition_name(day: date) -> str:
    return f"event_date={day.isoformat()}"


def _ttl_start_day(t_min: pd.Timestamp, ttl: timedelta | None) -> date | None:
    """UTC date of ``t_min - ttl``; None when there is no TTL or it reaches before year 1."""
    if ttl is None or ttl <= timedelta(0):
        return None
    try:
        return utc_day(t_min.to_pydatetime() - ttl)
    except OverflowError:
        return None


def latest_per_entity(table: pa.Table, entity_column: str, time_column: str) -> pa.Table:
    """One row per entity: the latest by event time; of rows at the same time, the one read last.

    (A row key is a hash of entity and event time, so such rows are re-deliveries of one row; the
    ingest drops them as duplicates. Files are read in (event date, version id) order.)
    """
    n = table.num_rows
    if n == 0:
        return table
    codes = pc.dictionary_encode(table.column(entity_column)).combine_chunks().indices.to_numpy()
    times = table.column(time_column).cast(pa.int64()).to_numpy()
    order = np.lexsort((times, codes))  # stable: by entity, then time, then position
    sorted_codes = codes[order]
    last_of_entity = np.append(sorted_codes[1:] != sorted_codes[:-1], True)
    return table.take(pa.array(order[last_of_entity]))


def _utc(values: pd.Series) -> pd.Series:
    """``values`` as UTC timestamps (no conversion when they already are)."""
    if str(values.dtype) == "datetime64[ns, UTC]":
        return values
    return pd.to_datetime(values, utc=True)


def _concat(parts: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(parts, promote_options="default").combine_chunks()


# --------------------------------------------------------------------- point-in-time join
_NULLABLE = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype(), pa.string(): pd.StringDtype()}


def point_in_time_join(
    keys: pd.Series,
    times: pd.Series,
    rows: pa.Table | None,
    *,
    entity_column: str,
    time_column: str,
    features: list[str],
    ttl: timedelta | None,
) -> pd.DataFrame:
    """Features of each request (``keys[i]`` at ``times[i]``): the entity's latest row at or before
    the time and not older than ``ttl``; nulls when there is none. One output row per request, in
    request order (index 0..n-1). Of rows at the same time, the one read last (as :func:`latest_per_entity`).
    """
    n = len(keys)
    request_ns = _utc(times).to_numpy(dtype="datetime64[ns]").astype("int64")
    codes, uniques = pd.factorize(pd.Series(keys, dtype="string").to_numpy(dtype=object))
    left = pd.DataFrame({"_k": codes.astype("int64"), "_t": request_ns, "_i": np.arange(n, dtype="int64")})
    if rows is None or rows.num_rows == 0:
        empty = pd.DataFrame(index=pd.RangeIndex(n))
        for name in features:
            field_type = rows.schema.field(name).type if rows is not None else None
            empty[name] = pd.Series(pd.NA, index=empty.index, dtype=_NULLABLE.get(field_type, object))
        return empty
    row_keys = pd.Index(uniques).get_indexer(rows.column(entity_column).to_numpy(zero_copy_only=False))
    row_ns = rows.column(time_column).cast(pa.int64()).to_numpy()
    wanted = (row_keys >= 0) & (row_ns <= request_ns.max())
    picked = rows.filter(pa.array(wanted)).append_column("_k", pa.array(row_keys[wanted].astype("int64")))
    # Stable sort by time: of rows of one entity at the same time, merge_asof takes the last one.
    picked = picked.sort_by([(time_column, "ascending")])
    right = picked.select(features).to_pandas(types_mapper=_NULLABLE.get)
    right["_k"] = picked.column("_k").to_numpy()
    right["_t"] = picked.column(time_column).cast(pa.int64()).to_numpy()
    tolerance = None
    if ttl is not None and ttl > timedelta(0):
        tolerance = min(int(ttl.total_seconds() * 10**9), np.iinfo("int64").max)
    order = np.argsort(request_ns, kind="stable")
    merged = pd.merge_asof(
        left.take(order),
        right,
        on="_t",
        by="_k",
        direction="backward",
        allow_exact_matches=True,
        tolerance=tolerance,
    )
    back = np.empty(n, dtype="int64")
    back[order] = np.arange(n, dtype="int64")
    return merged[features].take(back).reset_index(drop=True)


# --------------------------------------------------------------------- the Feast offline store
class PartitionedParquetOfflineStoreConfig(FeastConfigBaseModel):
    """Offline store config: ``{"type": "mlops_core.feature_offline.PartitionedParquetOfflineStore"}``."""

    type: Literal["mlops_core.feature_offline.PartitionedParquetOfflineStore"] = (
        "mlops_core.feature_offline.PartitionedParquetOfflineStore"
    )


class PartitionedParquetRetrievalJob(RetrievalJob):
    """A lazy retrieval: the join runs when the result is asked for (``to_df``/``to_arrow``)."""

    def __init__(self, evaluate: Callable[[], pd.DataFrame], full_feature_names: bool) -> None:
        self._evaluate = evaluate
        self._full_feature_names = full_feature_names

    @property
    def full_feature_names(self) -> bool:
        return self._full_feature_names

    @property
    def on_demand_feature_views(self) -> list[OnDemandFeatureView]:
        return []

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        return self._evaluate()

    def to_df(self, validation_reference: Any = None, timeout: int | None = None) -> pd.DataFrame:
        """The joined frame as built (nullable dtypes kept), without Feast's detour through Arrow."""
        if validation_reference is not None:
            return super().to_df(validation_reference=validation_reference, timeout=timeout)
        return self._evaluate()

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        return pa.Table.from_pandas(self._evaluate(), preserve_index=False)

    def persist(self, storage: Any, allow_overwrite: bool | None = False, timeout: int | None = None) -> None:
        raise NotImplementedError("saved datasets are not supported by the partitioned Parquet offline store")

    @property
    def metadata(self) -> None:
        return None


def _view_name(view: FeatureView) -> str:
    name: str = view.projection.name_to_use()  # type: ignore[no-untyped-call]
    return name


# FileSource path -> (object store, prefix) of offline data kept in a remote store. Feast calls the
# offline store with the repo config and the source only, so a FeatureRepository registers where its
# remote offline data lives (with the store's client, built from the Airflow connection) here.
_LOCATIONS: dict[str, tuple[ObjectStore, str]] = {}
_LOCATIONS_LOCK = threading.Lock()


def register_location(source_path: str, objects: ObjectStore, prefix: str) -> None:
    """Read the FileSource ``source_path`` through ``objects`` under ``prefix`` (this process)."""
    with _LOCATIONS_LOCK:
        _LOCATIONS[source_path.rstrip("/")] = (objects, prefix)


def _layout(source: DataSource, join_key: str) -> OfflineLayout:
    if not isinstance(source, FileSource):
        raise TypeError(f"the partitioned Parquet offline store reads FileSources, not {type(source).__name__}")
    path = source.path
    with _LOCATIONS_LOCK:
        located = _LOCATIONS.get(path.rstrip("/"))
    if located is not None:
        return OfflineLayout(located[0], located[1], join_key, source.timestamp_field)
    if path.startswith("file://"):
        path = path[len("file://") :]
    elif "://" in path:
        raise ValueError(
            f"offline data at {path!r} is read through the object store of its FeatureRepository; build the "
            "repository (mlops_core.backends.feature_repository) in this process before asking Feast for it"
        )
    return OfflineLayout(LocalObjectStore(path), "", join_key, source.timestamp_field)


class PartitionedParquetOfflineStore(OfflineStore):
    """Point-in-time joins that read only the partitions (and one snapshot) a request can touch."""

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: pd.DataFrame | str | None,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        **kwargs: Any,
    ) -> RetrievalJob:
        if not isinstance(entity_df, pd.DataFrame):
            raise NotImplementedError("the partitioned Parquet offline store needs an entity DataFrame")
        frame = entity_df
        time_column = infer_event_timestamp_from_entity_df(dict(zip(frame.columns, frame.dtypes, strict=True)))
        plans = []
        for view in feature_views:
            prefix = f"{_view_name(view)}:"
            names = [ref[len(prefix) :] for ref in feature_refs if ref.startswith(prefix)]
            join_keys = [column.name for column in view.entity_columns]
            if len(join_keys) != 1:
                raise NotImplementedError(
                    f"feature view {view.name}: exactly one join key is supported, got {join_keys}"
                )
            plans.append((view, names, join_keys[0]))

        def evaluate() -> pd.DataFrame:
            out = frame.reset_index(drop=True).copy()
            if out.empty:
                for view, names, _ in plans:
                    for name in names:
                        out[f"{_view_name(view)}__{name}" if full_feature_names else name] = pd.Series(dtype=object)
                return out
            times = _utc(out[time_column])
            t_min, t_max = times.min(), times.max()
            for view, names, join_key in plans:
                if view.batch_source is None:
                    raise ValueError(f"feature view {view.name} has no batch source")
                layout = _layout(view.batch_source, join_key)
                ttl = view.ttl if view.ttl else None
                columns = list(dict.fromkeys([join_key, layout.time_column, *names]))
                rows = layout.rows_for(t_min, t_max, ttl, columns)
                joined = point_in_time_join(
                    out[join_key],
                    times,
                    rows,
                    entity_column=join_key,
                    time_column=layout.time_column,
                    features=names,
                    ttl=ttl,
                )
                for name in names:
                    out[f"{_view_name(view)}__{name}" if full_feature_names else name] = joined[name].array
            return out

        return PartitionedParquetRetrievalJob(evaluate, full_feature_names)

    @staticmethod
    def pull_latest_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None,
        start_date: datetime,
        end_date: datetime,
    ) -> RetrievalJob:
        """Latest row per entity with event time in ``[start_date, end_date]`` (``feast materialize``)."""
        join_key = _single_join_key(join_key_columns)

        def evaluate() -> pd.DataFrame:
            table = _rows_between(data_source, join_key, feature_name_columns, start_date, end_date)
            frame: pd.DataFrame = latest_per_entity(table, join_key, timestamp_field).to_pandas(
                types_mapper=_NULLABLE.get
            )
            return frame

        return PartitionedParquetRetrievalJob(evaluate, full_feature_names=False)

    @staticmethod
    def pull_all_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None = None,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
    ) -> RetrievalJob:
        """Every row with event time in ``[start_date, end_date]`` (either bound optional)."""
        join_key = _single_join_key(join_key_columns)

        def evaluate() -> pd.DataFrame:
            table = _rows_between(data_source, join_key, feature_name_columns, start_date, end_date)
            frame: pd.DataFrame = table.to_pandas(types_mapper=_NULLABLE.get)
            return frame

        return PartitionedParquetRetrievalJob(evaluate, full_feature_names=False)


def _single_join_key(join_key_columns: list[str]) -> str:
    if len(join_key_columns) != 1:
        raise NotImplementedError(f"exactly one join key is supported, got {join_key_columns}")
    return join_key_columns[0]


def _rows_between(
    source: DataSource, join_key: str, features: list[str], start: datetime | None, end: datetime | None
) -> pa.Table:
    """The offline rows with event time in ``[start, end]``, reading only the partitions of those dates."""
    layout = _layout(source, join_key)
    columns = list(dict.fromkeys([join_key, layout.time_column, *features]))
    lo = None if start is None else _utc_scalar(start)
    hi = None if end is None else _utc_scalar(end)
    days = [d for d in layout.days() if (lo is None or d >= utc_day(lo)) and (hi is None or d <= utc_day(hi))]
    parts = [layout.read(f, columns) for f in layout.files(days)]
    if not parts:
        schema = pa.schema(
            [(c, pa.timestamp("ns", tz="UTC") if c == layout.time_column else pa.string()) for c in columns]
        )
        return schema.empty_table()
    table = _concat(parts)
    stamps = table.column(layout.time_column)
    kind = pa.timestamp("ns", tz="UTC")
    inside = pa.array(np.ones(table.num_rows, dtype=bool))
    if lo is not None:
        inside = pc.and_(inside, pc.greater_equal(stamps, pa.scalar(lo.value, kind)))
    if hi is not None:
        inside = pc.and_(inside, pc.less_equal(stamps, pa.scalar(hi.value, kind)))
    return table.filter(inside)


def _utc_scalar(value: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)
