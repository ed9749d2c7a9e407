"""The native distributed deployment: CeleryExecutor workers, PostgreSQL, Redis, an MLflow server.

:class:`DistributedServices` gets what a Celery stack needs from the PostgreSQL and Redis servers
already running (``services``): a database for Airflow's metadata and Celery's task results, one
for the MLflow tracking server, and a Redis database number for the Celery queue; it starts the
MLflow tracking server on its database. :func:`celery_stack` is the :class:`AirflowStack` on them.

    services = DistributedServices.create(home / "mlflow")          # unique databases, dropped by close()
    stack = celery_stack(home / "airflow", dags, services, workers=2)
    with services, stack:
        ...  # tasks run on celery-worker-1 and celery-worker-2

``make up-distributed`` (``up --distributed``) names its databases (``--database``) and keeps them
between starts, like ``make up`` keeps ``.airflow``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_demo.airflow_stack.services import (
    DEFAULT_POSTGRES_URL,
    DEFAULT_REDIS_URL,
    PostgresDatabase,
    RedisDatabase,
    ServiceError,
)
from mlops_demo.airflow_stack.stack import AirflowStack, CeleryOptions
from mlops_demo.mlflow_server import MlflowServer, MlflowServerError


@dataclass
class DistributedServices:
    """The databases, the Redis database number and the MLflow server of one distributed stack.

    ``drop_on_close``: drop the two databases in :meth:`close` (tests); the Redis database is
    emptied either way (a queue left behind would be run by the next stack that claims it).
    """

    airflow_db: PostgresDatabase
    mlflow_db: PostgresDatabase
    redis: RedisDatabase
    mlflow: MlflowServer
    drop_on_close: bool = True
    _closed: bool = field(default=False, repr=False)

    @classmethod
    def create(
        cls,
        mlflow_artifacts: Path,
        *,
        postgres_url: str = DEFAULT_POSTGRES_URL,
        redis_url: str = DEFAULT_REDIS_URL,
        database: str | None = None,
        mlflow_port: int | None = None,
        timeout: float = 180,
    ) -> DistributedServices:
        """Create (or, for a named ``database``, reuse) the databases, claim a Redis database, start MLflow.

        ``database``: the Airflow database's name (MLflow's is ``<name>_mlflow``), kept by :meth:`close`;
        ``None``: unique names, dropped by :meth:`close`.
        """
        if database is None:
            airflow_db = PostgresDatabase.unique(postgres_url)
        else:
            airflow_db = PostgresDatabase(postgres_url, database)
        mlflow_db = PostgresDatabase(postgres_url, f"{airflow_db.name}_mlflow")
        keep = database is not None
        airflow_db.create(exist_ok=keep)
        services: DistributedServices | None = None
        try:
            mlflow_db.create(exist_ok=keep)
            redis = RedisDatabase.claim(redis_url)
            server = MlflowServer(
                mlflow_db.url(),
                mlflow_artifacts,
                port=mlflow_port,
                log_path=Path(mlflow_artifacts).parent / "mlflow-server.log",
            )
            services = cls(airflow_db, mlflow_db, redis, server, drop_on_close=not keep)
            try:
                server.start(timeout=timeout)
            except MlflowServerError as exc:
                raise ServiceError(str(exc)) from exc
        except BaseException:
            if services is not None:
                services.close()
            else:
                for db in (mlflow_db, airflow_db):
                    if not keep:
                        with contextlib.suppress(ServiceError):
                            db.drop()
            raise
        return services

    def celery_options(self, workers: int = 2, concurrency: int = 2) -> CeleryOptions:
        return CeleryOptions(
            broker_url=self.redis.url,
            result_backend=self.airflow_db.url("db+postgresql+psycopg"),
            workers=workers,
            concurrency=concurrency,
        )

    def task_environment(self) -> dict[str, str]:
        """What the tasks need to reach the MLflow server (the settings read ``MLFLOW_TRACKING_URI``)."""
        return {"MLFLOW_TRACKING_URI": self.mlflow.url}

    def close(self) -> None:
        """Stop MLflow, empty the Redis database, drop the databases unless they are kept. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.mlflow.stop()
        self.redis.release()
        if self.drop_on_close:
            for db in (self.mlflow_db, self.airflow_db):
                db.drop()

    def __enter__(self) -> DistributedServices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def celery_stack(
    home: Path | str,
    dags_folder: Path | str,
    services: DistributedServices,
    *,
    workers: int = 2,
    concurrency: int = 2,
    task_instance_heartbeat_timeout: int | None = None,
    **stack_kwargs: Any,
) -> AirflowStack:
    """An :class:`AirflowStack` with the CeleryExecutor on ``services`` (``workers`` x ``concurrency`` slots).

    ``[core] parallelism`` (the scheduler's limit on running tasks) is set to the workers' slots
    unless given. The tasks' ``MLFLOW_TRACKING_URI`` is the MLflow server's.
    """
    extra_env = {**services.task_environment(), **dict(stack_kwargs.pop("extra_env", None) or {})}
    stack_kwargs.setdefault("parallelism", max(1, workers * concurrency))
    return AirflowStack(
        home,
        dags_folder,
        sql_alchemy_conn=services.airflow_db.url(),
        celery=services.celery_options(workers, concurrency),
        task_instance_heartbeat_timeout=task_instance_heartbeat_timeout,
        extra_env=extra_env,
        **stack_kwargs,
    )


def pg_url_from_environment() -> str:
    """The PostgreSQL server of the distributed stack: ``MLOPS_PG_URL`` or the local default."""
    return os.environ.get("MLOPS_PG_URL") or DEFAULT_POSTGRES_URL


def redis_url_from_environment() -> str:
    """The Redis server of the distributed stack: ``MLOPS_REDIS_URL`` or the local default."""
    return os.environ.get("MLOPS_REDIS_URL") or DEFAULT_REDIS_URL
