"""``python -m mlops_demo.airflow_stack up``: Airflow in the foreground until Ctrl-C (what ``make up`` runs).

    python -m mlops_demo.airflow_stack up --home .airflow --dags dags [--port 8080] [--mlops-home .mlops]
    python -m mlops_demo.airflow_stack up --distributed --workers 2 ...   (what ``make up-distributed`` runs)

``--distributed``: the CeleryExecutor with ``--workers`` Celery workers on this machine, Airflow's
metadata in the PostgreSQL database ``--database`` (created on the server ``MLOPS_PG_URL``, default
``postgresql://postgres@127.0.0.1:5432/postgres``, and kept between starts), the queue in a free
Redis database number of ``MLOPS_REDIS_URL`` (default ``redis://127.0.0.1:6379``; emptied on stop),
and an MLflow tracking server on the PostgreSQL database ``<database>_mlflow`` that the tasks use.

It prints the UI's URL, the user and its password (on purpose: it is the only way in) and where
the password is stored. On Ctrl-C (or SIGTERM) it stops what it started: the Airflow components
with every process they forked, the MLflow server, and the model servers the deploy DAG started
for its ``MLOPS_HOME`` (``<mlops home>/serving/<env>/``), and says what it stopped.

MLflow. ``up`` also starts an MLflow tracking server with its UI (``--mlflow-port``, default 5000;
``--no-mlflow`` skips it) on the store the tasks write: the ``registry.tracking_uri`` and
``artifact_root`` of the environment's settings (``include/conf/<MLOPS_ENV>.yaml``, by default
``sqlite:///<MLOPS_HOME>/mlflow/mlflow.db``). The tasks keep writing to that store directly (as in
``make demo`` and the tests, and without depending on the server being up); the server shows what
they wrote. The components get ``MLFLOW_UI_URL`` (the extra links of the Airflow UI open it).
When the settings already name a tracking server (``MLFLOW_TRACKING_URI=http://...``), ``up``
starts none and links to that one.

Connections, variables and a secrets backend reach the tasks the usual Airflow way: export
``AIRFLOW_CONN_<ID>``, ``AIRFLOW_VAR_<NAME>`` or ``AIRFLOW__SECRETS__BACKEND[_KWARGS]`` before
``make up``; they are passed on through the environment. ``--env`` puts its value on a command
line, which every user of the machine can read (``ps``), so it refuses anything that looks like a
secret and says how to pass it instead.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_core.child_env import is_secret_name
from mlops_demo.airflow_stack.component_env import (
    API_SECRET_KEY_VARIABLE,
    JWT_SECRET_VARIABLE,
    PASSTHROUGH_PREFIXES,
    passes_through,
)
from mlops_demo.airflow_stack.stack import AirflowStack, StackError
from mlops_demo.airflow_stack.stack_home import make_private_folder
from mlops_demo.mlflow_server import MlflowPortInUseError, MlflowServer, MlflowServerError, masked_uri

PROG = "python -m mlops_demo.airflow_stack"
STOP_TIMEOUT = 30.0
_AIRFLOW_OPTION = re.compile(r"^AIRFLOW__(?P<section>[A-Z0-9_]+?)__(?P<key>[A-Z0-9_]+)$", re.IGNORECASE)
_URL_WITH_PASSWORD = re.compile(r"://[^/\s:@]+:[^/\s@]+@")


@functools.cache
def airflow_sensitive_options() -> frozenset[tuple[str, str]] | None:
    """(section, option) pairs that Airflow marks ``sensitive`` in its config template, or None
    when the template cannot be read. Read without importing Airflow (which would read a config)."""
    import yaml

    spec = importlib.util.find_spec("airflow")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        template = Path(location) / "config_templates" / "config.yml"
        try:
            sections = yaml.safe_load(template.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        return frozenset(
            (str(section).lower(), str(option).lower())
            for section, body in sections.items()
            for option, option_spec in ((body or {}).get("options") or {}).items()
            if (option_spec or {}).get("sensitive")
        )
    return None


def secret_assignment_problem(name: str, value: str) -> str | None:
    """Why ``--env name=value`` must not be used (the value would be on a command line), or None."""
    how_to_export = (
        f"export it in your shell instead (export {name}=...): `up` passes "
        f"{', '.join(p + '*' for p in PASSTHROUGH_PREFIXES)}, {JWT_SECRET_VARIABLE} and every non-Airflow "
        "variable on to the components through their environment, never through a command line"
    )
    option = _AIRFLOW_OPTION.match(name)
    if option:
        section, key = option["section"].lower(), option["key"].lower()
        base_key = re.sub(r"_(cmd|secret)$", "", key)
        sensitive = airflow_sensitive_options()
        if sensitive is None or (section, base_key) in sensitive or is_secret_name(key):
            if passes_through(name) or name.upper() in (JWT_SECRET_VARIABLE, API_SECRET_KEY_VARIABLE):
                return f"--env {name}: this Airflow option holds a secret; {how_to_export}"
            return (
                f"--env {name}: this Airflow option holds a secret and a command line is readable by every "
                f"user (ps); set it in <home>/airflow.cfg (owner-only) instead"
            )
    elif is_secret_name(name):
        return f"--env {name}: the name marks a secret and a command line is readable by every user (ps); " + (
            how_to_export
        )
    if _URL_WITH_PASSWORD.search(value):
        return (
            f"--env {name}: the value holds a URL with a password, and a command line is readable by every "
            f"user (ps); {how_to_export}"
        )
    return None


def parse_env_assignments(pairs: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings -> dict; raises ``ValueError`` for a malformed pair or a secret."""
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--env expects KEY=VALUE, got {pair.partition('=')[0]!r}...")
        problem = secret_assignment_problem(name, value)
        if problem:
            raise ValueError(problem)
        env[name] = value
    return env


