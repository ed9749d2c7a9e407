"""Feature store of one dataset contract, backed by Feast.

Layout, configured entirely from Python (no ``feature_store.yaml`` is checked in)::

    <repo_dir>/registry.db                                   # Feast registry (file; re-applied on first use)
    <repo_dir>/online.db                                     # online store when it is SQLite: latest row per entity
    <offline>/event_date=YYYY-MM-DD/version=<id>.parquet     # offline: a version's rows of one UTC event date
    <offline>/_latest/before=YYYY-MM-DD.parquet              # compacted: latest row per entity before a date

``<offline>`` is a prefix of the environment's object store (``features/<dataset>`` of a local
folder or of ``s3://bucket/prefix``): every offline object is written, listed and read through the
:class:`~mlops_core.storage.ObjectStore`, so S3 reads are checked against the SHA-256 recorded at
write time. The online store is chosen by ``features.online_store`` (:class:`OnlineStoreConfig`):
SQLite (default), Feast's Redis store or Feast's DynamoDB store.

Feast sees one Entity (join key ``_entity``), one FileSource over ``<offline>`` and one
FeatureView ``<contract>_features`` with the contract's feature columns typed from the contract.
The offline store is :class:`mlops_core.feature_offline.PartitionedParquetOfflineStore`, a Feast
offline-store plugin (``offline_store.type`` is its dotted name), so training sets still go
through ``FeatureStore.get_historical_features``; registry, feature view and online store are
Feast's own.

Why this layout (issue 6: cost follows the new data, not the history). Feast's file offline
store (dask) reads every file below the source folder and joins the requests with every offline
row ever written: a training set for a fixed 30-day window took 1.3 s with 10 days of history and
63.5 s with 120. Partitioning by event date lets a join read only the dates of its requests, and
the compacted snapshot answers everything older: only the latest row per entity before the
window can answer a request inside it (whether it is within the TTL is checked per request), so
the default TTL of 3,650 days costs one file of at most one row per entity instead of the whole
history. Snapshots sit on a weekly grid, are kept up to date by :meth:`materialize_version` (a
no-op unless a version starts a new week or changes an older date) and carry a fingerprint of the
partition files they summarise, so a late or re-materialized version invalidates them instead of
being hidden (the next read or materialization rolls forward from the newest valid one). A
version's rows may span several dates; re-materializing it rewrites its files and removes its
files of other dates, so rows are never duplicated. Feast's DuckDB (ibis) offline store was
measured on the same files too: it needs two more packages and still reads the whole history
(0.34 s at 10 days, 0.76 s at 120 days before the window, against 0.11-0.14 s flat here).

Feast accepts the contract's reserved names as they are: ``_entity`` is the join key and
``_event_time`` the source's timestamp field, so user columns can never collide with them and
no renaming happens anywhere (the names live in :data:`FEAST_JOIN_KEY` / :data:`FEAST_TIMESTAMP`).

Online writes (SQLite; Redis and DynamoDB: see :meth:`FeatureRepository._push_online_feast`):
``write_to_online_store`` converts only the first Arrow record batch of a frame,
the SQLite online store overwrites whatever is stored regardless of event time, and reading the
online event times first (to skip stale rows) cost as much as the write. The newest row per
entity of a version is therefore upserted straight into Feast's SQLite table, serialized with
Feast's own helpers, in one transaction whose ``ON CONFLICT ... DO UPDATE ... WHERE`` keeps a
newer online value (event times at the store's precision: whole seconds). ``get_online_features``
reads it back as usual.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_core.contract import (
    ENTITY_COLUMN,
    EVENT_TIME_COLUMN,
    ROW_KEY_COLUMN,
    SOURCE_COLUMN,
    DatasetContract,
)
from mlops_core.errors import PermanentError
from mlops_core.storage import LocalObjectStore, ObjectStore

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from feast import Entity, FeatureStore, FeatureView, FileSource
    from feast.repo_config import RepoConfig

    from mlops_core.feature_offline import OfflineLayout

log = logging.getLogger(__name__)

# The one place where contract names meet Feast names (Feast accepts the reserved names as is).
FEAST_JOIN_KEY = ENTITY_COLUMN
FEAST_TIMESTAMP = EVENT_TIME_COLUMN

# Contract column type -> Feast type name (``feast.types``).
FEAST_TYPES = {
    "int": "Int64",
    "float": "Float64",
    "bool": "Bool",
    "string": "String",
    "category": "String",
    "timestamp": "UnixTimestamp",
}

ENTITY_KEY_SERIALIZATION_VERSION = 3  # Feast's current scheme (0.38+); lower versions are deprecated
OFFLINE_FILE = re.compile(r"^version=(?P<version_id>[A-Za-z0-9][A-Za-z0-9._-]*)\.parquet$")
# Feast loads the offline store by this dotted name (see mlops_core.feature_offline).
OFFLINE_STORE_TYPE = "mlops_core.feature_offline.PartitionedParquetOfflineStore"
ONLINE_BATCH_ROWS = 5_000  # entities per online read (get_online_features)
ONLINE_UPSERT_ROWS = 150  # rows per upsert statement: 6 x 150 = 900 bound variables (SQLite's old limit: 999)
_REQUEST_COLUMN = "_request"  # internal id of one distinct (entity, event time) request
ONLINE_STORES = ("sqlite", "redis", "dynamodb")
ONLINE_WRITE_ROWS = 1_000  # entities per online_write_batch call (Redis, DynamoDB)


class FeatureRepositoryError(PermanentError, ValueError):
    """Bad input for the feature repository, or nothing materialized yet; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class OnlineStoreConfig:
    """Which online store Feast serves from (``features.online_store``) and how to reach it.

    * ``sqlite`` (default): ``<repo_dir>/online.db``, written by our guarded upsert.
    * ``redis``: Feast's Redis online store; ``redis_url`` is ``redis://[user:password@]host:port/db``
      (``rediss://`` for TLS), taken from an Airflow connection or the environment, never from a
      settings file. It is kept out of ``repr`` and of every message.
    * ``dynamodb``: Feast's DynamoDB online store (one table per feature view,
      ``<project>.<view>``) in ``dynamodb_region``; credentials come from boto3's chain (the
      worker's role or ``AWS_*`` variables), ``dynamodb_endpoint_url`` only for a VPC endpoint or
      a local emulator.
    """

    kind: str = "sqlite"
    redis_url: str | None = dataclasses.field(default=None, repr=False)
    dynamodb_region: str | None = None
    dynamodb_endpoint_url: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ONLINE_STORES:
            raise FeatureRepositoryError(f"features.online_store must be one of {ONLINE_STORES}, not {self.kind!r}")
        if self.kind == "redis" and not self.redis_url:
            raise FeatureRepositoryError(
                "features.online_store is 'redis' but no Redis connection was found: define the Airflow connection "
                "named by features.redis_conn_id (e.g. AIRFLOW_CONN_<ID>='redis://:<password>@host:6379/0')"
            )
        if self.kind == "dynamodb" and not self.dynamodb_region:
            raise FeatureRepositoryError(
                "features.online_store is 'dynamodb': set features.dynamodb_region in include/conf/<env>.yaml"
            )

    def feast_config(self, repo_dir: Path) -> dict[str, Any]:
        """The ``online_store`` section of Feast's repo config."""
        if self.kind == "redis":
            return {"type": "redis", "connection_string": redis_connection_string(self.redis_url or "")}
        if self.kind == "dynamodb":
            config: dict[str, Any] = {"type": "dynamodb", "region": self.dynamodb_region}
            if self.dynamodb_endpoint_url:
                config["endpoint_url"] = self.dynamodb_endpoint_url
            return config
        return {"type": "sqlite", "path": str(repo_dir / "online.db")}


