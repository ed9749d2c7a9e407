"""The environment every Airflow component of a stack runs with: what passes from the caller, what we set.

Layers, later ones win:

1. **The caller's environment without Airflow's configuration.** Every ``AIRFLOW*`` variable is
   dropped, so a shell set up for another Airflow cannot point the stack at its database, except
   the ones a user exports to give tasks what they need (:func:`passes_through`):
   ``AIRFLOW_CONN_*`` (connections), ``AIRFLOW_VAR_*`` (variables) and ``AIRFLOW__SECRETS__*``
   (a secrets backend and its kwargs). They reach the components through the environment only,
   never through a command line (``ps`` shows every process's argv to every user).
2. **The stack's Airflow settings** (:func:`airflow_settings`).
3. **The caller's explicit extras** (``AirflowStack(extra_env=...)``, ``up --env``).

Executor and database. The defaults are the local stack's LocalExecutor on the home's SQLite
database; a Celery stack (``StackSettings.executor = "CeleryExecutor"``) gives PostgreSQL, the Redis
broker and the result backend, whose URLs never hold a password (``services``), and names each
worker on the task instances it runs (:func:`component_hostname`).

Secrets. The JWT signing secret (``[api_auth] jwt_secret``, shared by all components: the scheduler
signs task-identity tokens that the api-server verifies) and the API secret key (``[api]
secret_key``: log-server requests, continuation and file tokens) are generated anew for every start
and kept in memory only (:class:`StartSecrets`), unless the caller configured them
(``AIRFLOW__API_AUTH__JWT_SECRET`` / ``AIRFLOW__API__SECRET_KEY`` in its environment). Nothing
stored depends on them. The Fernet key is stored per home (see ``stack_home``).

Logs. The scheduler's and the triggerer's log servers (which serve the logs of running and
deferred tasks to the api-server) listen on ports chosen per stack, so two stacks on one machine
do not collide on Airflow's fixed defaults (8793/8794). Task log files and folders are created
owner-only. MLflow is told not to install its own handler on ``sys.stderr``
(``MLFLOW_CONFIGURE_LOGGING=false``): Airflow logs everything a task writes to stderr at ERROR
level, so every MLflow INFO line became an error; MLflow's records now go through Airflow's task
logging with their own level. (MLflow's own setup also held alembic at WARNING; Airflow 3.3's
``[logging] namespace_levels`` does not reach standard-library loggers in a task process, so the
code that opens the MLflow store has to do that itself.)
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Imported by every Airflow component through [database] sql_alchemy_connect_args (an import path).
# pysqlite's default busy timeout is 5 s; with four writer processes a longer wait is cheaper than a
# failed scheduler loop. Airflow adds check_same_thread=False itself (airflow/settings.py).
SQLITE_CONNECT_ARGS: dict[str, Any] = {"timeout": 30}
SQLITE_CONNECT_ARGS_PATH = f"{__name__}.SQLITE_CONNECT_ARGS"

# Variables of the caller that reach the components (and so the tasks) although they start with AIRFLOW.
PASSTHROUGH_PREFIXES = ("AIRFLOW_CONN_", "AIRFLOW_VAR_", "AIRFLOW__SECRETS__")
JWT_SECRET_VARIABLE = "AIRFLOW__API_AUTH__JWT_SECRET"  # noqa: S105 - a variable name, not a secret
API_SECRET_KEY_VARIABLE = "AIRFLOW__API__SECRET_KEY"  # noqa: S105 - a variable name

SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds mlops_demo/


def passes_through(name: str) -> bool:
    """True for a caller's variable that the components receive: anything not Airflow's, plus
    connections, variables and the secrets-backend settings."""
    return not name.startswith(("AIRFLOW", "_AIRFLOW")) or name.startswith(PASSTHROUGH_PREFIXES)


@dataclass(frozen=True)
class StartSecrets:
    """Secrets that live for one start of a stack (see the module doc). Never print or log them."""

    jwt_secret: str
    api_secret_key: str
    jwt_secret_from_caller: bool = False

    def __repr__(self) -> str:  # a stray print of the object shows no secret
        return f"StartSecrets(jwt_secret_from_caller={self.jwt_secret_from_caller})"

    @classmethod
    def create(cls, caller_env: Mapping[str, str]) -> StartSecrets:
        """Fresh secrets, or the ones the caller configured in ``caller_env``."""
        jwt_secret = caller_env.get(JWT_SECRET_VARIABLE) or ""
        return cls(
            jwt_secret=jwt_secret or secrets.token_urlsafe(48),
            api_secret_key=caller_env.get(API_SECRET_KEY_VARIABLE) or secrets.token_urlsafe(32),
            jwt_secret_from_caller=bool(jwt_secret),
        )


@dataclass(frozen=True)
class StackSettings:
    """What the Airflow configuration of one stack depends on."""

    home: Path
    config_file: Path
    db_path: Path
    log_dir: Path
    dags_folder: Path
    plugins_folder: Path
    api_port: int
    worker_log_port: int
    trigger_log_port: int
    parallelism: int
    username: str
    passwords_file: Path
    # The distributed deployment (``AirflowStack(celery=...)``, ``up --distributed``). The defaults are
    # the local stack: LocalExecutor on the home's SQLite database.
    executor: str = "LocalExecutor"  # LocalExecutor | CeleryExecutor
    sql_alchemy_conn: str | None = None  # None: sqlite:///<db_path>
    celery_broker_url: str | None = None  # CeleryExecutor: redis://127.0.0.1:6379/<db>
    celery_result_backend: str | None = None  # CeleryExecutor: db+postgresql+psycopg://.../<db>
    # [scheduler] task_instance_heartbeat_timeout: a task whose worker died without a word (SIGKILL, a
    # lost machine) stays "running" this long before the scheduler fails it and retries it. None:
    # Airflow's default (300 s).
    task_instance_heartbeat_timeout: int | None = None


EXECUTORS = ("LocalExecutor", "CeleryExecutor")
# [core] hostname_callable of a Celery stack: every worker on this machine records its own name on the
# task instances it runs (CELERY_WORKER_NAME_VARIABLE), where the machine's name would make two workers one.
HOSTNAME_CALLABLE_PATH = f"{__name__}.component_hostname"
CELERY_WORKER_NAME_VARIABLE = "MLOPS_AIRFLOW_HOSTNAME"


def component_hostname() -> str:
    """The host name a component records (task instances' ``hostname``): its own name when the
    stack gave it one (a Celery worker), else the machine's, as Airflow's default does."""
    import socket

    return os.environ.get(CELERY_WORKER_NAME_VARIABLE) or socket.getfqdn()


def airflow_settings(settings: StackSettings, fernet_key: str, start_secrets: StartSecrets) -> dict[str, str]:
    """The ``AIRFLOW__*`` (and MLflow logging) variables of every component. Contains secrets.

    No password is ever part of ``sql_alchemy_conn``, ``celery_broker_url`` or
    ``celery_result_backend`` (``services`` refuses one: libpq reads ``~/.pgpass``).
    """
    if settings.executor not in EXECUTORS:
        raise ValueError(f"executor {settings.executor!r}: expected one of {', '.join(EXECUTORS)}")
    celery = settings.executor == "CeleryExecutor"
    if celery and not (settings.sql_alchemy_conn and settings.celery_broker_url and settings.celery_result_backend):
        raise ValueError("CeleryExecutor needs sql_alchemy_conn, celery_broker_url and celery_result_backend")
    base_url = f"http://127.0.0.1:{settings.api_port}"
    env = {
        "AIRFLOW_HOME": str(settings.home),
        "AIRFLOW_CONFIG": str(settings.config_file),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.dags_folder),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.plugins_folder),
        "AIRFLOW__CORE__EXECUTOR": settings.executor,
        "AIRFLOW__CORE__PARALLELISM": str(settings.parallelism),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__FERNET_KEY": fernet_key,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{settings.username}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(settings.passwords_file),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(settings.api_port),
        "AIRFLOW__API__BASE_URL": f"{base_url}/",
        "AIRFLOW__API__WORKERS": "1",
        API_SECRET_KEY_VARIABLE: start_secrets.api_secret_key,
        JWT_SECRET_VARIABLE: start_secrets.jwt_secret,
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(settings.log_dir),
        # log servers of the scheduler (running tasks) and the triggerer (deferred tasks), per stack
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(settings.worker_log_port),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(settings.trigger_log_port),
        # task log files are chmod-ed to these after creation (defaults 0o664 / 0o775)
        "AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FILE_PERMISSIONS": "0o600",
        "AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FOLDER_PERMISSIONS": "0o700",
        "MLFLOW_CONFIGURE_LOGGING": "false",
        # quick pickup of new/changed DAG files: list the folder every 5 s, and let a changed DAG
        # replace its serialized version after 5 s instead of 30 s (airflow/dag_processing/
        # collection.py, airflow/models/dagbag.py). A file whose mtime changed since its last
        # parse is parsed again at once whatever the interval ([dag_processor]
        # file_parsing_sort_mode = modified_time, the default: DagFileProcessorManager.
        # prepare_file_queue), so the interval only paces re-parsing *unchanged* files: Airflow's
        # default 30 s. At 10 s the dag-processor took ~13% of one core, idle or not (5% at 30 s):
        # CPU the tasks need on a 2-core machine (bench/bench_lifecycle.py).
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
        "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "5",
        # the scheduler loop already runs back-to-back when busy and sleeps <= 1 s when idle
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "1",
    }
    if settings.sql_alchemy_conn is None:
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{settings.db_path}"
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"] = SQLITE_CONNECT_ARGS_PATH
    else:
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = settings.sql_alchemy_conn
        if settings.sql_alchemy_conn.startswith("postgresql+psycopg://"):
            # Airflow derives its async engine's URL by swapping in asyncpg, which the lock does not
            # hold; psycopg 3 is async itself (SQLAlchemy picks its async dialect for the same URL).
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] = settings.sql_alchemy_conn
    if settings.task_instance_heartbeat_timeout is not None:
        env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"] = str(settings.task_instance_heartbeat_timeout)
    if celery:
        env.update(
            {
                "AIRFLOW__CELERY__BROKER_URL": str(settings.celery_broker_url),
                "AIRFLOW__CELERY__RESULT_BACKEND": str(settings.celery_result_backend),
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": HOSTNAME_CALLABLE_PATH,
            }
        )
    return env


def default_pycache_prefix() -> Path:
    """Where components write bytecode: a user cache folder, outside the repository and the venv."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    tag = sys.implementation.cache_tag or "python"
    return Path(base) / "mlops-airflow-stack" / f"pycache-{tag}"


def component_environment(
    caller_env: Mapping[str, str], stack_env: Mapping[str, str], *, pycache_prefix: Path | None
) -> dict[str, str]:
    """The full environment of a component process: ``caller_env`` filtered by :func:`passes_through`,
    then ``stack_env`` (the stack's settings and the caller's explicit extras).

    ``pycache_prefix``: write bytecode there (importing Airflow without bytecode costs seconds of
    CPU per process); ``None`` leaves the caller's bytecode settings alone.
    """
    env = {name: value for name, value in caller_env.items() if passes_through(name)}
    env["PYTHONUNBUFFERED"] = "1"
    if pycache_prefix is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.setdefault("PYTHONPYCACHEPREFIX", str(pycache_prefix))
    env.update(stack_env)
    # Components import SQLITE_CONNECT_ARGS from this package: make it importable even when the
    # project is not installed in editable mode (appended: never shadows anything).
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(_PACKAGE_ROOT) not in paths:
        env["PYTHONPATH"] = os.pathsep.join([*paths, str(_PACKAGE_ROOT)])
    return env