def _default_mlops_home() -> Path:
    from mlops_core.settings import mlops_home

    return mlops_home()


@contextlib.contextmanager
def _environment(overrides: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``overrides`` applied for the duration (restored afterwards)."""
    saved = dict(os.environ)
    os.environ.update(overrides)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@dataclass(frozen=True)
class TrackingStore:
    """Where the tasks of a stack log to MLflow (one environment's ``registry:`` settings)."""

    env: str
    tracking_uri: str
    artifact_root: str
    other_envs: tuple[str, ...] = ()  # environments whose settings name another store

    @property
    def is_server(self) -> bool:
        """True when the tasks already talk to a tracking server (nothing to start)."""
        return self.tracking_uri.startswith(("http://", "https://"))


def tracking_store(env_overrides: Mapping[str, str]) -> TrackingStore:
    """The MLflow store the components' tasks write, read from the settings as the tasks read them:
    our environment with ``env_overrides`` (``MLOPS_HOME``, ``up --env``) laid over it.

    The environment is ``MLOPS_ENV`` (default dev); the others are named in ``other_envs`` when
    their settings name a different store (the server serves one store).
    """
    from mlops_core.environments import ENVIRONMENTS, current_env
    from mlops_core.settings import load_settings

    with _environment(env_overrides):
        env = current_env()
        registries = {e: load_settings(e).registry for e in ENVIRONMENTS}
    ours = registries[env]
    others = tuple(e for e, r in registries.items() if r.tracking_uri != ours.tracking_uri)
    return TrackingStore(env, ours.tracking_uri, str(ours.artifact_root), others)


def _mlflow_line(store: TrackingStore, server: MlflowServer | None) -> str:
    """The ``MLflow:`` line of the banner."""
    if store.is_server:
        return f"  MLflow:   {store.tracking_uri} (the tracking server of the settings; not started here)\n"
    if server is None:
        return ""
    note = f"; {', '.join(store.other_envs)} log elsewhere (not shown)" if store.other_envs else ""
    return (
        f"  MLflow:   {server.url} (UI on {masked_uri(store.tracking_uri)}, {store.env} settings{note})\n"
        f"            log: {server.log_path}\n"
    )


def _stop_everything(
    stack: AirflowStack, mlops_home: Path, timeout: float, mlflow_server: MlflowServer | None = None
) -> None:
    """Stop the stack, the MLflow server, then the training jobs and model servers of ``mlops_home``;
    print what was stopped."""
    from mlops_core.compute import LocalJobCompute
    from mlops_core.serving import LocalModelServer

    summary = stack.stop(timeout=timeout)
    if summary.components:
        killed = f"; {summary.killed} killed after the {timeout:.0f}s grace period" if summary.killed else ""
        print(
            f"Stopped Airflow: {', '.join(summary.components)} "
            f"({summary.processes} processes with workers, tasks and log servers{killed}).",
            flush=True,
        )
    if mlflow_server is not None and mlflow_server.stop(timeout=min(timeout, 10.0)):
        print(f"Stopped the MLflow server at {mlflow_server.url}.", flush=True)
    for job in LocalJobCompute.stop_all(mlops_home / "jobs"):
        print(f"Stopped training job {job}.", flush=True)
    servers = LocalModelServer.stop_all(mlops_home / "serving")
    for deployment in servers:
        print(
            f"Stopped model server: {deployment.model_uri} (version {deployment.model_version}) "
            f"at {deployment.url}, pid {deployment.pid}.",
            flush=True,
        )
    if not servers:
        print(f"No model server was running under {mlops_home / 'serving'}.", flush=True)


def _distributed_stack(args: argparse.Namespace, extra_env: dict[str, str], mlops_home: Path) -> tuple[Any, Any]:
    """The PostgreSQL/Redis/MLflow services and the Celery stack on them (``--distributed``)."""
    from mlops_demo.airflow_stack.distributed import (
        DistributedServices,
        celery_stack,
        pg_url_from_environment,
        redis_url_from_environment,
    )

    print(
        f"Preparing PostgreSQL database {args.database} (+ {args.database}_mlflow), a Redis database and "
        "the MLflow tracking server ...",
        flush=True,
    )
    services = DistributedServices.create(
        mlops_home / "mlflow-server" / "artifacts",
        postgres_url=pg_url_from_environment(),
        redis_url=redis_url_from_environment(),
        database=args.database,
        timeout=args.timeout,
    )
    stack = celery_stack(
        args.home,
        args.dags,
        services,
        workers=args.workers,
        concurrency=args.concurrency,
        task_instance_heartbeat_timeout=args.heartbeat_timeout,
        port=None if args.port == 0 else args.port,
        extra_env=extra_env,
        plugins_folder=args.plugins,
    )
    return services, stack


def _cmd_up(args: argparse.Namespace, extra_env: dict[str, str]) -> int:
    if args.distributed:  # the services bring their own MLflow server, on PostgreSQL
        return _cmd_up_distributed(args, extra_env)
    mlops_home = Path(args.mlops_home or extra_env.get("MLOPS_HOME") or _default_mlops_home()).expanduser().resolve()
    extra_env["MLOPS_HOME"] = str(mlops_home)
    store: TrackingStore | None = None
    mlflow_server: MlflowServer | None = None
    if not args.no_mlflow:
        try:
            store = tracking_store(extra_env)
        except ValueError as exc:  # SettingsError: the DAGs will report it too; Airflow still starts
            print(f"warning: no MLflow server: the settings do not load: {exc}", file=sys.stderr, flush=True)
    home = Path(args.home).expanduser().resolve()
    if store is not None and store.is_server:
        extra_env.setdefault("MLFLOW_UI_URL", store.tracking_uri)
    elif store is not None:
        mlflow_server = MlflowServer(
            store.tracking_uri,
            store.artifact_root,
            port=args.mlflow_port or None,
            log_path=home / "logs" / "mlflow-server.log",
        )
        extra_env.setdefault("MLFLOW_UI_URL", mlflow_server.url)
    stack = AirflowStack(
        home,
        args.dags,
        port=None if args.port == 0 else args.port,
        extra_env=extra_env,
        plugins_folder=args.plugins,
        parallelism=args.parallelism,
    )

    stop_requested = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        stop_requested.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    print(
        f"Starting Airflow in {stack.home} (DAGs: {stack.dags_folder}, MLOPS_HOME: {mlops_home}) ...",
        flush=True,
    )
    mlflow_warned = False
    try:
        try:
            if mlflow_server is not None:
                _launch_mlflow(mlflow_server, stack, mlops_home, args.timeout)
            stack.start(timeout=args.timeout)
            if mlflow_server is not None:
                mlflow_server.wait_until_healthy(timeout=args.timeout)
        except (StackError, MlflowServerError) as exc:
            hint = ""
            if isinstance(exc, MlflowPortInUseError):
                hint = " (--mlflow-port; make up MLFLOW_PORT=<port>, 0 = any free port)"
            print(f"error: {exc}{hint}", file=sys.stderr)
            return 1
        print(
            f"\nAirflow is up (started in {stack.startup_seconds:.1f}s)\n"
            f"  UI:       {stack.ui_url}\n"
            f"  username: {stack.username}\n"
            f"  password: {stack.password}\n"
            f"            (stored in {stack.passwords_file})\n"
            + (_mlflow_line(store, mlflow_server) if store is not None else "")
            + f"  logs:     {stack.log_dir}/<component>.log, task logs in the UI\n"
            f"  state:    {stack.home} and {mlops_home} (owner-only)\n"
            f"Press Ctrl-C to stop Airflow, the MLflow server and the model servers it started.",
            flush=True,
        )
        while not stop_requested.wait(1.0):
            stack.check()
            if mlflow_server is not None and not mlflow_warned:
                try:
                    mlflow_server.check()
                except MlflowServerError as exc:  # the tasks write to the store, not to the server
                    print(f"warning: {exc}\nAirflow keeps running; the MLflow links will not open.", file=sys.stderr)
                    mlflow_warned = True
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        print(
            f"Stopping (running tasks get up to {STOP_TIMEOUT:.0f}s; Ctrl-C again to kill them now) ...",
            flush=True,
        )
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            _stop_everything(stack, mlops_home, STOP_TIMEOUT, mlflow_server)
        except KeyboardInterrupt:
            _stop_everything(stack, mlops_home, 0, mlflow_server)
    return 0


def _launch_mlflow(server: MlflowServer, stack: AirflowStack, mlops_home: Path, timeout: float) -> None:
    """Launch the MLflow server so that it starts while Airflow does.

    MLflow creates a missing store's tables before it listens; a task that opened the store at the
    same moment would race it, so for a store that does not exist yet (or is not a file we can
    see), wait for the server before Airflow starts.
    """
    make_private_folder(stack.home)
    make_private_folder(stack.log_dir)
    make_private_folder(mlops_home)
    server.launch()
    sqlite = "sqlite:///"
    uri = server.backend_store_uri
    if not (uri.startswith(sqlite) and Path(uri[len(sqlite) :]).is_file()):
        server.wait_until_healthy(timeout=timeout)


def _cmd_up_distributed(args: argparse.Namespace, extra_env: dict[str, str]) -> int:
    from mlops_demo.airflow_stack.services import ServiceError

    mlops_home = Path(args.mlops_home or extra_env.get("MLOPS_HOME") or _default_mlops_home()).expanduser().resolve()
    extra_env["MLOPS_HOME"] = str(mlops_home)
    try:
        services, stack = _distributed_stack(args, extra_env, mlops_home)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    stop_requested = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        stop_requested.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    print(
        f"Starting Airflow in {stack.home} (DAGs: {stack.dags_folder}, MLOPS_HOME: {mlops_home}) ...",
        flush=True,
    )
    try:
        try:
            stack.start(timeout=args.timeout)
        except StackError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(
            f"\nAirflow is up (started in {stack.startup_seconds:.1f}s)\n"
            f"  UI:       {stack.ui_url}\n"
            f"  username: {stack.username}\n"
            f"  password: {stack.password}\n"
            f"            (stored in {stack.passwords_file})\n"
            f"  logs:     {stack.log_dir}/<component>.log, task logs in the UI\n"
            f"  state:    {stack.home} and {mlops_home} (owner-only)\n"
            + _distributed_lines(stack, services)
            + "Press Ctrl-C to stop Airflow and the model servers it started.",
            flush=True,
        )
        while not stop_requested.wait(1.0):
            stack.check()
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        print(
            f"Stopping (running tasks get up to {STOP_TIMEOUT:.0f}s; Ctrl-C again to kill them now) ...",
            flush=True,
        )
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            _stop_everything(stack, mlops_home, STOP_TIMEOUT)
        except KeyboardInterrupt:
            _stop_everything(stack, mlops_home, 0)
        finally:
            services.close()
            print("Stopped the MLflow server; emptied the Redis database (the PostgreSQL databases stay).")
    return 0


def _distributed_lines(stack: AirflowStack, services: Any) -> str:
    workers = ", ".join(f"{w} (pid {pid})" for w, pid in stack.worker_pids().items())
    slots = stack.celery.concurrency if stack.celery else 0
    return (
        f"  MLflow:   {services.mlflow.url} (backend store: PostgreSQL database {services.mlflow_db.name})\n"
        f"  executor: CeleryExecutor; workers {workers}, {slots} task slots each\n"
        f"  metadata: PostgreSQL database {services.airflow_db.name}; broker {services.redis.url}\n"
        f"  logs:     {stack.log_dir}/celery-worker-<n>.log\n"
        f"Scale: stop and run `make up-distributed WORKERS=<n>` (CONCURRENCY=<slots>); on another machine run\n"
        f"  `airflow celery worker` with this stack's settings (README: Distributed deployment (native)).\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit code."""
    parser = argparse.ArgumentParser(prog=PROG, description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start Airflow in the foreground until Ctrl-C")
    up.add_argument("--home", required=True, type=Path, help="AIRFLOW_HOME (created owner-only if missing)")
    up.add_argument("--dags", required=True, type=Path, help="DAG folder")
    up.add_argument("--plugins", type=Path, default=None, help="plugins folder (default <home>/plugins)")
    up.add_argument("--port", type=int, default=8080, help="api-server/UI port on 127.0.0.1 (0 = any free port)")
    up.add_argument("--parallelism", type=int, default=4, help="LocalExecutor worker processes")
    up.add_argument(
        "--distributed",
        action="store_true",
        help="CeleryExecutor on PostgreSQL ($MLOPS_PG_URL) and Redis ($MLOPS_REDIS_URL), with an MLflow server",
    )
    up.add_argument("--workers", type=int, default=2, help="--distributed: Celery workers to start")
    up.add_argument("--concurrency", type=int, default=2, help="--distributed: task slots per worker")
    up.add_argument(
        "--database",
        default="mlops_airflow",
        help="--distributed: PostgreSQL database of Airflow's metadata (MLflow's: <name>_mlflow); kept",
    )
    up.add_argument(
        "--heartbeat-timeout",
        type=int,
        default=None,
        help="--distributed: [scheduler] task_instance_heartbeat_timeout, seconds before a task of a dead "
        "worker is failed and retried (Airflow's default 300)",
    )
    up.add_argument("--timeout", type=float, default=180, help="seconds to wait for a healthy stack")
    up.add_argument(
        "--mlflow-port", type=int, default=5000, help="MLflow tracking server/UI port on 127.0.0.1 (0 = any free port)"
    )
    up.add_argument(
        "--no-mlflow",
        action="store_true",
        help="start no MLflow server (the tasks still log to the store of the settings)",
    )
    up.add_argument(
        "--mlops-home",
        type=Path,
        default=None,
        help="MLOPS_HOME of the tasks (default: $MLOPS_HOME, else <repo>/.mlops); its model servers stop with us",
    )
    up.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra non-secret environment for every component (repeatable); export secrets instead",
    )
    args = parser.parse_args(argv)
    try:
        extra_env = parse_env_assignments(args.env)
    except ValueError as exc:
        parser.error(str(exc))
    if args.command == "up":
        return _cmd_up(args, extra_env)
    parser.error(f"unknown command {args.command}")
    return 2