def redis_connection_string(url: str) -> str:
    """``redis://[user:password@]host:port/db`` as Feast's ``host:port,db=N,...`` connection string.

    Errors never repeat the URL (it may hold a password).
    """
    from urllib.parse import unquote, urlparse

    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss") or not parsed.hostname:
        raise FeatureRepositoryError(
            "the Redis connection for the online store must be a redis:// or rediss:// URL with a host "
            "(redis://[user:password@]host:port/db)"
        )
    db_text = parsed.path.strip("/") or "0"
    if not db_text.isdigit():
        raise FeatureRepositoryError("the Redis connection's path must be a database number (redis://host:6379/0)")
    parts = [f"{parsed.hostname}:{parsed.port or 6379}", f"db={int(db_text)}"]
    for name, value in (("username", parsed.username), ("password", parsed.password)):
        if value:
            value = unquote(value)
            if "," in value:
                raise FeatureRepositoryError(
                    f"the Redis connection's {name} contains ',', which Feast's connection string cannot carry"
                )
            parts.append(f"{name}={json.dumps(value)}")  # Feast JSON-decodes values: a string stays a string
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


class FeatureRepository:
    """Feast feature repository of one dataset contract: offline Parquet in an object store, online
    SQLite, Redis or DynamoDB.

    Args:
        contract: the dataset contract; its ``feature_columns`` become the features.
        repo_dir: where the Feast registry (and the SQLite online store) live.
        offline_dir: folder (or ``file://`` URI) of the offline Parquet files; or
        offline_store, offline_prefix: the object store (local or S3) and the prefix in it that
            hold them (``features/<dataset>``); every read of an S3 object is checked against its
            recorded SHA-256.
        project: the Feast project (``features.project`` in the settings).
        ttl_days: how far back a point-in-time join looks for a feature row.
        online: which online store (:class:`OnlineStoreConfig`; default SQLite under ``repo_dir``).
    """

    def __init__(
        self,
        contract: DatasetContract,
        *,
        repo_dir: Path,
        offline_dir: str | None = None,
        offline_store: ObjectStore | None = None,
        offline_prefix: str = "",
        project: str,
        ttl_days: int = 3650,
        online: OnlineStoreConfig | None = None,
    ) -> None:
        self.contract = contract
        self.repo_dir = Path(repo_dir).expanduser().resolve()
        if (offline_dir is None) == (offline_store is None):
            raise FeatureRepositoryError("give the offline data's location: offline_dir or offline_store, not both")
        if offline_store is None:
            offline_store, offline_prefix = LocalObjectStore(_local_folder(str(offline_dir))), ""
        self.offline_store = offline_store
        self.offline_prefix = offline_prefix.strip("/")
        if self.offline_prefix:
            offline_store.uri(self.offline_prefix)  # validates: relative, inside the store
        self.online = online or OnlineStoreConfig()
        self.project = project
        self.ttl_days = int(ttl_days)
        if self.ttl_days <= 0:
            raise FeatureRepositoryError(f"features.ttl_days must be a positive number of days, got {ttl_days!r}")
        self.feature_view_name = f"{contract.name}_features"
        self._store: FeatureStore | None = None
        self._applied = False

    # ----------------------------------------------------------------- Feast objects
    @property
    def feature_columns(self) -> list[str]:
        return list(self.contract.feature_columns)

    @property
    def feature_refs(self) -> list[str]:
        """``<feature view>:<feature>`` of every feature, in contract order."""
        return [f"{self.feature_view_name}:{name}" for name in self.feature_columns]

    @property
    def offline_uri(self) -> str:
        """Where the offline data lives (a folder path locally, ``s3://...`` on S3): the FileSource path."""
        if isinstance(self.offline_store, LocalObjectStore):
            return str(self.offline_store.path(self.offline_prefix) if self.offline_prefix else self.offline_store.root)
        return self.offline_store.uri(self.offline_prefix).rstrip("/")

    def repo_config(self) -> RepoConfig:
        from feast.repo_config import RepoConfig

        try:
            return RepoConfig(
                project=self.project,
                provider="local",
                registry=str(self.repo_dir / "registry.db"),
                online_store=self.online.feast_config(self.repo_dir),
                offline_store={"type": OFFLINE_STORE_TYPE},
                entity_key_serialization_version=ENTITY_KEY_SERIALIZATION_VERSION,
                # training_set hands Feast UTC timestamps already; Feast's coercion would only
                # re-parse them value by value (about 90 ms per 30,000 rows).
                coerce_tz_aware=False,
                repo_path=self.repo_dir,
            )
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            detail = str(exc)
            if self.online.redis_url:  # pydantic repeats the input; the connection string may hold a password
                detail = detail.replace(redis_connection_string(self.online.redis_url), "<redis connection>")
            raise FeatureRepositoryError(
                f"invalid Feast configuration (check features.project = {self.project!r}: letters, digits, '_' "
                f"and '-', not starting with '_' or '-'): {detail}"
            ) from None

    @property
    def store(self) -> FeatureStore:
        """The Feast ``FeatureStore``, built on first use."""
        if self._store is None:
            from feast import FeatureStore

            self.repo_dir.mkdir(parents=True, exist_ok=True)
            self._store = FeatureStore(repo_path=str(self.repo_dir), config=self.repo_config())
        return self._store

    def feast_objects(self) -> tuple[Entity, FileSource, FeatureView]:
        """The Entity, FileSource and FeatureView that :meth:`apply` registers."""
        from datetime import timedelta

        import feast.types
        from feast import Entity, FeatureView, Field, FileSource, ValueType

        contract = self.contract
        entity = Entity(
            name=f"{contract.name}_entity",
            join_keys=[FEAST_JOIN_KEY],
            value_type=ValueType.STRING,
            description=(
                f"{contract.entity_key!r} of dataset {contract.name!r}"
                if contract.entity_key
                else f"row key of dataset {contract.name!r} (the contract has no entity key)"
            ),
        )
        source = FileSource(
            name=f"{contract.name}_offline",
            path=self.offline_uri,
            timestamp_field=FEAST_TIMESTAMP,
            description=(f"accepted rows of dataset {contract.name!r}: event_date=YYYY-MM-DD/version=<id>.parquet"),
        )
        schema = [Field(name=FEAST_JOIN_KEY, dtype=feast.types.String)]
        for name in self.feature_columns:
            spec = contract.column(name)
            feast_type = getattr(feast.types, FEAST_TYPES[spec.type])
            schema.append(Field(name=name, dtype=feast_type, description=spec.description))
        view = FeatureView(
            name=self.feature_view_name,
            entities=[entity],
            ttl=timedelta(days=self.ttl_days),
            schema=schema,
            source=source,
            online=True,
            description=f"features of dataset {contract.name!r} (contract {contract.fingerprint})",
            tags={"dataset": contract.name, "contract_fingerprint": contract.fingerprint},
        )
        return entity, source, view

    def apply(self) -> None:
        """Register the entity, source and feature view (idempotent; safe to call every run)."""
        if isinstance(self.offline_store, LocalObjectStore) and not self.offline_prefix:
            self.offline_store.root.mkdir(parents=True, exist_ok=True)
        entity, _source, view = self.feast_objects()
        self.store.apply([entity, view])
        self._migrate_flat_files()
        self._applied = True
        log.info(
            "Feast project %s: applied feature view %s (%d features)",
            self.project,
            view.name,
            len(self.feature_columns),
        )

    def _ensure_applied(self) -> None:
        if not self._applied:
            self.apply()

    # ----------------------------------------------------------------- offline
    def offline_layout(self) -> OfflineLayout:
        """The event-date-partitioned offline data (imports pandas, pyarrow and Feast).

        A remote location is also registered with the offline-store plugin, which Feast calls with
        the FileSource path only.
        """
        from mlops_core.feature_offline import OfflineLayout, register_location

        if not isinstance(self.offline_store, LocalObjectStore):
            register_location(self.offline_uri, self.offline_store, self.offline_prefix)
        return OfflineLayout(self.offline_store, self.offline_prefix, ENTITY_COLUMN, EVENT_TIME_COLUMN)

    def offline_key(self, version_id: str, day: date) -> str:
        """The store key of the rows of ``version_id`` whose UTC event date is ``day``."""
        _check_version_id(version_id)
        prefix = f"{self.offline_prefix}/" if self.offline_prefix else ""
        return f"{prefix}event_date={day.isoformat()}/version={version_id}.parquet"

    def offline_versions(self) -> list[str]:
        """Ids of the dataset versions present in the offline store, sorted (lists every partition)."""
        layout = self.offline_layout()
        return sorted({f.version_id for f in layout.files(layout.days())})

    def materialize_version(self, version_id: str, rows: pd.DataFrame) -> dict[str, Any]:
        """Write one dataset version to the offline store and its newest rows to the online store.

        Incremental by construction, so the cost follows the size of ``rows``, not the history:

        * offline: only this version's rows are written, split by UTC event date into
          ``event_date=<day>/version=<id>.parquet`` (each file atomically: temp name, then
          rename). Re-running the same version rewrites the same files (and removes its files of
          dates it no longer has), so nothing is duplicated and no other version is read. Then
          the compacted snapshot at the newest snapshot-grid date is brought up to date: a
          no-op unless this version completed a grid week or changed an older partition.
        * online: the newest row per entity *of these rows* is upserted into Feast's SQLite online
          table in one transaction, rows serialized with Feast's own helpers, and each upsert
          guarded by event time in SQL (``ON CONFLICT ... DO UPDATE ... WHERE excluded.event_ts >=
          event_ts``), so a late version never overwrites a newer value and nothing is read first.
          ``materialize(start, end)`` is not used: an event-time window can overlap other versions.

        Returns:
            ``{version_id, offline_rows, online_entities, online_stale_skipped, event_time_min,
            event_time_max, seconds}`` (times as ISO-8601 strings, ``None`` for an empty version).
        """
        started = time.perf_counter()
        self._ensure_applied()
        _check_version_id(version_id)
        frame = self._offline_frame(rows, f"dataset version {version_id}")
        table = _to_arrow(frame, self._arrow_schema())
        layout = self.offline_layout()

        def write_offline() -> list[date]:
            days = layout.write_version(version_id, table)
            layout.refresh_snapshots()
            return days

        # The offline write (Parquet encoding, fsync: mostly without the GIL) overlaps the online
        # upsert; both are idempotent, and an error in either fails the call after both finished.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="offline-write") as pool:
            offline = pool.submit(write_offline)
            try:
                written, stale = self._push_online(table)
            finally:
                days = offline.result()
        result = {
            "version_id": version_id,
            "offline_rows": len(frame),
            "online_entities": int(written),
            "online_stale_skipped": int(stale),
            "event_time_min": frame[EVENT_TIME_COLUMN].min().isoformat() if len(frame) else None,
            "event_time_max": frame[EVENT_TIME_COLUMN].max().isoformat() if len(frame) else None,
            "seconds": round(time.perf_counter() - started, 3),
        }
        log.info(
            "Materialized version %s of %s: %d offline rows in %d event-date partition(s) of %s, "
            "%d entities online (%d older than online, skipped)",
            version_id,
            self.contract.name,
            result["offline_rows"],
            len(days),
            self.offline_uri,
            written,
            stale,
        )
        return result

    def _migrate_flat_files(self) -> None:
        """Move files of the old layout (``<offline_dir>/version=<id>.parquet``) into date partitions."""
        import pyarrow.parquet as pq

        if not isinstance(self.offline_store, LocalObjectStore):
            return  # the flat layout only ever existed in local folders
        folder = self.offline_store.path(self.offline_prefix) if self.offline_prefix else self.offline_store.root
        if not folder.is_dir():
            return
        layout = None
        for path in sorted(folder.iterdir()):
            match = OFFLINE_FILE.match(path.name)
            if match and path.is_file():
                layout = layout or self.offline_layout()
                layout.write_version(
                    match.group("version_id"), pq.read_table(path, partitioning=None).cast(self._arrow_schema())
                )
                path.unlink()
                log.info("Moved offline file %s into event-date partitions", path.name)
        if layout is not None:
            layout.refresh_snapshots()

    def _offline_frame(self, rows: pd.DataFrame, what: str) -> pd.DataFrame:
        """The offline columns of ``rows`` with the contract's dtypes; checks keys are present."""
        import pandas as pd

        required = [ROW_KEY_COLUMN, ENTITY_COLUMN, EVENT_TIME_COLUMN, *self.feature_columns]
        missing = [c for c in required if c not in rows.columns]
        if missing:
            raise FeatureRepositoryError(
                f"{what}: missing column(s) {missing}; materialize the accepted rows of a dataset version "
                f"(contract columns plus {ROW_KEY_COLUMN}, {ENTITY_COLUMN}, {EVENT_TIME_COLUMN})"
            )
        frame = rows[required].reset_index(drop=True)  # a new frame: selecting columns copies them
        frame[SOURCE_COLUMN] = (
            rows[SOURCE_COLUMN].reset_index(drop=True).astype("string", copy=False)
            if SOURCE_COLUMN in rows.columns
            else pd.Series(pd.NA, index=frame.index, dtype="string")
        )
        frame = _key_dtypes(frame, what)
        if frame[ROW_KEY_COLUMN].isna().any():
            nulls = int(frame[ROW_KEY_COLUMN].isna().sum())
            raise FeatureRepositoryError(f"{what}: {nulls} row(s) without {ROW_KEY_COLUMN}")
        return _contract_dtypes(frame, self.contract, self.feature_columns)

    def _arrow_schema(self) -> pa.Schema:
        """One fixed schema for every offline file, so versions always read back together."""
        import pyarrow as pa

        arrow_types = {
            "int": pa.int64(),
            "float": pa.float64(),
            "bool": pa.bool_(),
            "string": pa.string(),
            "category": pa.string(),
            "timestamp": pa.timestamp("ns", tz="UTC"),
        }
        fields = [
            pa.field(ROW_KEY_COLUMN, pa.string(), nullable=False),
            pa.field(ENTITY_COLUMN, pa.string(), nullable=False),
            pa.field(EVENT_TIME_COLUMN, pa.timestamp("ns", tz="UTC"), nullable=False),
        ]
        fields += [pa.field(n, arrow_types[self.contract.column(n).type]) for n in self.feature_columns]
        fields.append(pa.field(SOURCE_COLUMN, pa.string()))
        return pa.schema(fields)

    # ----------------------------------------------------------------- training
    def training_set(self, entity_df: pd.DataFrame) -> pd.DataFrame:
        """Point-in-time-correct training rows: each row gets the features of its entity's latest
        offline row at or before its ``_event_time`` (within ``ttl_days``), never a later one.

        Args:
            entity_df: ``_entity``, ``_event_time``, ``_row_key`` and, for training, the target.
                Other columns (e.g. feature values of the input rows) are ignored: features always
                come from the store.

        Returns:
            ``_entity``, ``_event_time``, ``_row_key``, the target (when given) and every feature
            column, with the contract's dtypes, one row per input row, sorted by ``_event_time``
            then ``_row_key``. Features are null when the entity has no row at or before the time.
        """
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        self._ensure_applied()
        contract = self.contract
        what = "training_set entity_df"
        required = [ENTITY_COLUMN, EVENT_TIME_COLUMN, ROW_KEY_COLUMN]
        missing = [c for c in required if c not in entity_df.columns]
        if missing:
            raise FeatureRepositoryError(
                f"{what}: missing column(s) {missing}; pass the accepted rows' {required} "
                f"and the target {contract.target!r}"
            )
        if not self.offline_layout().has_data():
            raise FeatureRepositoryError(
                f"no dataset version is materialized in {self.offline_uri} yet; run the features stage "
                "(FeatureRepository.materialize_version) before building a training set"
            )
        keep = required + ([contract.target] if contract.target in entity_df.columns else [])
        rows = _key_dtypes(entity_df[keep].reset_index(drop=True).copy(), what)

        asked = rows[[ENTITY_COLUMN, EVENT_TIME_COLUMN]].copy()
        asked[_REQUEST_COLUMN] = np.arange(len(asked), dtype="int64")
        # Feast prints which column it took as the event timestamp; keep it out of task logs.
        with contextlib.redirect_stdout(io.StringIO()):
            job = self.store.get_historical_features(entity_df=asked, features=self.feature_refs)
            joined = job.to_df()
        joined = joined.sort_values(_REQUEST_COLUMN, kind="mergesort").reset_index(drop=True)
        if not np.array_equal(joined[_REQUEST_COLUMN].to_numpy(), asked[_REQUEST_COLUMN].to_numpy()):
            # never hand out lost, extra or misaligned rows
            raise RuntimeError(f"Feast returned {len(joined)} feature rows for {len(asked)} requests, not one each")
        out = rows
        for name in self.feature_columns:
            out[name] = joined[name].array
        typed = [c for c in (contract.target,) if c in out.columns] + self.feature_columns
        out = _contract_dtypes(out, contract, typed)
        out = out[keep + self.feature_columns]
        # Sorted by (_event_time, _row_key); the sort runs in Arrow (string keys sort much faster there).
        keys = pa.table(
            {"t": out[EVENT_TIME_COLUMN].array.asi8, "k": pa.array(out[ROW_KEY_COLUMN].to_numpy(dtype=object))}
        )
        order = pc.sort_indices(keys, sort_keys=[("t", "ascending"), ("k", "ascending")]).to_numpy()
        return out.take(order).reset_index(drop=True)

    # ----------------------------------------------------------------- online
    def online_features(self, entity_ids: list[str]) -> pd.DataFrame:
        """Latest online feature values of ``entity_ids`` (in the given order).

        Returns ``_entity``, ``_event_time`` (of the stored row; NaT when the entity is unknown)
        and every feature column with the contract's dtypes; unknown entities get null features.
        """
        self._ensure_applied()
        return self._read_online([str(e) for e in entity_ids])

    def _read_online(self, entity_ids: list[str]) -> pd.DataFrame:
        import pandas as pd
        from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

        columns: dict[str, list[Any]] = {name: [] for name in self.feature_columns}
        event_times: list[Any] = []
        for start in range(0, len(entity_ids), ONLINE_BATCH_ROWS):
            chunk = entity_ids[start : start + ONLINE_BATCH_ROWS]
            response = self.store.get_online_features(
                features=self.feature_refs, entity_rows=[{FEAST_JOIN_KEY: e} for e in chunk]
            )
            values = response.to_dict()
            for name in self.feature_columns:
                columns[name].extend(values[name])
            names = list(response.proto.metadata.feature_names.val)
            vector = response.proto.results[names.index(self.feature_columns[0])]
            for status, stamp in zip(vector.statuses, vector.event_timestamps, strict=True):
                found = status != FieldStatus.NOT_FOUND
                nanos = stamp.seconds * 10**9 + stamp.nanos
                event_times.append(pd.Timestamp(nanos, unit="ns", tz="UTC") if found else pd.NaT)
        out = pd.DataFrame(
            {
                ENTITY_COLUMN: pd.Series(entity_ids, dtype="string"),
                EVENT_TIME_COLUMN: pd.Series(event_times, dtype="datetime64[ns, UTC]"),
            }
        )
        for name in self.feature_columns:
            out[name] = pd.Series(columns[name], dtype=object)
        return _contract_dtypes(out, self.contract, self.feature_columns)

    def _push_online(self, table: pa.Table) -> tuple[int, int]:
        """The newest row per entity of ``table`` online, unless online already has a newer one:
        ``(entities written, entities skipped as older than online)``."""
        if self.online.kind == "sqlite":
            return self._push_online_sqlite(table)
        return self._push_online_feast(table)

    def _push_online_feast(self, table: pa.Table) -> tuple[int, int]:
        """Write the newest row per entity through Feast's own online store (Redis, DynamoDB).

        Values are converted with Feast's helpers (as for SQLite). The stored event times of these
        entities are read first (Feast's ``online_read``: one pipelined HMGET on Redis, BatchGetItem
        on DynamoDB) and rows not newer than the stored value are dropped, because Feast's DynamoDB
        write overwrites unconditionally (Feast's Redis write checks again, in its own pipeline).
        Each entity is one Redis hash / DynamoDB item, so a retry rewrites the same keys.
        """
        import pyarrow as pa
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
        from feast.protos.feast.types.Value_pb2 import Value as ValueProto

        from mlops_core.feature_offline import latest_per_entity

        if table.num_rows == 0:
            return 0, 0
        latest = latest_per_entity(table, ENTITY_COLUMN, EVENT_TIME_COLUMN)
        view = self.store.get_feature_view(self.feature_view_name)
        config = self.store.config
        online_store = self.store._get_provider().online_store
        keys = [
            EntityKeyProto(join_keys=[FEAST_JOIN_KEY], entity_values=[ValueProto(string_val=e)])
            for e in latest.column(ENTITY_COLUMN).to_pylist()
        ]
        times = latest.column(EVENT_TIME_COLUMN).cast(pa.timestamp("us", tz="UTC")).to_pylist()
        columns = {f.name: _value_protos(latest.column(f.name), f.dtype) for f in view.features}
        written = skipped = 0
        for start in range(0, len(keys), ONLINE_WRITE_ROWS):
            chunk = range(start, min(start + ONLINE_WRITE_ROWS, len(keys)))
            stored = online_store.online_read(
                config, view, [keys[i] for i in chunk], requested_features=[self.feature_columns[0]]
            )
            rows: list[tuple[Any, dict[str, Any], datetime, datetime | None]] = []
            for i, (stored_time, _values) in zip(chunk, stored, strict=True):
                if stored_time is not None and times[i] <= _as_utc(stored_time):
                    skipped += 1
                    continue
                rows.append((keys[i], {name: protos[i] for name, protos in columns.items()}, times[i], None))
            if rows:
                online_store.online_write_batch(config, view, rows, None)
                written += len(rows)
        return written, skipped

    def _push_online_sqlite(self, table: pa.Table) -> tuple[int, int]:
        """Upsert the newest row per entity of ``table`` online, unless online already has a newer one.

        Written in the layout of Feast's SQLite online store (one row per entity and feature) with
        Feast's own helpers: ``serialize_entity_key`` for keys, ``python_values_to_proto_values``
        for values (called once per distinct value of a column, on the same values Feast's
        ``write_to_online_store`` would pass), ``extract_text_and_num`` for ``value_text`` and
        Feast's SQLite datetime adapter for ``event_ts`` (whole seconds). So
        ``get_online_features`` reads the rows back. One transaction; each row's update is
        guarded by its event time in SQL, so nothing has to be read first.
        """
        import sqlite3

        import numpy as np
        import pyarrow as pa
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.infra.online_stores.helpers import compute_table_id, extract_text_and_num
        from feast.infra.online_stores.sqlite import adapt_datetime_epoch
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
        from feast.protos.feast.types.Value_pb2 import Value as ValueProto
        from feast.utils import to_naive_utc

        from mlops_core.feature_offline import latest_per_entity

        if table.num_rows == 0:
            return 0, 0
        latest = latest_per_entity(table, ENTITY_COLUMN, EVENT_TIME_COLUMN)
        _entity, _source, view = self.feast_objects()
        config = self.repo_config()
        table_name = compute_table_id(self.project, view, config.registry.enable_online_feature_view_versioning)

        keys = [
            serialize_entity_key(
                EntityKeyProto(join_keys=[FEAST_JOIN_KEY], entity_values=[ValueProto(string_val=e)]),
                entity_key_serialization_version=ENTITY_KEY_SERIALIZATION_VERSION,
            )
            for e in latest.column(ENTITY_COLUMN).to_pylist()
        ]
        times = latest.column(EVENT_TIME_COLUMN).cast(pa.timestamp("us", tz="UTC")).to_pylist()
        stamps = [adapt_datetime_epoch(to_naive_utc(t)) for t in times]
        # One row per (entity, feature) in primary-key order (entity key, feature name), so SQLite's
        # B-tree inserts stay local (2x faster); laid out in an object array, flattened once.
        order = np.argsort(np.array(keys, dtype=object), kind="stable")
        fields = sorted(view.features, key=lambda f: f.name)
        cells = np.empty((len(keys), len(fields), 6), dtype=object)
        cells[:, :, 0] = np.array(keys, dtype=object)[order][:, None]
        cells[:, :, 4] = np.array(stamps, dtype=object)[order][:, None]
        for j, field in enumerate(fields):
            protos, codes = _distinct_protos(latest.column(field.name), field.dtype)
            blobs = np.array([p.SerializeToString() for p in protos] + [b""], dtype=object)[:-1]
            texts = np.array([extract_text_and_num(p, False)[0] for p in protos] + [""], dtype=object)[:-1]
            cells[:, j, 1] = field.name
            cells[:, j, 2] = blobs[codes[order]]
            cells[:, j, 3] = texts[codes[order]]
        flat = cells.ravel().tolist()
        quoted = '"' + table_name.replace('"', '""') + '"'

        # The table name is Feast's own (project and view names, both validated), quoted as an identifier.
        def upsert(rows: int) -> str:  # one statement for ``rows`` rows (multi-row VALUES: fewer SQLite steps)
            values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * rows)
            return "".join(
                [
                    f"INSERT INTO {quoted} (entity_key, feature_name, value, value_text, event_ts, created_ts) ",
                    f"VALUES {values} ON CONFLICT(entity_key, feature_name) DO UPDATE SET ",
                    "value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts, ",
                    f"created_ts = excluded.created_ts WHERE excluded.event_ts >= {quoted}.event_ts",
                ]
            )

        conn = sqlite3.connect(self.repo_dir / "online.db", timeout=60)
        try:
            conn.execute("PRAGMA cache_size = -65536")  # this connection only: 64 MiB of page cache
            with conn:
                before = conn.total_changes
                step = ONLINE_UPSERT_ROWS * 6
                for start in range(0, len(flat), step):
                    chunk = flat[start : start + step]
                    conn.execute(upsert(len(chunk) // 6), chunk)
                changed = conn.total_changes - before
        finally:
            conn.close()
        written = changed // max(1, len(self.feature_columns))
        return written, latest.num_rows - written


# --------------------------------------------------------------------- helpers
def _local_folder(offline_dir: str | Path) -> Path:
    text = str(offline_dir)
    if text.startswith("file://"):
        from urllib.parse import unquote, urlparse

        text = unquote(urlparse(text).path)
    elif "://" in text:
        raise FeatureRepositoryError(
            f"offline_dir {text!r}: offline_dir names a local folder; for remote storage pass the object "
            "store and its prefix (offline_store=..., offline_prefix=...), as backends.feature_repository does"
        )
    return Path(text).expanduser().resolve()


def _distinct_protos(column: pa.ChunkedArray, feast_type: Any) -> tuple[list[Any], Any]:
    """Feast ``ValueProto`` of each distinct value of ``column`` (each converted once) and, per row,
    the index of its value among them (``codes``, a numpy int array)."""
    import pandas as pd
    from feast.type_map import python_values_to_proto_values

    values = column.to_numpy(zero_copy_only=False)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    distinct = list(uniques)
    nulls = codes < 0
    if nulls.any():  # nulls are converted too (one of them), and take the last slot
        distinct.append(values[int(nulls.argmax())])
        codes = codes.copy()
        codes[nulls] = len(distinct) - 1
    return python_values_to_proto_values(distinct, feast_type.to_value_type()), codes


def _value_protos(column: pa.ChunkedArray, feast_type: Any) -> list[Any]:
    """Feast ``ValueProto`` of every value of ``column`` (converted once per distinct value)."""
    import numpy as np

    protos, codes = _distinct_protos(column, feast_type)
    return list(np.array([*protos, None], dtype=object)[:-1][codes])


def _as_utc(value: Any) -> Any:
    """A datetime from an online store as UTC (naive = UTC)."""
    from datetime import UTC

    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _check_version_id(version_id: str) -> None:
    if not isinstance(version_id, str) or not OFFLINE_FILE.match(f"version={version_id}.parquet"):
        raise FeatureRepositoryError(
            f"version id {version_id!r} cannot name an offline file: use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit)"
        )


def _key_dtypes(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    """``_entity``/``_row_key`` as strings, ``_event_time`` as UTC nanoseconds (naive = UTC); no null keys."""
    import pandas as pd

    for name in (ENTITY_COLUMN, ROW_KEY_COLUMN):
        if name in frame.columns and str(frame[name].dtype) != "string":
            frame[name] = frame[name].astype("string")
    try:
        if str(frame[EVENT_TIME_COLUMN].dtype) != "datetime64[ns, UTC]":
            frame[EVENT_TIME_COLUMN] = pd.to_datetime(frame[EVENT_TIME_COLUMN], utc=True).astype("datetime64[ns, UTC]")
    except (TypeError, ValueError) as exc:
        raise FeatureRepositoryError(f"{what}: {EVENT_TIME_COLUMN} is not a timestamp column: {exc}") from exc
    for name in (ENTITY_COLUMN, EVENT_TIME_COLUMN):
        nulls = int(frame[name].isna().sum())
        if nulls:
            raise FeatureRepositoryError(
                f"{what}: {nulls} row(s) with a null {name}; every row needs an entity and an event time"
            )
    return frame


def _contract_dtypes(frame: pd.DataFrame, contract: DatasetContract, columns: list[str]) -> pd.DataFrame:
    """Cast ``columns`` to the contract's pandas dtypes (Int64, float64, boolean, string, UTC ns)."""
    import pandas as pd

    from mlops_core.validation import PANDAS_DTYPES

    for name in columns:
        kind = contract.column(name).type
        series = frame[name]
        dtype: Any = PANDAS_DTYPES[kind]
        if str(series.dtype) == str(dtype):
            continue
        if kind == "timestamp":
            frame[name] = pd.to_datetime(series, utc=True).astype(dtype)
        elif kind == "int" and series.dtype == object:  # Python ints from Feast: no detour via float
            frame[name] = pd.Series(pd.array(_nulls_as_none(series), dtype="Int64"), index=frame.index)
        elif kind in ("int", "float"):
            if series.dtype == object:
                series = pd.to_numeric(pd.Series(_nulls_as_none(series), index=frame.index, dtype=object))
            frame[name] = series.astype(dtype)
        elif kind == "bool":
            frame[name] = pd.Series(_nulls_as_none(series), index=frame.index, dtype=object).astype(dtype)
        else:
            frame[name] = series.astype(dtype)
    return frame


def _nulls_as_none(series: pd.Series) -> list[Any]:
    """The values of ``series`` with every kind of null (None, NaN, NA, NaT) as None."""
    import pandas as pd

    return [None if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and v != v) else v for v in series]


def _to_arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    import pyarrow as pa

    try:
        return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise FeatureRepositoryError(f"rows do not match the contract's types: {exc}") from exc
