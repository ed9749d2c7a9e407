"""Backends chosen per environment in ``include/conf/<env>.yaml`` (``backends:``), never in a DAG.

Each concern sits behind a small interface:

- object storage: :class:`mlops_core.storage.ObjectStore`
- training compute: :class:`mlops_core.compute.Compute`, a job service (submit / describe / stop)
- registry mirror: :class:`mlops_core.registry_mirror.RegistryMirror` (MLflow is always the
  registry; a mirror copies versions to a cloud registry and follows the promotion gate)
- serving: :class:`mlops_core.serving_target.Serving` (deploy, what is live, verify, smoke test,
  roll back)
- drop zone: :class:`mlops_core.drop_source.DropSource` (a local folder, or an S3 prefix when
  ``dataset.drop_zone`` is ``s3://bucket/prefix/``)
- dataset catalog: :class:`mlops_core.dataset_catalog.DatasetCatalog` (committed versions made
  queryable where they lie: Glue for Athena; ``none`` by default)

A task builds its backends once (:func:`backends_for`, a :class:`Backends` bundle) and hands them
to the pure stage functions, which never construct a backend themselves. Only ``local`` is built
so far; ``aws`` and ``azure`` slot in here (built by the Airflow layer on the providers' hooks)
without touching ``dags/`` or the stages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_core.compute import Compute, LocalJobCompute
from mlops_core.storage import LocalObjectStore, ObjectStore

if TYPE_CHECKING:
    from mlops_core.contract import DatasetContract
    from mlops_core.dataset_catalog import DatasetCatalog
    from mlops_core.drop_source import DropSource
    from mlops_core.features import FeatureRepository
    from mlops_core.registry import ModelRegistry
    from mlops_core.registry_mirror import RegistryMirror
    from mlops_core.serving import LocalModelServer
    from mlops_core.serving_target import Serving
    from mlops_core.settings import Settings

log = logging.getLogger(__name__)


class BackendNotAvailable(RuntimeError):
    """The configured backend is not built (yet) or not usable on this machine."""


# Concerns whose cloud implementation exists but is built on the provider's hooks, in Airflow.
_BUILT_BY_AIRFLOW = {
    ("storage", "aws"),
    ("compute", "aws"),
    ("registry_mirror", "sagemaker"),
    ("serving", "aws"),
    ("catalog", "glue"),
}


def _not_built(concern: str, name: str) -> BackendNotAvailable:
    if (concern, name) in _BUILT_BY_AIRFLOW:
        return BackendNotAvailable(
            f"backends.{concern} = {name!r} is built on the Amazon provider's hooks, in an Airflow task: use "
            f"mlops_airflow.backends.backends_for(settings) (mlops_core never imports Airflow)"
        )
    return BackendNotAvailable(
        f"backends.{concern} = {name!r} is not available in this version; use 'local' "
        f"(set it in include/conf/<env>.yaml)"
    )


# ----------------------------------------------------------------------------- storage
def object_store(settings: Settings) -> ObjectStore:
    if settings.backends.storage == "local":
        return LocalObjectStore(settings.storage_root)
    raise _not_built("storage", settings.backends.storage)


# ----------------------------------------------------------------------------- drop zone
def drop_source(settings: Settings) -> DropSource:
    """The drop zone of ``dataset.drop_zone``: the local folder (an ``s3://`` prefix is built in Airflow)."""
    from mlops_core.delivered_files import DropZone

    location = settings.dataset.drop_zone
    if isinstance(location, str) and location.startswith("s3://"):
        raise BackendNotAvailable(
            f"dataset.drop_zone {location!r} is an S3 prefix, read through the Amazon provider's S3Hook in an "
            "Airflow task: use mlops_airflow.backends.drop_source_for(settings) (mlops_core never imports Airflow)"
        )
    return DropZone(location)


# ----------------------------------------------------------------------------- compute
def compute_backend(settings: Settings, store: ObjectStore | None = None) -> Compute:
    """The training-job service of ``backends.compute`` (jobs read and write through ``store``)."""
    if settings.backends.compute == "local":
        store = store if store is not None else object_store(settings)
        if not isinstance(store, LocalObjectStore):
            raise BackendNotAvailable(
                f"backends.compute = 'local' runs jobs on this machine against a local object store; "
                f"backends.storage is {settings.backends.storage!r} (set both to 'local' in include/conf/<env>.yaml)"
            )
        return LocalJobCompute(settings.home / "jobs", store)
    raise _not_built("compute", settings.backends.compute)


# ----------------------------------------------------------------------------- registry
def model_registry(settings: Settings) -> ModelRegistry:
    """The MLflow registry of the environment: the system of record, whatever the mirror."""
    from mlops_core.registry import ModelRegistry

    return ModelRegistry(settings.registry.tracking_uri, settings.registry.artifact_root, settings.registry.experiment)


def registry_mirror(settings: Settings) -> RegistryMirror:
    from mlops_core.registry_mirror import NoMirror

    if settings.backends.registry_mirror in ("none", None):
        return NoMirror()
    raise _not_built("registry_mirror", settings.backends.registry_mirror)


# ----------------------------------------------------------------------------- catalog
def dataset_catalog(settings: Settings) -> DatasetCatalog:
    from mlops_core.dataset_catalog import NoCatalog

    if settings.backends.catalog in ("none", None):
        return NoCatalog()
    raise _not_built("catalog", settings.backends.catalog)


def _no_catalog() -> DatasetCatalog:
    from mlops_core.dataset_catalog import NoCatalog

    return NoCatalog()


# ----------------------------------------------------------------------------- serving
def capture_spool(settings: Settings) -> Path:
    """Where the local scoring server's capture proxy writes when the store is not a local folder
    (it holds no cloud credentials): :func:`mlops_core.capture.ship_captures` moves it to the store."""
    return settings.home / "serving" / settings.env / "capture-spool"


def local_model_server(settings: Settings) -> LocalModelServer:
    """The environment's local scoring server itself (local tooling: ``make up``, the demo, tests).

    With ``capture.enabled`` every request is recorded under ``captures/<model>/<env>/`` of the
    environment's local store (or of :func:`capture_spool` when the store is S3).
    """
    from mlops_core.serving import CaptureConfig, LocalModelServer

    capture = None
    if settings.capture.enabled:
        local_store = settings.backends.storage == "local"
        capture = CaptureConfig(
            store_root=settings.storage_root if local_store else str(capture_spool(settings)),
            model_name=settings.registered_model_name,
            model_dir=settings.training.model_name,
            env=settings.env,
            entity_key=settings.contract.entity_key,
            sample_rate=settings.capture.sampling_percent / 100,
            flush_records=settings.capture.flush_records,
            flush_seconds=settings.capture.flush_seconds,
            max_request_mb=settings.capture.max_request_mb,
        )
    return LocalModelServer(
        state_dir=settings.home / "serving" / settings.env,
        host=settings.serving.host,
        port=int(settings.serving.port),
        tracking_uri=settings.registry.tracking_uri,
        capture=capture,
    )


def serving_backend(settings: Settings) -> Serving:
    from mlops_core.serving_target import LocalServing

    if settings.backends.serving == "local":
        return LocalServing(local_model_server(settings), settings.env)
    raise _not_built("serving", settings.backends.serving)


# ----------------------------------------------------------------------------- features
def feature_repository(
    settings: Settings,
    contract: DatasetContract | None = None,
    *,
    store: ObjectStore | None = None,
    redis_url: str | None = None,
) -> FeatureRepository:
    """The Feast repository of ``contract``: offline data under ``features/<dataset>/`` of the
    environment's object store (``store``: local folder or S3), online in ``features.online_store``.

    ``redis_url`` (``features.online_store: redis``) is the URL of the Airflow connection
    ``features.redis_conn_id``, resolved by the Airflow layer; without it, the connection is read
    from the environment as Airflow defines it (``AIRFLOW_CONN_<ID>``, URI form). The registry (a
    derived file, re-applied on first use) stays under ``MLOPS_HOME/feature_repo/<project>``.
    """
    from mlops_core.features import FeatureRepository, OnlineStoreConfig

    contract = contract or settings.load_contract()
    features = settings.features
    store = store if store is not None else object_store(settings)
    if features.online_store == "redis" and redis_url is None:
        redis_url = redis_url_from_environment(features.redis_conn_id)
    online = OnlineStoreConfig(
        kind=features.online_store,
        redis_url=redis_url if features.online_store == "redis" else None,
        dynamodb_region=features.dynamodb_region,
        dynamodb_endpoint_url=features.dynamodb_endpoint_url,
    )
    return FeatureRepository(
        contract,
        repo_dir=settings.home / "feature_repo" / features.project,
        offline_store=store,
        offline_prefix=f"features/{contract.name}",
        project=features.project,
        ttl_days=features.ttl_days,
        online=online,
    )


def redis_url_from_environment(conn_id: str) -> str | None:
    """The Airflow connection ``conn_id`` as defined in the environment (``AIRFLOW_CONN_<ID>``, URI or
    JSON form) as a Redis URL; None when it is not there. The value is never logged."""
    import json
    import os

    value = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")
    if not value or not value.lstrip().startswith("{"):
        return value or None
    try:
        conn = json.loads(value)
    except json.JSONDecodeError:
        return None
    extra = conn.get("extra") or {}
    return redis_url(conn.get("host"), conn.get("port"), conn.get("login"), conn.get("password"), extra)


def redis_url(
    host: str | None, port: int | None, login: str | None, password: str | None, extra: dict[str, Any]
) -> str:
    """A Redis URL from the fields of an Airflow connection (``extra``: ``db``, ``ssl``)."""
    from urllib.parse import quote

    auth = f"{quote(login or '', safe='')}:{quote(password or '', safe='')}@" if (login or password) else ""
    scheme = "rediss" if str(extra.get("ssl", "")).lower() == "true" else "redis"
    return f"{scheme}://{auth}{host or 'localhost'}:{port or 6379}/{int(extra.get('db') or 0)}"


# ----------------------------------------------------------------------------- the bundle
@dataclass(frozen=True)
class Backends:
    """The backends of one environment, built once per task and handed to the stages.

    ``store`` is built with the bundle (every stage reads or writes it); the compute service, the
    registry, the serving target, the mirror and the dataset catalog are built on first use (MLflow
    is a heavy import, a SageMaker client costs about a second to create) and then kept, so a task
    that never trains never builds its compute; :meth:`feature_repository` builds a Feast
    repository for a contract. A cloud bundle passes its own objects and factories (the Airflow
    layer builds them on the providers' hooks).
    """

    store: ObjectStore
    make_compute: Callable[[], Compute]
    make_registry: Callable[[], ModelRegistry]
    make_serving: Callable[[], Serving]
    make_feature_repository: Callable[[DatasetContract], FeatureRepository]
    make_mirror: Callable[[], RegistryMirror]
    make_catalog: Callable[[], DatasetCatalog] = _no_catalog  # a bundle built without one registers nothing

    @cached_property
    def compute(self) -> Compute:
        return self.make_compute()

    @cached_property
    def catalog(self) -> DatasetCatalog:
        return self.make_catalog()

    @cached_property
    def registry(self) -> ModelRegistry:
        return self.make_registry()

    @cached_property
    def serving(self) -> Serving:
        return self.make_serving()

    @cached_property
    def mirror(self) -> RegistryMirror:
        return self.make_mirror()

    def feature_repository(self, contract: DatasetContract) -> FeatureRepository:
        return self.make_feature_repository(contract)


def _given(compute: Compute) -> Compute:
    return compute


def backends_for(settings: Settings, *, store: ObjectStore | None = None, compute: Compute | None = None) -> Backends:
    """The environment's backends from ``settings`` (``store`` / ``compute`` given: used as they are)."""
    store = store if store is not None else object_store(settings)
    return Backends(
        store=store,
        make_compute=partial(_given, compute) if compute is not None else partial(compute_backend, settings, store),
        make_registry=partial(model_registry, settings),
        make_serving=partial(serving_backend, settings),
        make_feature_repository=partial(feature_repository, settings, store=store),
        make_mirror=partial(registry_mirror, settings),
        make_catalog=partial(dataset_catalog, settings),
    )
