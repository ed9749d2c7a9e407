"""docker-compose.yml and the Dockerfile, checked without Docker (this machine kind cannot run it).

Structure: every service the deployment needs, health checks and restart policies, a one-shot init
that the others wait for, Celery workers that ``--scale`` (no container name, no host port),
secrets only as ``${NAME:?...}`` from the environment (``.env``, never committed).

Sameness with the native Celery stack (``make up-distributed``, the Celery lifecycle test): the
Airflow settings of the compose services are compared with
``component_env.airflow_settings(StackSettings(executor="CeleryExecutor", ...))``, key by key.
Every key must have the same value unless :data:`DIFFERS` names it with the reason; URLs must use
the same driver; the worker runs the same ``airflow celery worker`` options; the image installs the
same lock the native venv is built from, and holds the DAGs and the plugin where the settings say.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from mlops_demo.airflow_stack.component_env import StackSettings, StartSecrets, airflow_settings
from mlops_demo.airflow_stack.stack import CeleryOptions

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict = COMPOSE["services"]
DOCKERFILE = (REPO / "Dockerfile").read_text(encoding="utf-8")

AIRFLOW_SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer", "airflow-worker")
ONE_SHOT = ("airflow-init",)
WORKER = "airflow-worker"
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
SECRET = re.compile(r"SECRET|PASSWORD|FERNET|TOKEN|(^|_)KEY$")  # names of values that must come from .env
REQUIRED_FROM_ENV = re.compile(r"\$\{\w+:\?[^}]+\}")  # ${NAME:?message}: compose stops when NAME is unset
INIT_ONLY = {"AIRFLOW_ADMIN_USERNAME", "AIRFLOW_ADMIN_PASSWORD", "AIRFLOW_ADMIN_EMAIL"}  # the first FAB user

# Settings that differ between the native stack and the containers, and why. Every other key of the
# native settings must be in the compose environment with the same value.
DIFFERS = {
    # where things are: the image's folders, not a home under the repository
    "AIRFLOW_HOME": "the image's AIRFLOW_HOME",
    "AIRFLOW_CONFIG": "inside the image's AIRFLOW_HOME",
    "AIRFLOW__CORE__DAGS_FOLDER": "the image's copy of dags/ (checked against the Dockerfile below)",
    "AIRFLOW__CORE__PLUGINS_FOLDER": "the image's copy of plugins/ (checked against the Dockerfile below)",
    "AIRFLOW__LOGGING__BASE_LOG_FOLDER": "the shared airflow-logs volume",
    # how components reach each other: service names on the compose network instead of loopback
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "the api-server service (same path, checked below)",
    "AIRFLOW__API__HOST": "a container listens on all its interfaces; the host port is published",
    "AIRFLOW__API__BASE_URL": "the URL users open (AIRFLOW_BASE_URL)",
    "AIRFLOW__API__PORT": "a fixed port inside the container (native: a free port per stack)",
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": "Airflow's default: one container per component (native: per stack)",
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": "Airflow's default: one container per component (native: per stack)",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "the postgres service; same driver (checked below)",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": "the postgres service; same driver (checked below)",
    "AIRFLOW__CELERY__BROKER_URL": "the redis service; same scheme (checked below)",
    "AIRFLOW__CELERY__RESULT_BACKEND": "the postgres service; same driver (checked below)",
    # sizing: a deployment sets it for its machines
    "AIRFLOW__CORE__PARALLELISM": "AIRFLOW_PARALLELISM (native: workers x concurrency of the stack)",
    "AIRFLOW__API__WORKERS": "AIRFLOW_API_WORKERS (native: one, on a shared laptop)",
    # secrets: from .env (checked below), generated per start natively
    "AIRFLOW__CORE__FERNET_KEY": "secret from .env",
    "AIRFLOW__API_AUTH__JWT_SECRET": "secret from .env",
    "AIRFLOW__API__SECRET_KEY": "secret from .env",
    # users: FAB (users with passwords in the database) instead of the simple auth manager
    "AIRFLOW__CORE__AUTH_MANAGER": "FAB: a real auth manager with users in the metadata database",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "simple auth manager only",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": "simple auth manager only",
}
# Keys only the containers have, and why.
COMPOSE_ONLY = {
    "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "the scheduler's /health for the compose health check",
    "MLFLOW_TRACKING_URI": "native: DistributedServices.task_environment() gives the tasks the MLflow server",
    "MLFLOW_UI_URL": "the extra links (native: `up` sets it to the server it starts)",
    "MLOPS_ENV": "the environment's settings (native: the caller's environment)",
    "MLOPS_HOME": "the shared mlops-data volume (native: --mlops-home)",
}


def _resolve(value: object) -> str:
    """A compose value with ``${NAME:-default}`` replaced by the default and ``${NAME:?msg}`` by ``<NAME>``."""
    text = str(value)
    text = re.sub(r"\$\{(\w+):-([^}]*)\}", r"\2", text)
    return re.sub(r"\$\{(\w+):\?[^}]*\}", r"<\1>", text)


def _environment(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in (SERVICES[service].get("environment") or {}).items()}


def _native_celery_settings() -> dict[str, str]:
    """What the native Celery stack runs with (the shape of ``AirflowStack(celery=...)``'s settings)."""
    home = Path("/srv/native/airflow")
    settings = StackSettings(
        home=home,
        config_file=home / "airflow.cfg",
        db_path=home / "airflow.db",
        log_dir=home / "logs",
        dags_folder=REPO / "dags",
        plugins_folder=REPO / "plugins",
        api_port=38080,
        worker_log_port=38793,
        trigger_log_port=38794,
        parallelism=4,
        username="admin",
        passwords_file=home / "passwords.json",
        executor="CeleryExecutor",
        sql_alchemy_conn="postgresql+psycopg://postgres@127.0.0.1:5432/airflow_native",
        celery_broker_url="redis://127.0.0.1:6379/7",
        celery_result_backend="db+postgresql+psycopg://postgres@127.0.0.1:5432/airflow_native",
    )
    return airflow_settings(settings, "fernet-key", StartSecrets(jwt_secret="jwt", api_secret_key="key"))


# -- structure --------------------------------------------------------------------------------------


def test_the_deployment_has_every_service():
    expected = {"postgres", "redis", "mlflow", "moto", "azurite", *AIRFLOW_SERVICES, *ONE_SHOT}
    assert expected <= set(SERVICES)
    assert {SERVICES[s].get("profiles", [None])[0] for s in ("moto", "azurite")} == {"local-cloud"}


@pytest.mark.parametrize("service", sorted(set(SERVICES) - set(ONE_SHOT)))
def test_every_long_running_service_has_a_health_check_and_restarts(service):
    spec = SERVICES[service]
    test = spec["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1
    assert spec["restart"] in ("unless-stopped", "always")


def test_init_runs_once_and_the_airflow_components_wait_for_it():
    init = SERVICES["airflow-init"]
    assert init["restart"] == "no"
    assert init["command"][-1] == "airflow db migrate && python -m mlops_demo.fab_admin"
    for service in AIRFLOW_SERVICES:
        depends = SERVICES[service]["depends_on"]
        assert depends["airflow-init"] == {"condition": "service_completed_successfully"}
        assert depends["postgres"] == {"condition": "service_healthy"}
        assert depends["redis"] == {"condition": "service_healthy"}


def test_workers_scale_with_compose():
    worker = SERVICES[WORKER]
    assert "container_name" not in worker and "ports" not in worker
    assert worker["command"][:3] == ["airflow", "celery", "worker"]


def test_fab_auth_manager_with_the_first_user_from_the_environment():
    env = _environment("airflow-worker")
    assert env["AIRFLOW__CORE__AUTH_MANAGER"] == FAB_AUTH_MANAGER
    init_env = _environment("airflow-init")
    assert REQUIRED_FROM_ENV.fullmatch(init_env["AIRFLOW_ADMIN_PASSWORD"])
    assert all(INIT_ONLY.isdisjoint(_environment(s)) for s in AIRFLOW_SERVICES)  # the password reaches init only
    # the provider is in the lock the image installs
    assert re.search(r"^apache-airflow-providers-fab==", (REPO / "requirements.lock").read_text(), re.M)


# -- secrets ------------------------------------------------------------------------------------------


def _walk(node: object, path: str = ""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")
    else:
        yield path, str(node)


def test_secrets_come_only_from_the_environment():
    for path, value in _walk(COMPOSE):
        name = path.rsplit(".", 1)[-1]
        password_in_url = re.search(r"://[^/\s:@]+:([^/\s@]+)@", value)
        if password_in_url:
            assert REQUIRED_FROM_ENV.fullmatch(password_in_url.group(1)), f"{path}: a literal password"
        if SECRET.search(name):
            assert REQUIRED_FROM_ENV.fullmatch(value), f"{path}: a secret must be ${{NAME:?...}}, got {value!r}"


def test_the_env_file_is_an_uncommitted_copy_of_the_example():
    example = (REPO / ".env.example").read_text(encoding="utf-8")
    required = {name for _, value in _walk(COMPOSE) for name in re.findall(r"\$\{(\w+):\?", value)}
    given = dict(re.findall(r"^(\w+)=(.*)$", example, re.M))
    assert required <= set(given), f"missing from .env.example: {sorted(required - set(given))}"
    assert {given[name] for name in required if SECRET.search(name)} == {"change-me"}  # placeholders only
    assert ".env" in (REPO / ".gitignore").read_text().splitlines()
    tracked = subprocess.run(["git", "ls-files", ".env"], cwd=REPO, capture_output=True, text=True, check=True)
    assert tracked.stdout == ""


# -- the same settings, image and worker as the native Celery stack ------------------------------------


@pytest.mark.parametrize("service", [*AIRFLOW_SERVICES, *ONE_SHOT])
def test_airflow_settings_are_the_native_celery_stacks(service):
    native = _native_celery_settings()
    compose = {k: _resolve(v) for k, v in _environment(service).items()}
    assert set(DIFFERS) <= set(native), f"stale DIFFERS entries: {sorted(set(DIFFERS) - set(native))}"
    missing = sorted(set(native) - set(compose) - {k for k in DIFFERS if "SIMPLE_AUTH_MANAGER" in k})
    assert missing == []
    same = {k: v for k, v in native.items() if k not in DIFFERS}
    assert {k: compose[k] for k in same} == same
    extra = set(compose) - set(native) - set(COMPOSE_ONLY) - (INIT_ONLY if service in ONE_SHOT else set())
    assert extra == set(), "document compose-only settings in COMPOSE_ONLY"


def test_database_and_broker_use_the_native_drivers():
    from sqlalchemy import make_url

    native = _native_celery_settings()
    compose = {k: _resolve(v) for k, v in _environment(WORKER).items()}
    assert native["AIRFLOW__CORE__EXECUTOR"] == compose["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    for key in (
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC",
        "AIRFLOW__CELERY__RESULT_BACKEND",
    ):
        assert make_url(compose[key]).drivername == make_url(native[key]).drivername, key
    assert (
        compose["AIRFLOW__CELERY__BROKER_URL"].split("://")[0] == native["AIRFLOW__CELERY__BROKER_URL"].split("://")[0]
    )
    assert compose["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].endswith("/execution/")
    assert native["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].endswith("/execution/")
    # MLflow's store: PostgreSQL through the same driver, its URI (password) in the environment only
    mlflow = SERVICES["mlflow"]
    store = _resolve(mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"])
    assert make_url(store).drivername == make_url(native["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).drivername
    assert not any("backend-store-uri" in str(arg) for arg in mlflow["command"])
    assert compose["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_the_worker_runs_the_native_worker_options():
    native = CeleryOptions(broker_url="redis://x", result_backend="db+postgresql://x")
    options = dict(arg.partition("=")[::2] for arg in map(_resolve, SERVICES[WORKER]["command"]))
    assert options["--queues"] == native.queue
    assert int(options["--concurrency"]) == native.concurrency
    # as the native worker's command (AirflowStack's celery-worker-<n>): logs on the shared volume
    # (one machine natively), no gossip or mingle between workers
    assert {"--skip-serve-logs", "--without-gossip", "--without-mingle"} <= set(options)


def test_the_image_installs_the_lock_and_holds_what_the_settings_name():
    lines = [line.strip() for line in DOCKERFILE.replace("\\\n", " ").splitlines() if line.strip()]
    base = next(line for line in lines if line.startswith("FROM "))
    lock_python = re.search(r"--python-version (\d+\.\d+)", (REPO / "scripts" / "lock.sh").read_text()).group(1)
    assert re.match(rf"FROM python:{re.escape(lock_python)}-", base), "the image's Python is the lock's"
    runs = " ".join(line for line in lines if line.startswith("RUN "))
    assert re.search(r"--require-hashes\s+requirements\.lock", runs)
    assert re.search(r"--require-hashes --no-deps -r scripts/bootstrap\.lock", runs)
    assert re.search(r"--no-deps\s+--no-build-isolation -e \.", runs)
    workdir = next(line.split()[1] for line in lines if line.startswith("WORKDIR "))
    copies = {line.split()[1].rstrip("/"): line.split()[2].rstrip("/") for line in lines if line.startswith("COPY ")}
    for folder in ("dags", "include", "plugins"):
        assert copies[folder] == folder
    env = {k: _resolve(v) for k, v in _environment(WORKER).items()}
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == f"{workdir}/dags"
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == f"{workdir}/plugins"
    assert not re.search(
        r"^ENTRYPOINT", DOCKERFILE, re.M
    )  # the chart and the KubernetesExecutor's pods pass whole commands
    # every service of ours runs that image
    images = {SERVICES[s]["image"] for s in (*AIRFLOW_SERVICES, *ONE_SHOT, "mlflow")}
    assert images == {"${MLOPS_IMAGE:-airflow-mlops:latest}"}
