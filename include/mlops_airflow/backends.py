"""The environment's backends for an Airflow task: local ones from ``mlops_core``, cloud ones on provider hooks.

``mlops_core.backends.backends_for`` builds what needs no Airflow (``local``). A task builds its
bundle here instead, once: a concern set to ``aws`` gets the implementation built on the Amazon
provider's hooks for ``aws.conn_id`` (:mod:`mlops_airflow.hooks.aws`), everything else comes from
``mlops_core`` unchanged. Operators and triggers call :func:`backends_for` (or :func:`compute_for`),
so ``dags/`` never names a backend.
"""

from __future__ import annotations

import os
from functools import partial
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlops_core.backends import Backends
    from mlops_core.compute import Compute
    from mlops_core.contract import DatasetContract
    from mlops_core.dataset_catalog import DatasetCatalog
    from mlops_core.drop_source import DropSource
    from mlops_core.features import FeatureRepository
    from mlops_core.registry_mirror import RegistryMirror
    from mlops_core.serving_target import Serving
    from mlops_core.settings import Settings
    from mlops_core.storage import ObjectStore


def store_for(settings: Settings) -> ObjectStore:
    from mlops_core import backends as core

    if settings.backends.storage == "aws":
        from mlops_airflow.hooks.aws import s3_object_store

        return s3_object_store(settings)
    return core.object_store(settings)


def drop_source_for(settings: Settings, location: str | os.PathLike[str] | None = None) -> DropSource:
    """The drop zone at ``location`` (default ``dataset.drop_zone``): a local folder, or an S3 prefix on ``S3Hook``."""
    from mlops_core.delivered_files import DropZone
    from mlops_core.settings import is_s3_uri

    where = settings.dataset.drop_zone if location is None else location
    if is_s3_uri(where):
        from mlops_airflow.hooks.aws import s3_drop_zone

        return s3_drop_zone(settings, str(where))
    return DropZone(where)


def compute_for(settings: Settings, store: ObjectStore | None = None) -> Compute:
    from mlops_core import backends as core

    store = store if store is not None else store_for(settings)
    if settings.backends.compute == "aws":
        from mlops_airflow.hooks.aws import sagemaker_compute
        from mlops_core.s3_storage import S3ObjectStore

        if not isinstance(store, S3ObjectStore):
            raise core.BackendNotAvailable(
                "backends.compute = 'aws' (SageMaker) reads and writes S3: set backends.storage to 'aws' too"
            )
        return sagemaker_compute(settings, store)
    return core.compute_backend(settings, store)


def _serving(settings: Settings, store: ObjectStore) -> Serving:
    from mlops_core import backends as core

    if settings.backends.serving == "aws":
        from mlops_airflow.hooks.aws import sagemaker_serving
        from mlops_core.s3_storage import S3ObjectStore

        if not isinstance(store, S3ObjectStore):
            raise core.BackendNotAvailable("backends.serving = 'aws' (SageMaker) needs backends.storage 'aws' too")
        return sagemaker_serving(settings, store)
    return core.serving_backend(settings)


def _mirror(settings: Settings) -> RegistryMirror:
    from mlops_core import backends as core

    if settings.backends.registry_mirror == "sagemaker":
        from mlops_airflow.hooks.aws import sagemaker_registry_mirror

        return sagemaker_registry_mirror(settings)
    return core.registry_mirror(settings)


def _catalog(settings: Settings) -> DatasetCatalog:
    from mlops_core import backends as core

    if settings.backends.catalog == "glue":
        from mlops_airflow.hooks.aws import glue_catalog

        return glue_catalog(settings)
    return core.dataset_catalog(settings)


def _feature_repository(settings: Settings, store: ObjectStore, contract: DatasetContract) -> FeatureRepository:
    """The feature repository on the task's store; a Redis online store reached through the Airflow
    connection ``features.redis_conn_id`` (any secrets backend), its password never logged."""
    from mlops_core import backends as core

    url = None
    if settings.features.online_store == "redis":
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(settings.features.redis_conn_id)
        url = core.redis_url(conn.host, conn.port, conn.login, conn.password, conn.extra_dejson)
    return core.feature_repository(settings, contract, store=store, redis_url=url)


def backends_for(settings: Settings) -> Backends:
    """The task's bundle: the store built now, the rest on first use (a task that never trains never
    creates the SageMaker and CloudWatch Logs clients of ``compute``)."""
    from mlops_core import backends as core

    store = store_for(settings)
    return core.Backends(
        store=store,
        make_compute=partial(compute_for, settings, store),
        make_registry=partial(core.model_registry, settings),
        make_serving=partial(_serving, settings, store),
        make_feature_repository=partial(_feature_repository, settings, store),
        make_mirror=partial(_mirror, settings),
        make_catalog=partial(_catalog, settings),
    )
