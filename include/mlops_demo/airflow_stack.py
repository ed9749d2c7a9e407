"""Run the real Airflow 3 components on an isolated ``AIRFLOW_HOME`` and drive them over REST.

``AirflowStack`` starts ``airflow db migrate`` and then the long-running components (scheduler,
dag-processor, triggerer, api-server) as subprocesses of *this* interpreter, each in its own
session, with their output in ``<home>/logs/<component>.log``. ``AirflowClient`` talks to the
public REST API v2 of the api-server with a JWT from the simple auth manager.

    with AirflowStack(home, dags_folder) as stack:
        client = stack.client
        client.wait_for_dags(["my_dag"])
        run_id = client.trigger("my_dag", conf={"x": 1})
        assert client.wait_for_run("my_dag", run_id) == "success"

Command line (what ``make up`` runs)::

    python -m mlops_demo.airflow_stack up --home .airflow --dags dags [--port 8080]

Choices this module makes, and why (Airflow 3.3.2, read from the installed code):

* **LocalExecutor on SQLite is allowed.** Airflow 2's executor loader refused the combination
  ("cannot use SQLite with the LocalExecutor"); Airflow 3.3 has no such check (the config
  validators in ``airflow/configuration.py`` only check the SQLite *version*) because task
  processes no longer touch the metadata database: they talk to the api-server's Execution API
  (``[core] execution_api_server_url``). Only the scheduler, dag-processor, triggerer and
  api-server write to SQLite, and Airflow itself switches SQLite to WAL
  (``airflow/utils/orm_event_handlers.py``: ``PRAGMA journal_mode=WAL``), so readers never block
  the writer. As a defensive measure we raise the SQLite busy timeout from pysqlite's 5 s to 30 s
  (``[database] sql_alchemy_connect_args`` -> ``SQLITE_CONNECT_ARGS`` below); in a 40-run burst
  (parallelism 4) neither setting produced a single ``database is locked``.
* **The Execution API is warmed up in start().** The api-server builds the Execution API's
  versioned (Cadwyn) routes lazily, on the event loop, at its first request: ~15 s during which the
  whole api-server answers nothing and the first task's ``/run`` call times out and retries.
* **DAGs are not paused at creation** (``[core] dags_are_paused_at_creation = False``): asset- and
  time-scheduled DAGs of a fresh home run without anyone clicking "unpause". ``client.unpause``
  still exists for DAGs that set ``is_paused_upon_creation=True``.
* **Secrets are per home.** A JWT secret, the API ``secret_key`` and a Fernet key are generated once
  into ``<home>/airflow_stack.secrets.json`` (mode 0600) and passed to every component by
  environment variable; they are never printed. All components must share the JWT secret: the
  scheduler signs task-identity tokens that the api-server's Execution API verifies.
* **Credentials.** The simple auth manager user ``admin`` (role ADMIN) gets a random password,
  written by us, before Airflow starts, to ``<home>/simple_auth_manager_passwords.json.generated``
  (mode 0600). Airflow only generates and *prints* a password for users missing from that file
  (``SimpleAuthManager.init``), so the password never reaches a log; ``up`` prints it on purpose.
* **Isolation.** The child environment drops every ``AIRFLOW*`` variable inherited from the caller,
  writes a minimal ``airflow.cfg`` if the home has none (so Airflow does not dump a full default
  config, with our environment baked in, into it), and skips the scheduler's/triggerer's log
  servers (fixed ports 8793/8794 would collide between two stacks; the api-server reads task logs
  straight from ``<home>/logs`` on this machine).
* **Speed.** Processes are started with ``PYTHONPYCACHEPREFIX`` pointing to a user cache directory
  (outside the repository and the venv) and without ``PYTHONDONTWRITEBYTECODE``: importing Airflow
  from source without bytecode costs ~5 s of CPU per process (``airflow version``: 11 s -> 2 s).
  The dag-processor lists the DAG folder every 5 s, re-parses a file at most every 10 s, and a
  changed DAG may replace its serialized version after 5 s (defaults: 300 s, 30 s, 30 s).
* **Stopping.** SIGTERM makes the scheduler's LocalExecutor wait for running tasks, and a task
  process only runs ``on_kill()`` on SIGTERM (``airflow/sdk/execution_time/task_runner.py``), so
  :meth:`AirflowStack.stop` waits up to ``timeout`` seconds and then SIGKILLs whatever is left in
  the components' sessions (task processes move to their own process group, not session).
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, TypeVar

import requests

__all__ = [
    "DEFAULT_COMPONENTS",
    "AirflowApiError",
    "AirflowClient",
    "AirflowStack",
    "RunFailedError",
    "StackError",
    "main",
]

DEFAULT_COMPONENTS: tuple[str, ...] = ("scheduler", "dag-processor", "triggerer", "api-server")
KNOWN_COMPONENTS = frozenset(DEFAULT_COMPONENTS)
# component -> key of /api/v2/monitor/health
_HEALTH_KEYS = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}
USERNAME = "admin"
SECRETS_FILE = "airflow_stack.secrets.json"
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"

# Imported by every Airflow component through [database] sql_alchemy_connect_args (an import path).
# pysqlite's default busy timeout is 5 s; with four writer processes a longer wait is cheaper than a
# failed scheduler loop. Airflow adds check_same_thread=False itself (airflow/settings.py).
SQLITE_CONNECT_ARGS: dict[str, Any] = {"timeout": 30}

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the folder that holds mlops_demo/
_FINAL_RUN_STATES = frozenset({"success", "failed"})

# argv: <expected parent pid> <airflow args...>. PR_SET_PDEATHSIG (1) survives execve.
_DEATHSIG_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('parent exited before the component started')\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'airflow', *sys.argv[2:]])\n"
)
_T = TypeVar("_T")


class StackError(RuntimeError):
    """An Airflow component failed to start or died; the message carries the tail of its log."""


class AirflowApiError(RuntimeError):
    """The REST API answered with an unexpected status code."""

    def __init__(self, method: str, url: str, status_code: int, body: str):
        self.method = method
        self.url = url
        self.status_code = status_code
        self.body = body
        super().__init__(f"{method} {url} -> HTTP {status_code}: {body[:2000]}")


class RunFailedError(RuntimeError):
    """A DAG run ended in ``failed``; ``failed_tasks`` maps task id -> tail of its log."""

    def __init__(self, dag_id: str, run_id: str, state: str, failed_tasks: Mapping[str, str]):
        self.dag_id = dag_id
        self.run_id = run_id
        self.state = state
        self.failed_tasks = dict(failed_tasks)
        parts = [f"DAG run {dag_id}/{run_id} ended in state {state!r}; failed tasks: {sorted(failed_tasks)}"]
        for task_id, log_tail in failed_tasks.items():
            parts.append(f"--- log tail of {task_id} ---\n{log_tail}")
        super().__init__("\n".join(parts))


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def tail(path: Path, lines: int = 60) -> str:
    """Return the last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def _write_private(path: Path, text: str) -> None:
    """Create or replace ``path`` with mode 0600 (never briefly world-readable)."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _default_pycache_prefix() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    tag = sys.implementation.cache_tag or "python"
    return Path(base) / "mlops-airflow-stack" / f"pycache-{tag}"


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _jwt_expiry(token: str) -> float | None:
    """Return the ``exp`` claim of a JWT (unverified: we only use it to refresh early)."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        return float(json.loads(base64.urlsafe_b64decode(payload))["exp"])
    except Exception:
        return None


