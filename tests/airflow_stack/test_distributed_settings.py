"""The Airflow settings of a Celery stack, and the PostgreSQL/Redis helpers' refusals (no servers needed).

The lifecycle on the running Celery stack: tests/distributed/test_celery_lifecycle.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_demo.airflow_stack.component_env import (
    HOSTNAME_CALLABLE_PATH,
    StackSettings,
    StartSecrets,
    airflow_settings,
    component_hostname,
)
from mlops_demo.airflow_stack.services import PostgresDatabase, RedisDatabase, ServiceError
from mlops_demo.airflow_stack.stack import AirflowStack, CeleryOptions

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/mlops_airflow"


def _settings(**kw) -> StackSettings:
    home = Path("/stack")
    return StackSettings(
        home=home,
        config_file=home / "airflow.cfg",
        db_path=home / "airflow.db",
        log_dir=home / "logs",
        dags_folder=Path("/dags"),
        plugins_folder=Path("/plugins"),
        api_port=8080,
        worker_log_port=8793,
        trigger_log_port=8794,
        parallelism=4,
        username="admin",
        passwords_file=home / "passwords.json",
        **kw,
    )


def _env(**kw) -> dict[str, str]:
    return airflow_settings(_settings(**kw), "fernet", StartSecrets("jwt", "key"))


def test_the_local_stack_keeps_the_local_executor_on_sqlite():
    env = _env()
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "sqlite:////stack/airflow.db"
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS" in env
    assert not {k for k in env if k.startswith("AIRFLOW__CELERY__")}
    assert "AIRFLOW__CORE__HOSTNAME_CALLABLE" not in env
    assert "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT" not in env


def test_a_celery_stack_sets_executor_database_broker_and_result_backend():
    env = _env(
        executor="CeleryExecutor",
        sql_alchemy_conn=PG,
        celery_broker_url="redis://127.0.0.1:6379/3",
        celery_result_backend="db+" + PG,
        task_instance_heartbeat_timeout=45,
    )
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == PG
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] == PG  # psycopg 3 is async too; no asyncpg
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS" not in env  # the SQLite busy timeout only
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:6379/3"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+" + PG
    assert env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] == HOSTNAME_CALLABLE_PATH
    assert env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"] == "45"


def test_a_celery_stack_needs_its_database_and_broker():
    with pytest.raises(ValueError, match="CeleryExecutor needs"):
        _env(executor="CeleryExecutor", sql_alchemy_conn=PG)
    with pytest.raises(ValueError, match="executor"):
        _env(executor="KubernetesExecutor")
    with pytest.raises(ValueError, match="PostgreSQL"):
        AirflowStack("/tmp/x", "/tmp", celery=CeleryOptions("redis://127.0.0.1:6379/3", "db+" + PG))


def test_each_worker_records_its_own_hostname(monkeypatch):
    monkeypatch.setenv("MLOPS_AIRFLOW_HOSTNAME", "celery-worker-2")
    assert component_hostname() == "celery-worker-2"
    monkeypatch.delenv("MLOPS_AIRFLOW_HOSTNAME")
    assert component_hostname()  # the machine's name, as Airflow's default


def test_workers_are_components_with_their_own_command(tmp_path):
    stack = AirflowStack(
        tmp_path / "home",
        tmp_path,
        sql_alchemy_conn=PG,
        celery=CeleryOptions("redis://127.0.0.1:6379/3", "db+" + PG, workers=2, concurrency=3),
        die_with_parent=False,
    )
    assert stack.components[-2:] == ("celery-worker-1", "celery-worker-2")
    command = stack._component_command("celery-worker-2")
    assert command[-13:-9] == ["celery", "worker", "--queues", "default"]
    assert "--skip-serve-logs" in command and "celery-worker-2@%h" in command
    assert command[command.index("--concurrency") + 1] == "3"


def test_urls_with_a_password_are_refused_and_names_checked():
    with pytest.raises(ServiceError, match="pgpass"):
        PostgresDatabase("postgresql://u:secret@127.0.0.1/postgres", "x")
    with pytest.raises(ServiceError, match="lower-case"):
        PostgresDatabase("postgresql://postgres@127.0.0.1/postgres", 'x"; DROP')
    db = PostgresDatabase("postgresql://postgres@127.0.0.1:5432/postgres", "mlops_airflow")
    assert db.url() == PG
    assert db.url("db+postgresql+psycopg") == "db+" + PG
    with pytest.raises(ServiceError, match="password"):
        _ = RedisDatabase("redis://:secret@127.0.0.1:6379", 3).url
    assert RedisDatabase("redis://127.0.0.1:6379", 3).url == "redis://127.0.0.1:6379/3"
