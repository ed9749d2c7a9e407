"""The real Airflow 3 components on one isolated ``AIRFLOW_HOME``: start, health, stop.

:class:`AirflowStack` runs ``airflow db migrate`` and then the long-running components (scheduler,
dag-processor, triggerer, api-server) as subprocesses of *this* interpreter, each the leader of its
own session, with their output in ``<home>/logs/<component>.log``.

    with AirflowStack(home, dags_folder) as stack:
        client = stack.client
        client.wait_for_dags(["my_dag"])
        run_id = client.trigger("my_dag", conf={"x": 1})
        assert client.wait_for_run("my_dag", run_id) == "success"

Choices made here, and why (Airflow 3.3.2, read from the installed code):

* **The CeleryExecutor** (``celery=CeleryOptions(...)``, with ``sql_alchemy_conn`` on PostgreSQL):
  the Celery workers are components too (``celery-worker-<n>``), each its own session and log;
  :meth:`AirflowStack.kill_worker` kills one as its machine dying would, :meth:`start_worker` starts
  it again. ``distributed.py`` gets the databases, the Redis database and the MLflow server.
* **LocalExecutor on SQLite is allowed.** Airflow 3.3 has no "cannot use SQLite with the
  LocalExecutor" check because task processes no longer touch the metadata database: they talk to
  the api-server's Execution API (``[core] execution_api_server_url``). Only the scheduler,
  dag-processor, triggerer and api-server write to SQLite, which Airflow switches to WAL
  (``airflow/utils/orm_event_handlers.py``); the busy timeout is raised from 5 s to 30 s
  (``component_env.SQLITE_CONNECT_ARGS``).
* **The Execution API is warmed up in start().** The api-server builds the Execution API's
  versioned (Cadwyn) routes lazily, on the event loop, at its first request: seconds during which
  the whole api-server answers nothing and the first task's ``/run`` call times out and retries.
* **DAGs are not paused at creation** (``[core] dags_are_paused_at_creation = False``): asset- and
  time-scheduled DAGs of a fresh home run without anyone clicking "unpause".
* **Private state.** The home, its logs and the ``MLOPS_HOME`` the components are given are
  owner-only folders (0700), and every component starts with umask 077, so whatever Airflow and the
  tasks create (the SQLite database, task logs, MLflow's database and artifacts, the feature store,
  training sets) is owner-only too.
* **Environment and secrets**: see ``component_env`` (what passes from the caller, per-start JWT
  secret) and ``stack_home`` (the stored Fernet key, the admin password).
* **Credentials.** The simple auth manager user ``admin`` (role ADMIN) gets a random password,
  written by us before Airflow starts; Airflow only generates and *prints* a password for users
  missing from that file (``SimpleAuthManager.init``), so the password never reaches a log.
* **Speed.** Bytecode goes to a user cache folder (``component_env.default_pycache_prefix``).
* **Stopping.** SIGTERM makes the scheduler's LocalExecutor wait for running tasks, and a task
  process only runs ``on_kill()`` on SIGTERM (``airflow/sdk/execution_time/task_runner.py``), so
  :meth:`AirflowStack.stop` waits up to ``timeout`` seconds and then SIGKILLs whatever is left in
  the components' sessions (task processes move to their own process group, not session).
  Processes a task started in a session of their own (a model server) are not the stack's: the
  code that started them stops them (``up`` stops the model servers of its ``MLOPS_HOME``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import requests

from mlops_core.ports import free_port, port_is_free
from mlops_demo.airflow_stack.component_env import (
    CELERY_WORKER_NAME_VARIABLE,
    StackSettings,
    StartSecrets,
    airflow_settings,
    component_environment,
    default_pycache_prefix,
)
from mlops_demo.airflow_stack.process_sessions import (
    is_running,
    kill_sessions,
    send_signal,
    session_processes,
    signal_group,
)
from mlops_demo.airflow_stack.rest_client import AirflowClient
from mlops_demo.airflow_stack.stack_home import PRIVATE_FILE_MODE, StackHome, make_private_folder

DEFAULT_COMPONENTS: tuple[str, ...] = ("scheduler", "dag-processor", "triggerer", "api-server")
KNOWN_COMPONENTS = frozenset(DEFAULT_COMPONENTS)
USERNAME = "admin"
COMPONENT_UMASK = 0o077
# component -> key of /api/v2/monitor/health
_HEALTH_KEYS = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}
_HOST = "127.0.0.1"

# argv: <expected parent pid> <airflow args...>. PR_SET_PDEATHSIG (1) survives execve.
_DEATHSIG_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('parent exited before the component started')\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'airflow', *sys.argv[2:]])\n"
)


CELERY_WORKER_PREFIX = "celery-worker-"


@dataclass(frozen=True)
class CeleryOptions:
    """A CeleryExecutor stack: the broker and result backend, and the workers this stack starts.

    Each worker is a component (``celery-worker-<n>``, log ``<home>/logs/celery-worker-<n>.log``)
    running ``airflow celery worker`` with ``concurrency`` task slots on ``queue``, under its own
    Celery host name ``celery-worker-<n>@<machine>``; the task instances it runs record
    ``celery-worker-<n>`` as their ``hostname`` (``component_env.component_hostname``). Workers serve
    no logs of their own (``--skip-serve-logs``: two on one machine would want the same port); the
    api-server reads task logs from the shared log folder.
    """

    broker_url: str
    result_backend: str
    workers: int = 2
    concurrency: int = 2
    queue: str = "default"

    def __post_init__(self) -> None:
        if self.workers < 0 or self.concurrency < 1:
            raise ValueError("workers must be >= 0 and concurrency >= 1")

    def worker_names(self) -> tuple[str, ...]:
        return tuple(f"{CELERY_WORKER_PREFIX}{n}" for n in range(1, self.workers + 1))


class StackError(RuntimeError):
    """An Airflow component failed to start or died; the message carries the tail of its log."""


@dataclass(frozen=True)
class StopSummary:
    """What :meth:`AirflowStack.stop` stopped."""

    components: tuple[str, ...]
    processes: int  # every process of the components' sessions (workers, tasks, log servers, ...)
    killed: int  # of which had to be SIGKILLed after the timeout


def log_tail(path: Path, lines: int = 60) -> str:
    """The last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _open_private_log(path: Path) -> IO[bytes]:
    """Open ``path`` for appending, created (or tightened) to mode 0600 whatever our umask is."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)
    return os.fdopen(fd, "ab")


class AirflowStack:
    """The real Airflow 3 components on one isolated ``AIRFLOW_HOME`` (a context manager).

    :param home: the ``AIRFLOW_HOME``; created (owner-only) if missing. Holds ``airflow.db``, logs.
    :param dags_folder: the DAG folder every component uses.
    :param port: api-server port on 127.0.0.1; ``None`` picks a free one.
    :param extra_env: extra environment variables for every component (applied last, so they
        override the defaults, e.g. ``{"AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True"}``).
        An ``MLOPS_HOME`` here (or in our environment) is created owner-only too.
    :param components: which long-running components to start.
    :param parallelism: ``[core] parallelism`` = LocalExecutor worker processes.
    :param plugins_folder: ``[core] plugins_folder`` (default ``<home>/plugins``).
    :param bytecode_cache: write ``.pyc`` files to a user cache dir (see ``component_env``).
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
        sql_alchemy_conn: str | None = None,
        celery: CeleryOptions | None = None,
        task_instance_heartbeat_timeout: int | None = None,
    ):
        unknown = set(components) - KNOWN_COMPONENTS
        if unknown:
            raise ValueError(f"unknown components {sorted(unknown)}; known: {sorted(KNOWN_COMPONENTS)}")
        if parallelism < 1:
            raise ValueError("parallelism must be >= 1")
        if celery is not None and (sql_alchemy_conn is None or "api-server" not in components):
            raise ValueError("a Celery stack needs sql_alchemy_conn (PostgreSQL) and the api-server")
        self.username = USERNAME
        self.files = StackHome(home, self.username)
        self.home = self.files.path
        self.dags_folder = Path(dags_folder).expanduser().resolve()
        self.plugins_folder = Path(plugins_folder).expanduser().resolve() if plugins_folder else self.home / "plugins"
        self.port = int(port) if port else free_port()
        self.worker_log_port = free_port()
        self.trigger_log_port = free_port()
        self.extra_env = dict(extra_env or {})
        self.sql_alchemy_conn = sql_alchemy_conn
        self.celery = celery
        self.task_instance_heartbeat_timeout = task_instance_heartbeat_timeout
        self.components = tuple(components) + (celery.worker_names() if celery else ())
        self.parallelism = parallelism
        self.bytecode_cache = bytecode_cache
        self.die_with_parent = die_with_parent
        self.log_dir = self.files.log_dir
        self.base_url = f"http://{_HOST}:{self.port}"
        self.startup_seconds: float | None = None
        self._start_secrets: StartSecrets | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._log_files: dict[str, IO[bytes]] = {}
        self._log_offsets: dict[str, int] = {}  # where each component's output of this start begins
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
        return self.files.db_path

    @property
    def passwords_file(self) -> Path:
        return self.files.passwords_file

    @property
    def secrets_file(self) -> Path:
        """Where the home's Fernet key is stored (the only secret kept on disk besides the password)."""
        return self.files.secrets_file

    @property
    def mlops_home(self) -> Path | None:
        """The ``MLOPS_HOME`` the components get (``extra_env`` first, then ours), if any."""
        value = self.extra_env.get("MLOPS_HOME") or os.environ.get("MLOPS_HOME")
        return Path(value).expanduser().resolve() if value else None

    def log_path(self, component: str) -> Path:
        """The output of one component (or of ``db-migrate``)."""
        return self.log_dir / f"{component}.log"

    @property
    def password(self) -> str:
        """The ``admin`` password (created on first use; stable for the home)."""
        return self.files.admin_password()

    def _secrets_of_this_start(self) -> StartSecrets:
        if self._start_secrets is None:
            self._start_secrets = StartSecrets.create(os.environ)
        return self._start_secrets

    def environment(self) -> dict[str, str]:
        """The Airflow settings of every component plus ``extra_env`` (contains secrets: never print it)."""
        settings = StackSettings(
            home=self.home,
            config_file=self.files.config_file,
            db_path=self.db_path,
            log_dir=self.log_dir,
            dags_folder=self.dags_folder,
            plugins_folder=self.plugins_folder,
            api_port=self.port,
            worker_log_port=self.worker_log_port,
            trigger_log_port=self.trigger_log_port,
            parallelism=self.parallelism,
            username=self.username,
            passwords_file=self.passwords_file,
            executor="CeleryExecutor" if self.celery else "LocalExecutor",
            sql_alchemy_conn=self.sql_alchemy_conn,
            celery_broker_url=self.celery.broker_url if self.celery else None,
            celery_result_backend=self.celery.result_backend if self.celery else None,
            task_instance_heartbeat_timeout=self.task_instance_heartbeat_timeout,
        )
        env = airflow_settings(settings, self.files.fernet_key(), self._secrets_of_this_start())
        env.update(self.extra_env)
        return env

    def _process_env(self) -> dict[str, str]:
        """The full environment of the component processes (see ``component_env``)."""
        prefix = default_pycache_prefix() if self.bytecode_cache else None
        return component_environment(os.environ, self.environment(), pycache_prefix=prefix)

    def _command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "airflow", *args]

    def _component_command(self, component: str) -> list[str]:
        args: tuple[str, ...] = (component,)
        if component == "api-server":
            args = ("api-server", "--host", _HOST, "--port", str(self.port), "--workers", "1")
        elif self.celery and component.startswith(CELERY_WORKER_PREFIX):
            args = (
                "celery",
                "worker",
                "--queues",
                self.celery.queue,
                "--concurrency",
                str(self.celery.concurrency),
                "--celery-hostname",
                f"{component}@%h",
                "--skip-serve-logs",
                "--pid",
                str(self.home / f"{component}.pid"),
                "--without-gossip",
                "--without-mingle",
            )
        if self.die_with_parent and sys.platform.startswith("linux"):
            # exec airflow after prctl(PR_SET_PDEATHSIG, SIGTERM): if this Python process dies
            # without running stop() (SIGKILL, os._exit), each component still gets SIGTERM.
            return [sys.executable, "-c", _DEATHSIG_LAUNCHER, str(os.getpid()), *args]
        return self._command(*args)

    def _prepare_home(self) -> None:
        if not self.dags_folder.is_dir():
            raise StackError(f"DAG folder {self.dags_folder} does not exist")
        self.files.prepare()
        if self.plugins_folder == self.home / "plugins":
            make_private_folder(self.plugins_folder)
        else:
            self.plugins_folder.mkdir(parents=True, exist_ok=True)
        if self.mlops_home is not None:
            make_private_folder(self.mlops_home)
        if self.bytecode_cache:
            with contextlib.suppress(OSError):
                default_pycache_prefix().mkdir(parents=True, exist_ok=True)

    def _choose_ports(self) -> None:
        """Check the api-server port; move a log-server port that was taken since construction."""
        if "api-server" in self.components and not port_is_free(_HOST, self.port):
            raise StackError(
                f"port {_HOST}:{self.port} is already in use; stop what listens there or choose another port"
            )
        # The log servers bind every interface (airflow/utils/serve_logs/core.py binds host "").
        if not port_is_free("", self.worker_log_port):
            self.worker_log_port = free_port()
        if not port_is_free("", self.trigger_log_port):
            self.trigger_log_port = free_port()

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> AirflowStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return bool(self._procs)

    def start(self, timeout: float = 180) -> AirflowStack:
        """Migrate the database, start the components and wait until all report healthy.

        Every start has its own JWT secret and API secret key (unless configured by the caller).
        """
        with self._lock:
            if self._procs:
                raise StackError("stack already started")
            t0 = time.monotonic()
            deadline = t0 + timeout
            self._start_secrets = StartSecrets.create(os.environ)
            self._prepare_home()
            self._choose_ports()
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

    def switch_env(
        self, extra_env: Mapping[str, str], timeout: float = 180, *, with_api_server: bool = False
    ) -> AirflowStack:
        """Give the stack a new ``extra_env``; when running, restart every component but the api-server with it.

        The scheduler (and with it every task process its LocalExecutor starts), the dag-processor and
        the triggerer read their environment when they start, so they are stopped (SIGTERM, waiting
        for running tasks as :meth:`stop` does) and started again; the metadata database, the
        api-server and this start's JWT secret stay, so tokens and the REST client keep working. A
        deferred task's trigger is picked up by the new triggerer and runs in the new environment.
        Call it while no task runs: a running task is waited for, up to ``timeout`` seconds, then
        killed. Returns ``self``; a stack that is not running only remembers the environment.

        ``with_api_server``: restart the api-server too (same port and JWT secret, so tokens keep
        working), for callers that read the project's plugin pages, which read the environment's
        settings in the api-server (the lifecycle view, the drift reports).
        """
        with self._lock:
            self.extra_env = dict(extra_env)
            if not self._procs:
                return self
            restarted = [c for c in self.components if with_api_server or c != "api-server"]
            deadline = time.monotonic() + timeout
            self._stop_components(restarted, timeout=timeout)
            try:
                started_at = datetime.now(UTC) - timedelta(seconds=2)
                if self.mlops_home is not None:
                    make_private_folder(self.mlops_home)
                env = self._process_env()
                for component in restarted:
                    self._spawn(component, env)
                self._wait_ready(started_at, deadline)
            except BaseException:
                self.stop()
                raise
            return self

    def _stop_components(self, components: Sequence[str], timeout: float) -> None:
        """SIGTERM the given components, wait up to ``timeout``, then SIGKILL what is left of their sessions."""
        procs = {c: self._procs[c] for c in components if c in self._procs}
        leaders = {p.pid for p in procs.values()}
        known = session_processes(leaders)
        deadline = time.monotonic() + timeout
        for proc in procs.values():
            signal_group(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        kill_sessions(leaders, grace=max(0.0, min(5.0, deadline - time.monotonic())), extra=known)
        for component, proc in procs.items():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            del self._procs[component]
            log = self._log_files.pop(component, None)
            if log is not None:
                with contextlib.suppress(OSError):
                    log.close()

    def migrate(self, timeout: float = 180) -> None:
        """Run ``airflow db migrate`` (log: ``<home>/logs/db-migrate.log``)."""
        self._prepare_home()
        log_path = self.log_path("db-migrate")
        with _open_private_log(log_path) as log:
            proc = subprocess.Popen(
                self._command("db", "migrate"),
                env=self._process_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.home,
                umask=COMPONENT_UMASK,
            )
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_sessions({proc.pid}, grace=5)
                proc.wait()
                raise StackError(
                    f"`airflow db migrate` did not finish in {timeout:.0f}s; log {log_path}:\n{log_tail(log_path)}"
                ) from None
        if rc != 0:
            raise StackError(f"`airflow db migrate` failed (exit {rc}); log {log_path}:\n{log_tail(log_path)}")

    def _spawn(self, component: str, env: Mapping[str, str]) -> None:
        log = _open_private_log(self.log_path(component))
        log.write(f"\n===== {datetime.now(UTC).isoformat()} starting {component} =====\n".encode())
        log.flush()
        self._log_offsets[component] = log.tell()
        self._log_files[component] = log
        env = dict(env)
        if component.startswith(CELERY_WORKER_PREFIX):
            env[CELERY_WORKER_NAME_VARIABLE] = component  # the hostname its task instances record
        self._procs[component] = subprocess.Popen(
            self._component_command(component),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own session + process group: stop() can find every descendant
            cwd=self.home,
            umask=COMPONENT_UMASK,  # everything Airflow and the tasks create is owner-only
        )

    def check(self) -> None:
        """Raise :class:`StackError` (with the log tail) if a started component has exited."""
        for component, proc in list(self._procs.items()):
            rc = proc.poll()
            if rc is not None:
                log_path = self.log_path(component)
                raise StackError(
                    f"Airflow {component} (pid {proc.pid}) exited with code {rc}; "
                    f"last lines of {log_path}:\n{log_tail(log_path)}"
                )

    def health(self, timeout: float = 5) -> dict[str, Any]:
        """``GET /api/v2/monitor/health`` (no authentication needed)."""
        resp = requests.get(f"{self.base_url}/api/v2/monitor/health", timeout=timeout)
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        return body

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
        problems.extend(w for w in self.worker_names() if w in self._procs and not self._worker_ready(w))
        return problems

    def _worker_ready(self, worker: str) -> bool:
        """Celery logs ``<name>@<host> ready.`` once the worker consumes its queue."""
        try:
            with open(self.log_path(worker), "rb") as fh:
                fh.seek(self._log_offsets.get(worker, 0))
                text = fh.read().decode("utf-8", errors="replace")
        except OSError:
            return False
        return re.search(rf"{re.escape(worker)}@\S+ ready\.", text) is not None

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
                tails = "\n".join(
                    f"--- {c}: {self.log_path(c)}\n{log_tail(self.log_path(c), 25)}" for c in self.components
                )
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

    # -- Celery workers -----------------------------------------------------------------------------

    def worker_names(self) -> tuple[str, ...]:
        """The Celery workers this stack starts (none on a LocalExecutor stack)."""
        return self.celery.worker_names() if self.celery else ()

    def worker_pids(self) -> dict[str, int]:
        """Pid of each running Celery worker (the leader of its own session)."""
        return {c: p.pid for c, p in self._procs.items() if c.startswith(CELERY_WORKER_PREFIX)}

    def kill_worker(self, worker: str, sig: int = signal.SIGKILL) -> set[int]:
        """Send ``sig`` to every process of one worker at once -- the worker, its pool processes, the
        task supervisors and task processes it forked -- as when its machine dies; return their pids.

        (SIGKILL to the worker's main process alone would leave its pool children running their
        tasks to the end.) The worker is then no longer one of the stack's running components;
        :meth:`start_worker` starts it again. Its task instances stay ``running`` in Airflow until
        ``[scheduler] task_instance_heartbeat_timeout`` passes without a heartbeat; then the scheduler
        fails them and retries them on a worker that is alive.
        """
        with self._lock:
            proc = self._procs.get(worker)
            if proc is None or not worker.startswith(CELERY_WORKER_PREFIX):
                raise StackError(f"no running Celery worker {worker!r}; running: {sorted(self.worker_pids())}")
            members = session_processes({proc.pid})
            send_signal(members, sig)
            if sig == signal.SIGKILL:
                proc.wait(timeout=30)
                deadline = time.monotonic() + 10
                while any(is_running(p) for p in members) and time.monotonic() < deadline:
                    time.sleep(0.1)
                del self._procs[worker]
                log = self._log_files.pop(worker, None)
                if log is not None:
                    with contextlib.suppress(OSError):
                        log.close()
            return members

    def start_worker(self, worker: str, timeout: float = 120) -> None:
        """Start one of this stack's Celery workers (again) and wait until it consumes its queue.

        More workers than configured are more stacks' worth of hosts: run ``airflow celery worker``
        with this stack's environment on another machine (README, "Distributed deployment").
        """
        with self._lock:
            if worker not in self.worker_names():
                raise StackError(f"{worker!r} is not one of this stack's workers {list(self.worker_names())}")
            if worker in self._procs:
                raise StackError(f"{worker} is already running")
            self._spawn(worker, self._process_env())
            deadline = time.monotonic() + timeout
            while not self._worker_ready(worker):
                self.check()
                if time.monotonic() > deadline:
                    raise StackError(f"{worker} did not start in {timeout:.0f}s:\n{log_tail(self.log_path(worker))}")
                time.sleep(0.5)

    def pids(self) -> dict[str, int]:
        """Pid of each started component (the leader of its own session)."""
        return {c: p.pid for c, p in self._procs.items()}

    def all_pids(self) -> set[int]:
        """Every live process of the stack: components, their descendants, anything in their sessions."""
        return session_processes({p.pid for p in self._procs.values()})

    def stop(self, timeout: float = 30) -> StopSummary:
        """Stop every component and every process they started. Idempotent; also runs at exit.

        SIGTERM goes to each component's process group (the api-server last, so tasks that are
        shutting down can still report to the Execution API); after ``timeout`` seconds everything
        still alive in the components' sessions -- including task processes, which move to their
        own process group but stay in the session -- gets SIGKILL.
        """
        with self._lock:
            procs = dict(self._procs)
            summary = StopSummary(components=tuple(procs), processes=0, killed=0)
            if procs:
                leaders = {p.pid for p in procs.values()}
                known = session_processes(leaders)
                deadline = time.monotonic() + timeout
                ordered = sorted(procs.items(), key=lambda item: item[0] == "api-server")
                for phase in (False, True):  # non-api components first, then the api-server
                    batch = [(c, p) for c, p in ordered if (c == "api-server") == phase]
                    for _, proc in batch:
                        signal_group(proc.pid, signal.SIGTERM)
                    for _, proc in batch:
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                # Whatever is left (components that ignored SIGTERM, orphaned task processes):
                seen = known | session_processes(leaders)
                killed = kill_sessions(leaders, grace=max(0.0, min(5.0, deadline - time.monotonic())), extra=known)
                for proc in procs.values():
                    if proc.poll() is None:
                        proc.kill()
                    proc.wait()
                self._procs.clear()
                summary = StopSummary(components=tuple(procs), processes=len(seen), killed=len(killed))
            for log in self._log_files.values():
                with contextlib.suppress(OSError):
                    log.close()
            self._log_files.clear()
            if self._atexit_registered:
                atexit.unregister(self.stop)
                self._atexit_registered = False
            return summary

    # -- access ---------------------------------------------------------------------------------

    @property
    def client(self) -> AirflowClient:
        """A REST client logged in as ``admin`` (created on first use)."""
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
            umask=COMPONENT_UMASK,
        )
