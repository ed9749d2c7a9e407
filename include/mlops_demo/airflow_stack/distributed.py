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
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import requests

from mlops_core.child_env import child_environment
from mlops_core.ports import free_port
from mlops_demo.airflow_stack.process_sessions import kill_sessions
from mlops_demo.airflow_stack.services import (
    DEFAULT_POSTGRES_URL,
    DEFAULT_REDIS_URL,
    PostgresDatabase,
    RedisDatabase,
    ServiceError,
)
from mlops_demo.airflow_stack.stack import COMPONENT_UMASK, AirflowStack, CeleryOptions, log_tail
from mlops_demo.airflow_stack.stack_home import make_private_folder

_HOST = "127.0.0.1"


class MlflowTrackingServer:
    """``mlflow server`` on loopback with a database backend store and a local artifact root.

    The smallest launcher the distributed stack needs (one process group, its log, ``/health``);
    tasks reach it through ``MLFLOW_TRACKING_URI`` (the settings' ``registry.tracking_uri``).
    """

    def __init__(self, backend_store_uri: str, artifact_root: Path, *, port: int | None = None) -> None:
        self.backend_store_uri = backend_store_uri
        self.artifact_root = Path(artifact_root).resolve()
        self.port = port or free_port()
        self.url = f"http://{_HOST}:{self.port}"
        self.log_path = self.artifact_root.parent / "mlflow-server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout: float = 180) -> MlflowTrackingServer:
        make_private_folder(self.artifact_root)
        command = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            self.backend_store_uri,
            "--default-artifact-root",
            str(self.artifact_root),
            "--host",
            _HOST,
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        env = child_environment(extra={"PYTHONUNBUFFERED": "1"}, allow=("PGPASSFILE", "PGSSLMODE", "PGSSLROOTCERT"))
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - open while the server runs
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            umask=COMPONENT_UMASK,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                self.stop()
                raise ServiceError(f"mlflow server exited; log {self.log_path}:\n{log_tail(self.log_path)}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/health", timeout=3).ok:
                    return self
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceError(f"mlflow server not healthy in {timeout:.0f}s:\n{log_tail(self.log_path)}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self._proc is not None:
            kill_sessions({self._proc.pid}, grace=10)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class DistributedServices:
    """The databases, the Redis database number and the MLflow server of one distributed stack.

    ``drop_on_close``: drop the two databases in :meth:`close` (tests); the Redis database is
    emptied either way (a queue left behind would be run by the next stack that claims it).
    """

    airflow_db: PostgresDatabase
    mlflow_db: PostgresDatabase
    redis: RedisDatabase
    mlflow: MlflowTrackingServer
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
            server = MlflowTrackingServer(mlflow_db.url(), mlflow_artifacts, port=mlflow_port)
            services = cls(airflow_db, mlflow_db, redis, server, drop_on_close=not keep)
            server.start(timeout=timeout)
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