def render_log(content: Iterable[Any]) -> str:
    """Render the ``content`` of the v2 log endpoint (structured messages) as plain text lines."""
    lines: list[str] = []
    for msg in content:
        if isinstance(msg, str):
            lines.append(msg)
            continue
        if not isinstance(msg, dict):
            lines.append(str(msg))
            continue
        event = str(msg.get("event", ""))
        if event.startswith("::group::") or event == "::endgroup::":
            continue
        head = " ".join(str(x) for x in (msg.get("timestamp"), msg.get("level")) if x)
        lines.append(f"{head} {event}".strip() if head else event)
        for err in msg.get("error_detail") or []:
            if not isinstance(err, dict):
                lines.append(f"    {err}")
                continue
            for frame in err.get("frames") or []:
                lines.append(f"    File {frame.get('filename')}:{frame.get('lineno')} in {frame.get('name')}")
            lines.append(f"    {err.get('exc_type')}: {err.get('exc_value')}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the stack
# ---------------------------------------------------------------------------------------------


class AirflowStack:
    """The real Airflow 3 components on one isolated ``AIRFLOW_HOME`` (a context manager).

    :param home: the ``AIRFLOW_HOME``; created if missing. Holds ``airflow.db``, logs, secrets.
    :param dags_folder: the DAG folder every component uses.
    :param port: api-server port on 127.0.0.1; ``None`` picks a free one.
    :param extra_env: extra environment variables for every component (applied last, so they
        override the defaults, e.g. ``{"AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True"}``).
    :param components: which long-running components to start.
    :param parallelism: ``[core] parallelism`` = LocalExecutor worker processes.
    :param plugins_folder: ``[core] plugins_folder`` (default ``<home>/plugins``).
    :param bytecode_cache: write ``.pyc`` files to a user cache dir (see module docstring).
    :param die_with_parent: (Linux) components get SIGTERM if this process dies without calling
        :meth:`stop` (``PR_SET_PDEATHSIG``). The kernel ties this to the *thread* that started
        them, so call :meth:`start` from a thread that outlives the stack (normally the main one).
    """

    def __init__(
        self,
        home: Path | str,
        dags_folder: Path | str,
        *,
        port: int | None = None,
        extra_env: Mapping[str, str] | None = None,
        components: Sequence[str] = DEFAULT_COMPONENTS,
        parallelism: int = 4,
        plugins_folder: Path | str | None = None,
        bytecode_cache: bool = True,
        die_with_parent: bool = True,
    ):
        unknown = set(components) - KNOWN_COMPONENTS
        if unknown:
            raise ValueError(f"unknown components {sorted(unknown)}; known: {sorted(KNOWN_COMPONENTS)}")
        if parallelism < 1:
            raise ValueError("parallelism must be >= 1")
        self.home = Path(home).expanduser().resolve()
        self.dags_folder = Path(dags_folder).expanduser().resolve()
        self.plugins_folder = Path(plugins_folder).expanduser().resolve() if plugins_folder else self.home / "plugins"
        self.port = int(port) if port else free_port()
        self.extra_env = dict(extra_env or {})
        self.components = tuple(components)
        self.parallelism = parallelism
        self.bytecode_cache = bytecode_cache
        self.die_with_parent = die_with_parent
        self.log_dir = self.home / "logs"
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.username = USERNAME
        self.startup_seconds: float | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._log_files: dict[str, IO[bytes]] = {}
        self._client: AirflowClient | None = None
        self._lock = threading.RLock()
        self._atexit_registered = False
        self._warm_error: str | None = None

    # -- paths and configuration ---------------------------------------------------------------

    @property
    def ui_url(self) -> str:
        return self.base_url + "/"

    @property
    def db_path(self) -> Path:
        return self.home / "airflow.db"

    @property
    def passwords_file(self) -> Path:
        return self.home / PASSWORDS_FILE

    @property
    def secrets_file(self) -> Path:
        return self.home / SECRETS_FILE

    def log_path(self, component: str) -> Path:
        return self.log_dir / f"{component}.log"

    def _secrets(self) -> dict[str, str]:
        """Load (or create once, mode 0600) the per-home secrets."""
        path = self.secrets_file
        data: dict[str, str] = {}
        if path.exists():
            data = json.loads(path.read_text())
        wanted = {
            "jwt_secret": lambda: secrets.token_urlsafe(48),
            "api_secret_key": lambda: secrets.token_urlsafe(32),
            # a Fernet key is 32 url-safe base64-encoded bytes
            "fernet_key": lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        }
        missing = {k: make() for k, make in wanted.items() if not data.get(k)}
        if missing:
            data.update(missing)
            self.home.mkdir(parents=True, exist_ok=True)
            _write_private(path, json.dumps(data, indent=2) + "\n")
        return data

    @property
    def password(self) -> str:
        """The ``admin`` password (created on first use; read from the password file)."""
        path = self.passwords_file
        passwords: dict[str, str] = {}
        if path.exists():
            text = path.read_text().strip()
            passwords = json.loads(text) if text else {}
        if not passwords.get(self.username):
            passwords[self.username] = secrets.token_urlsafe(12)
            self.home.mkdir(parents=True, exist_ok=True)
            _write_private(path, json.dumps(passwords) + "\n")
        return passwords[self.username]

    def environment(self) -> dict[str, str]:
        """The Airflow environment of every component (contains secrets: do not print it)."""
        keys = self._secrets()
        env = {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW_CONFIG": str(self.home / "airflow.cfg"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.plugins_folder),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.username}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.db_path}",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "mlops_demo.airflow_stack.SQLITE_CONNECT_ARGS",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.ui_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": keys["api_secret_key"],
            "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.log_dir),
            # quick pickup of new/changed DAG files: list the folder every 5 s, re-parse a file at
            # most every 10 s, and let a changed DAG replace its serialized version after 5 s
            # instead of 30 s (airflow/dag_processing/collection.py, airflow/models/dagbag.py)
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "5",
            # the scheduler loop already runs back-to-back when busy and sleeps <= 1 s when idle
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "1",
        }
        env.update(self.extra_env)
        return env

    def _process_env(self) -> dict[str, str]:
        """The full environment of the child processes: the caller's minus ``AIRFLOW*`` + ours."""
        env = {k: v for k, v in os.environ.items() if not (k.startswith(("AIRFLOW", "_AIRFLOW")))}
        env["PYTHONUNBUFFERED"] = "1"
        if self.bytecode_cache:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env.setdefault("PYTHONPYCACHEPREFIX", str(_default_pycache_prefix()))
        env.update(self.environment())
        # Components import SQLITE_CONNECT_ARGS from this module: make its package importable even
        # when the project is not installed in editable mode (appended: never shadows anything).
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if str(_PACKAGE_ROOT) not in paths:
            env["PYTHONPATH"] = os.pathsep.join([*paths, str(_PACKAGE_ROOT)])
        return env

    def _command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "airflow", *args]

    def _component_command(self, component: str) -> list[str]:
        if component == "api-server":
            args: tuple[str, ...] = (
                "api-server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            )
        elif component in ("scheduler", "triggerer"):
            args = (component, "--skip-serve-logs")
        else:
            args = (component,)
        if self.die_with_parent and sys.platform.startswith("linux"):
            # exec airflow after prctl(PR_SET_PDEATHSIG, SIGTERM): if this Python process dies
            # without running stop() (SIGKILL, os._exit), each component still gets SIGTERM.
            return [sys.executable, "-c", _DEATHSIG_LAUNCHER, str(os.getpid()), *args]
        return self._command(*args)

    def _prepare_home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.plugins_folder.mkdir(parents=True, exist_ok=True)
        if not self.dags_folder.is_dir():
            raise StackError(f"DAG folder {self.dags_folder} does not exist")
        cfg = self.home / "airflow.cfg"
        if not cfg.exists():
            _write_private(
                cfg,
                "# Written by mlops_demo.airflow_stack. Its settings come from AIRFLOW__* environment\n"
                "# variables (AirflowStack.environment()), which take precedence over this file.\n"
                "[core]\n",
            )
        self._secrets()
        _ = self.password  # make sure the password file exists before the api-server starts
        if self.bytecode_cache:
            with contextlib.suppress(OSError):
                _default_pycache_prefix().mkdir(parents=True, exist_ok=True)

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> AirflowStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return bool(self._procs)

    def start(self, timeout: float = 180) -> AirflowStack:
        """Migrate the database, start the components and wait until all report healthy."""
        with self._lock:
            if self._procs:
                raise StackError("stack already started")
            t0 = time.monotonic()
            deadline = t0 + timeout
            self._prepare_home()
            if "api-server" in self.components and not _port_is_free(self.port):
                raise StackError(f"port 127.0.0.1:{self.port} is already in use")
            if not self._atexit_registered:
                atexit.register(self.stop)
                self._atexit_registered = True
            try:
                self.migrate(timeout=max(1.0, deadline - time.monotonic()))
                # job heartbeats older than this belong to an earlier run of this home
                started_at = datetime.now(UTC) - timedelta(seconds=2)
                env = self._process_env()
                for component in self.components:
                    self._spawn(component, env)
                self._wait_ready(started_at, deadline)
            except BaseException:
                self.stop()
                raise
            self.startup_seconds = time.monotonic() - t0
            return self

    def migrate(self, timeout: float = 180) -> None:
        """Run ``airflow db migrate`` (log: ``<home>/logs/db-migrate.log``)."""
        self._prepare_home()
        log_path = self.log_path("db-migrate")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                self._command("db", "migrate"),
                env=self._process_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.home,
            )
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_session({proc.pid}, grace=5)
                proc.wait()
                raise StackError(
                    f"`airflow db migrate` did not finish in {timeout:.0f}s; log {log_path}:\n{tail(log_path)}"
                ) from None
        if rc != 0:
            raise StackError(f"`airflow db migrate` failed (exit {rc}); log {log_path}:\n{tail(log_path)}")

    def _spawn(self, component: str, env: Mapping[str, str]) -> None:
        log_path = self.log_path(component)
        log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        log.write(f"\n===== {datetime.now(UTC).isoformat()} starting {component} =====\n".encode())
        log.flush()
        self._log_files[component] = log
        self._procs[component] = subprocess.Popen(
            self._component_command(component),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own session + process group: stop() can find every descendant
            cwd=self.home,
        )

    def check(self) -> None:
        """Raise :class:`StackError` (with the log tail) if a started component has exited."""
        for component, proc in list(self._procs.items()):
            rc = proc.poll()
            if rc is not None:
                log_path = self.log_path(component)
                raise StackError(
                    f"Airflow {component} (pid {proc.pid}) exited with code {rc}; "
                    f"last lines of {log_path}:\n{tail(log_path)}"
                )

    def health(self, timeout: float = 5) -> dict[str, Any]:
        """``GET /api/v2/monitor/health`` (no authentication needed)."""
        resp = requests.get(f"{self.base_url}/api/v2/monitor/health", timeout=timeout)
        resp.raise_for_status()
        return resp.json()

    def _unhealthy(self, health: Mapping[str, Any], started_at: datetime) -> list[str]:
        problems = []
        if (health.get("metadatabase") or {}).get("status") != "healthy":
            problems.append("metadatabase")
        for component in self.components:
            key = _HEALTH_KEYS.get(component)
            if key is None:
                continue
            info = health.get(key) or {}
            beat = _parse_time(info.get(f"latest_{key}_heartbeat"))
            if info.get("status") != "healthy" or beat is None or beat < started_at:
                problems.append(component)
        return problems

    def _unhealthy_jobs(self, started_at: datetime) -> list[str]:
        """Components without a ``running`` job row started after ``started_at`` (read-only SQLite)."""
        import sqlite3

        job_types = {
            "scheduler": "SchedulerJob",
            "dag-processor": "DagProcessorJob",
            "triggerer": "TriggererJob",
        }
        wanted = {c: job_types[c] for c in self.components if c in job_types}
        since = started_at.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
        try:
            conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
            try:
                rows = conn.execute(
                    "SELECT DISTINCT job_type FROM job WHERE state = 'running' AND start_date >= ?", (since,)
                ).fetchall()
            finally:
                conn.close()
        except sqlite3.Error:
            return sorted(wanted)
        running = {r[0] for r in rows}
        return sorted(c for c, job_type in wanted.items() if job_type not in running)

    def _wait_ready(self, started_at: datetime, deadline: float) -> None:
        if "api-server" not in self.components:
            # No health endpoint without the api-server: read the components' job rows instead.
            while True:
                self.check()
                problems = self._unhealthy_jobs(started_at)
                if not problems:
                    return
                if time.monotonic() >= deadline:
                    raise StackError(f"Airflow components {problems} did not start in time")
                time.sleep(0.5)
        warm = threading.Thread(target=self._warm_execution_api, args=(deadline,), daemon=True)
        warm.start()
        last: Any = "api-server not answering yet"
        while True:
            self.check()
            try:
                health = self.health(timeout=3)
            except requests.RequestException as exc:
                last = f"api-server not answering: {exc.__class__.__name__}"
            else:
                problems = self._unhealthy(health, started_at)
                if not problems and not warm.is_alive():
                    if self._warm_error:
                        raise StackError(f"Execution API warm-up failed: {self._warm_error}")
                    return
                last = f"not healthy yet: {problems or ['execution-api warm-up']}; health={health}"
            if time.monotonic() >= deadline:
                tails = "\n".join(f"--- {c}: {self.log_path(c)}\n{tail(self.log_path(c), 25)}" for c in self.components)
                raise StackError(f"Airflow did not become healthy in time ({last})\n{tails}")
            time.sleep(0.5)

    def _warm_execution_api(self, deadline: float) -> None:
        """Make the first Execution API request now, during start(), rather than in the first task.

        The api-server mounts the Execution API as a Cadwyn app, which builds its versioned routers
        lazily on the first request (``cadwyn/applications.py`` ``_cadwyn_initialize``), on the event
        loop: ~15 s of CPU on a 2-core machine during which the whole api-server answers nothing and
        the first task's ``PATCH /execution/task-instances/{id}/run`` times out and retries.
        """
        self._warm_error = None
        url = f"{self.base_url}/execution/health"
        while time.monotonic() < deadline and self._procs:
            try:
                requests.get(url, timeout=max(1.0, deadline - time.monotonic())).raise_for_status()
                return
            except requests.ConnectionError:
                time.sleep(0.5)
            except requests.RequestException as exc:
                self._warm_error = f"{exc.__class__.__name__}: {exc}"
                return
        self._warm_error = "timed out"

    def pids(self) -> dict[str, int]:
        """Pid of each started component (the leader of its own session)."""
        return {c: p.pid for c, p in self._procs.items()}

    def all_pids(self) -> set[int]:
        """Every live process of the stack: components, their descendants, anything in their sessions."""
        return _stack_processes({p.pid for p in self._procs.values()})

    def stop(self, timeout: float = 30) -> None:
        """Stop every component and every process they started. Idempotent; also runs at exit.

        SIGTERM goes to each component's process group (the api-server last, so tasks that are
        shutting down can still report to the Execution API); after ``timeout`` seconds everything
        still alive in the components' sessions -- including task processes, which move to their
        own process group but stay in the session -- gets SIGKILL.
        """
        with self._lock:
            procs = dict(self._procs)
            if procs:
                leaders = {p.pid for p in procs.values()}
                known = _stack_processes(leaders)
                deadline = time.monotonic() + timeout
                ordered = sorted(procs.items(), key=lambda item: item[0] == "api-server")
                for phase in (False, True):  # non-api components first, then the api-server
                    batch = [(c, p) for c, p in ordered if (c == "api-server") == phase]
                    for _, proc in batch:
                        _signal_group(proc.pid, signal.SIGTERM)
                    for _, proc in batch:
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                # Whatever is left (components that ignored SIGTERM, orphaned task processes):
                _kill_session(leaders, grace=max(0.0, min(5.0, deadline - time.monotonic())), extra=known)
                for proc in procs.values():
                    if proc.poll() is None:
                        proc.kill()
                    proc.wait()
                self._procs.clear()
            for log in self._log_files.values():
                with contextlib.suppress(OSError):
                    log.close()
            self._log_files.clear()
            if self._atexit_registered:
                atexit.unregister(self.stop)
                self._atexit_registered = False

    # -- access ---------------------------------------------------------------------------------

    @property
    def client(self) -> AirflowClient:
        if self._client is None:
            self._client = AirflowClient(self.base_url, self.username, self.password)
        return self._client

    def run_cli(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``airflow <args>`` against this home (e.g. ``run_cli("dags", "list")``)."""
        return subprocess.run(
            self._command(*args),
            env=self._process_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            cwd=self.home,
        )


# -- process bookkeeping --------------------------------------------------------------------------


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _stack_processes(leaders: set[int]) -> set[int]:
    """Live processes in the sessions led by ``leaders``, plus their descendants."""
    import psutil

    found: set[int] = set()
    me = os.getpid()
    for proc in psutil.process_iter(["pid"]):
        pid = proc.info["pid"]
        if pid == me:
            continue
        try:
            if os.getsid(pid) in leaders and proc.status() != psutil.STATUS_ZOMBIE:
                found.add(pid)
        except (OSError, psutil.Error):
            continue
    for leader in leaders:
        try:
            for child in psutil.Process(leader).children(recursive=True):
                if child.pid != me and _alive(child.pid):
                    found.add(child.pid)
        except psutil.Error:
            continue
        if _alive(leader):
            found.add(leader)
    return found


def _kill_session(leaders: set[int], grace: float, extra: Iterable[int] = ()) -> None:
    """SIGTERM, then after ``grace`` seconds SIGKILL, every live process of the given sessions.

    The SIGKILLs go to the descendants first: a component blocked waiting for its children (the
    scheduler's LocalExecutor joins its workers) then gets a moment to reap them and exit by itself,
    instead of leaving them as zombies for an init process that may not reap (as in some VMs).
    """
    targets = _stack_processes(leaders) | {p for p in extra if _alive(p)}
    if not targets:
        return
    _send(targets, signal.SIGTERM)
    end = time.monotonic() + grace
    while time.monotonic() < end:
        targets = {p for p in targets if _alive(p)}
        if not targets:
            return
        time.sleep(0.1)
    targets = {p for p in targets | _stack_processes(leaders) if _alive(p)}
    _send(targets - leaders, signal.SIGKILL)
    end = time.monotonic() + 3
    while time.monotonic() < end and any(_alive(p) for p in leaders):
        time.sleep(0.1)
    for _ in range(50):
        targets = {p for p in targets | _stack_processes(leaders) if _alive(p)}
        if not targets:
            return
        _send(targets, signal.SIGKILL)
        time.sleep(0.1)


def _send(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


# ---------------------------------------------------------------------------------------------
# the REST client
# ---------------------------------------------------------------------------------------------


class AirflowClient:
    """A small client for Airflow's public REST API v2 (simple auth manager JWT login).

    ``POST /auth/token`` with ``{"username", "password"}`` returns ``{"access_token"}`` (status 201;
    ``airflow/api_fastapi/auth/managers/simple/routes/login.py``). The token is refreshed shortly
    before its ``exp`` (``[api_auth] jwt_expiration_time``, default 24 h) and on any 401.
    """

    def __init__(self, base_url: str, username: str, password: str, *, timeout: float = 45):
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout = timeout
        self._session = requests.Session()
        self._token: str | None = None
        self._token_exp: float | None = None
        self._token_margin = 0.0
        self.logins = 0  # how many times a token was obtained (observability for tests)

    # -- plumbing -------------------------------------------------------------------------------

    def _login(self) -> None:
        resp = self._session.post(
            f"{self.base_url}/auth/token",
            json={"username": self.username, "password": self.password},
            timeout=self.timeout,
        )
        if resp.status_code not in (200, 201):
            raise AirflowApiError("POST", resp.url, resp.status_code, resp.text)
        self.logins += 1
        self._token = resp.json()["access_token"]
        self._token_exp = _jwt_expiry(self._token)
        # refresh a little before expiry: 60 s, or a tenth of the lifetime of short-lived tokens
        self._token_margin = min(60.0, max(0.0, ((self._token_exp or 0) - time.time()) / 10))

    def _auth_header(self) -> dict[str, str]:
        if self._token is None or (self._token_exp is not None and time.time() > self._token_exp - self._token_margin):
            self._login()
        return {"Authorization": f"Bearer {self._token}"}

    def _send(self, method: str, url: str, params: Any, json_body: Any) -> requests.Response:
        return self._session.request(
            method, url, params=params, json=json_body, headers=self._auth_header(), timeout=self.timeout
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        json_body: Any = None,
        ok: Sequence[int] = (200,),
    ) -> Any:
        """Call ``/api/v2<path>`` and return the decoded JSON (or text)."""
        url = f"{self.base_url}/api/v2{path}"
        # GET and PATCH (pause, clear, approve) are safe to repeat. On SQLite a write can wait out
        # the busy timeout behind another component's transaction and fail with a 500 or a read
        # timeout: repeating it then is the cure.
        idempotent = method.upper() in ("GET", "PATCH")
        attempts = 4 if idempotent else 1
        for attempt in range(attempts):
            try:
                resp = self._send(method, url, params, json_body)
                if resp.status_code == 401:  # expired or rotated: log in again once
                    self._token = None
                    resp = self._send(method, url, params, json_body)
            except (requests.ConnectionError, requests.Timeout):
                if attempt + 1 >= attempts:
                    raise
                time.sleep(0.5 * (attempt + 1))
                continue
            if resp.status_code >= 500 and attempt + 1 < attempts:
                time.sleep(0.5 * (attempt + 1))
                continue
            if resp.status_code not in ok:
                raise AirflowApiError(method.upper(), resp.url, resp.status_code, resp.text)
            if not resp.content:
                return None
            try:
                return resp.json()
            except ValueError:
                return resp.text
        raise AssertionError("unreachable")  # pragma: no cover

    def _paged(self, path: str, key: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self.request("GET", path, params={**(params or {}), "limit": 100, "offset": offset})
            batch = page.get(key) or []
            items.extend(batch)
            offset += len(batch)
            if not batch or offset >= int(page.get("total_entries", 0)):
                return items

    @staticmethod
    def wait_until(
        predicate: Callable[[], _T], timeout: float = 60, interval: float = 1.0, message: str = "condition"
    ) -> _T:
        """Call ``predicate`` until it returns something truthy; return it, or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {message}")
            time.sleep(interval)

    # -- DAGs -----------------------------------------------------------------------------------

    def version(self) -> dict[str, Any]:
        return self.request("GET", "/version")

    def dags(self) -> list[dict[str, Any]]:
        return self._paged("/dags", "dags")

    def dag(self, dag_id: str) -> dict[str, Any]:
        return self.request("GET", f"/dags/{dag_id}")

    def import_errors(self) -> list[dict[str, Any]]:
        return self._paged("/importErrors", "import_errors")

    def wait_for_dags(self, dag_ids: Iterable[str], timeout: float = 120) -> dict[str, dict[str, Any]]:
        """Wait until the dag-processor has parsed (serialized) every DAG in ``dag_ids``."""
        wanted = list(dag_ids)
        found: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while True:
            for dag_id in wanted:
                if dag_id in found:
                    continue
                try:
                    found[dag_id] = self.dag(dag_id)
                except AirflowApiError as exc:
                    if exc.status_code != 404:
                        raise
            if len(found) == len(wanted):
                return found
            if time.monotonic() >= deadline:
                missing = [d for d in wanted if d not in found]
                errors = "\n".join(
                    f"--- {e.get('filename')}:\n{str(e.get('stack_trace', ''))[-1500:]}" for e in self.import_errors()
                )
                raise TimeoutError(
                    f"DAGs not parsed after {timeout}s: {missing}"
                    + (f"\nimport errors:\n{errors}" if errors else " (no import errors reported)")
                )
            time.sleep(1)

    def set_paused(self, dag_id: str, paused: bool) -> dict[str, Any]:
        return self.request("PATCH", f"/dags/{dag_id}", json_body={"is_paused": paused})

    def unpause(self, dag_id: str) -> dict[str, Any]:
        return self.set_paused(dag_id, False)

    def pause(self, dag_id: str) -> dict[str, Any]:
        return self.set_paused(dag_id, True)

    # -- runs -----------------------------------------------------------------------------------

    def trigger(
        self,
        dag_id: str,
        conf: Mapping[str, Any] | None = None,
        logical_date: datetime | str | None = None,
        *,
        run_id: str | None = None,
        note: str | None = None,
    ) -> str:
        """Trigger a manual run and return its run id (``logical_date`` may be None in Airflow 3)."""
        if isinstance(logical_date, datetime):
            if logical_date.tzinfo is None:
                logical_date = logical_date.replace(tzinfo=UTC)
            logical_date = logical_date.isoformat()
        body: dict[str, Any] = {"logical_date": logical_date, "conf": dict(conf or {})}
        if run_id:
            body["dag_run_id"] = run_id
        if note:
            body["note"] = note
        return self.request("POST", f"/dags/{dag_id}/dagRuns", json_body=body)["dag_run_id"]

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def runs(self, dag_id: str, **filters: Any) -> list[dict[str, Any]]:
        """All runs of a DAG, oldest first.

        ``filters`` become query parameters, e.g. ``state=["success"]``, ``run_type=["asset_triggered"]``.
        """
        return self._paged(f"/dags/{dag_id}/dagRuns", "dag_runs", {"order_by": "id", **filters})

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        timeout: float = 120,
        *,
        interval: float = 1.0,
        raise_on_failure: bool = True,
    ) -> str:
        """Wait for a run to finish; return its state. A failed run raises :class:`RunFailedError`."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.run(dag_id, run_id)["state"]
            if state in _FINAL_RUN_STATES:
                break
            if time.monotonic() >= deadline:
                tis = {t["task_id"]: t.get("state") for t in self.task_instances(dag_id, run_id)}
                raise TimeoutError(f"DAG run {dag_id}/{run_id} still {state!r} after {timeout}s; task states: {tis}")
            time.sleep(interval)
        if state == "failed" and raise_on_failure:
            raise RunFailedError(dag_id, run_id, state, self._failed_task_logs(dag_id, run_id))
        return state

    def _failed_task_logs(self, dag_id: str, run_id: str, lines: int = 40) -> dict[str, str]:
        """Failed / upstream-failed tasks of a run -> the tail of their last try's log."""
        failed: dict[str, str] = {}
        for ti in self.task_instances(dag_id, run_id):
            state = ti.get("state")
            if state not in ("failed", "upstream_failed"):
                continue
            map_index = ti.get("map_index", -1)
            key = ti["task_id"] if map_index < 0 else f"{ti['task_id']}[{map_index}]"
            log = f"(state {state})"
            if state == "failed" and ti.get("try_number"):
                try:
                    text = self.task_log(dag_id, run_id, ti["task_id"], ti["try_number"], map_index=map_index)
                    log = "\n".join(text.splitlines()[-lines:])
                except AirflowApiError as exc:  # the log may be gone; keep the failure visible
                    log = f"(log not available: {exc})"
            failed[key] = log
        return failed

    # -- task instances -------------------------------------------------------------------------

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self._paged(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", "task_instances")

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        return self.request("GET", path if map_index < 0 else f"{path}/{map_index}")

    def clear_task(
        self,
        dag_id: str,
        run_id: str,
        task_ids: str | Iterable[str],
        *,
        include_downstream: bool = False,
        reset_dag_run: bool = True,
    ) -> list[dict[str, Any]]:
        """Clear tasks of a run so the scheduler runs them again; return the cleared task instances."""
        ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
        body = {
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": ids,
            "only_failed": False,
            "only_running": False,
            "include_downstream": include_downstream,
            "reset_dag_runs": reset_dag_run,
        }
        return self.request("POST", f"/dags/{dag_id}/clearTaskInstances", json_body=body)["task_instances"]

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int | None = None, *, map_index: int = -1
    ) -> str:
        """The full log of one try as text (``try_number`` defaults to the latest try)."""
        if try_number is None:
            try_number = int(self.task_instance(dag_id, run_id, task_id, map_index)["try_number"])
        data = self.request(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true", "map_index": map_index},
        )
        if isinstance(data, dict):
            return render_log(data.get("content") or [])
        return str(data)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", *, map_index: int = -1) -> Any:
        """The value of one XCom (as stored: JSON values come back as JSON)."""
        data = self.request(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"map_index": map_index},
        )
        value = data.get("value")
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return json.loads(value)
        return value

    # -- assets ---------------------------------------------------------------------------------

    def assets(self) -> list[dict[str, Any]]:
        return self._paged("/assets", "assets")

    def asset_events(
        self,
        asset_name_or_uri: str | None = None,
        *,
        source_dag_id: str | None = None,
        source_run_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Asset events (oldest first), each with ``extra``, ``name``, ``uri``, ``created_dagruns``."""
        params: dict[str, Any] = {"order_by": "timestamp"}
        if source_dag_id:
            params["source_dag_id"] = source_dag_id
        if source_run_id:
            params["source_run_id"] = source_run_id
        events = self._paged("/assets/events", "asset_events", params)
        if asset_name_or_uri is not None:
            events = [e for e in events if asset_name_or_uri in (e.get("name"), e.get("uri"))]
        return events

    # -- human in the loop ----------------------------------------------------------------------

    def pending_approvals(self, dag_id: str | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
        """HITL requests nobody has answered yet (``GET .../hitlDetails?response_received=false``)."""
        path = f"/dags/{dag_id or '~'}/dagRuns/{run_id or '~'}/hitlDetails"
        return self._paged(path, "hitl_details", {"response_received": "false"})

    def hitl_detail(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails")

    def respond_approval(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        approve: bool | str | Sequence[str],
        *,
        params_input: Mapping[str, Any] | None = None,
        map_index: int = -1,
    ) -> dict[str, Any]:
        """Answer a HITL request: ``True``/``False`` = "Approve"/"Reject" (ApprovalOperator), or the
        chosen option(s) of any HITL operator."""
        if isinstance(approve, bool):
            chosen = ["Approve" if approve else "Reject"]
        elif isinstance(approve, str):
            chosen = [approve]
        else:
            chosen = list(approve)
        return self.request(
            "PATCH",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails",
            json_body={"chosen_options": chosen, "params_input": dict(params_input or {})},
        )


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def _parse_env(pairs: Sequence[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env expects KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def _cmd_up(args: argparse.Namespace) -> int:
    port = None if args.port == 0 else args.port
    stack = AirflowStack(
        args.home,
        args.dags,
        port=port,
        extra_env=_parse_env(args.env),
        plugins_folder=args.plugins,
        parallelism=args.parallelism,
    )

    stop_requested = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        stop_requested.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    print(f"Starting Airflow in {stack.home} (DAGs: {stack.dags_folder}, logs: {stack.log_dir}) ...", flush=True)
    try:
        stack.start(timeout=args.timeout)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        print(
            f"\nAirflow is up (started in {stack.startup_seconds:.1f}s)\n"
            f"  UI:       {stack.ui_url}\n"
            f"  username: {stack.username}\n"
            f"  password: {stack.password}\n"
            f"            (from {stack.passwords_file})\n"
            f"  logs:     {stack.log_dir}/<component>.log\n"
            f"Press Ctrl-C to stop.",
            flush=True,
        )
        while not stop_requested.wait(1.0):
            stack.check()
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        print("Stopping Airflow (running tasks get up to 30s; Ctrl-C again to kill them now) ...", flush=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            stack.stop(timeout=30)
        except KeyboardInterrupt:
            stack.stop(timeout=0)
        print("Stopped.", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlops_demo.airflow_stack", description=(__doc__ or "").splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start Airflow in the foreground until Ctrl-C")
    up.add_argument("--home", required=True, type=Path, help="AIRFLOW_HOME (created if missing)")
    up.add_argument("--dags", required=True, type=Path, help="DAG folder")
    up.add_argument("--plugins", type=Path, default=None, help="plugins folder (default <home>/plugins)")
    up.add_argument("--port", type=int, default=8080, help="api-server/UI port on 127.0.0.1 (0 = any free port)")
    up.add_argument("--parallelism", type=int, default=4, help="LocalExecutor worker processes")
    up.add_argument("--timeout", type=float, default=180, help="seconds to wait for a healthy stack")
    up.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for every component (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.command == "up":
        return _cmd_up(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
