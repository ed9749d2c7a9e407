"""An MLflow tracking server (REST API and UI) on loopback, for ``make up`` and the distributed stack.

    server = MlflowServer("sqlite:////abs/path/mlflow.db", "/abs/path/artifacts").start()
    print(server.url)        # http://127.0.0.1:<free port>, answers /health
    ...
    server.stop()            # the CLI, uvicorn and its worker: nothing is left

    with MlflowServer("postgresql+psycopg://mlflow@127.0.0.1:5432/mlflow", root, port=5000) as server:
        ...

The server serves an existing *backend store* (the SQLite file or PostgreSQL database the tasks
write) and an *artifact root* (where experiments it creates keep their artifacts). It is
``mlflow server`` of this interpreter's environment, started as the leader of its own session with
umask 077 (what it creates, such as a new SQLite store, is owner-only), its output appended to
``log_path``.

Secrets. The backend store URI may carry a database password, so it never goes on a command line
(``ps`` shows every argv to every user): the child gets it as ``MLFLOW_BACKEND_STORE_URI``, a
variable MLflow's CLI reads, in an environment built from ``mlops_core.child_env``'s allow-list
(nothing of the caller's Airflow secrets, connections or credentials). Error messages show the URI
with its password masked.

Choices: one uvicorn worker (the UI and a few clients; a 2-core machine runs Airflow too), and no
MLflow job runner (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``: it serves GenAI jobs we do not
use and would be one more process). MLflow's CLI forwards SIGTERM to uvicorn; :meth:`stop` signals
the whole session anyway and SIGKILLs what is left after the grace period. With
``die_with_parent`` (Linux), the server gets SIGTERM when the process that started it dies
without calling :meth:`stop`.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from mlops_core.child_env import child_environment
from mlops_core.ports import free_port, port_is_free
from mlops_core.processes import terminate_group

SERVER_UMASK = 0o077
DEFAULT_LOG_NAME = "mlflow-server.log"

# argv: <expected parent pid> <python args...>; execs this interpreter after prctl(PR_SET_PDEATHSIG,
# SIGTERM), which survives execve (the same trick as the Airflow components of airflow_stack.stack).
_DEATHSIG_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('parent exited before the MLflow server started')\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)
_PASSWORD_IN_URI = re.compile(r"(://[^/\s:@]*:)[^/\s@]+@")


class MlflowServerError(RuntimeError):
    """The MLflow server did not start or died; the message carries the tail of its log."""


class MlflowPortInUseError(MlflowServerError):
    """The port asked for is taken by another process."""


def masked_uri(uri: str) -> str:
    """``uri`` with the password of its user part replaced by ``***`` (for messages and logs)."""
    return _PASSWORD_IN_URI.sub(r"\1***@", uri)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:])


def _is_local_path(location: str) -> bool:
    """True for a plain path or a ``file:`` URI (a folder we may have to create), not ``s3://`` & co."""
    return location.startswith("file:") or "://" not in location


class MlflowServer:
    """``mlflow server`` on ``host:port`` for one backend store and artifact root (a context manager).

    :param backend_store_uri: the store to serve: ``sqlite:////abs/path.db`` or a SQLAlchemy
        PostgreSQL URI (``postgresql+psycopg://user[:password]@host:port/db``). Created and
        migrated by MLflow when missing; a SQLite file's folder is created owner-only.
    :param artifact_root: ``--default-artifact-root`` (and the proxied-artifact destination): a
        folder (created owner-only) or a URI such as ``s3://bucket/prefix``. Experiments created by
        a client keep the location they were given; the UI reads artifacts wherever they are.
    :param host: interface to bind; the default keeps the server on loopback.
    :param port: TCP port; ``None`` picks a free one (see :attr:`url`).
    :param log_path: where the server's output is appended (created 0600); default
        ``mlflow-server.log`` next to a SQLite store, else ``mlflow-server-<port>.log`` in the temp dir.
    :param die_with_parent: (Linux) SIGTERM the server when this process dies without :meth:`stop`.
    """

    def __init__(
        self,
        backend_store_uri: str,
        artifact_root: Path | str,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_path: Path | str | None = None,
        die_with_parent: bool = True,
    ) -> None:
        if not backend_store_uri:
            raise ValueError("backend_store_uri must not be empty")
        self.backend_store_uri = backend_store_uri
        root = str(artifact_root)
        self.artifact_root = str(Path(root).expanduser().resolve()) if "://" not in root else root
        self.host = host
        self.port = int(port) if port else free_port(host)
        self.log_path = Path(log_path) if log_path else self._default_log_path()
        self.die_with_parent = die_with_parent
        self.startup_seconds: float | None = None  # launch to first healthy answer
        self._launched_at = 0.0
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"MlflowServer(backend_store_uri={masked_uri(self.backend_store_uri)!r}, url={self.url!r})"

    @property
    def url(self) -> str:
        """The server's base URL (UI and REST API), e.g. ``http://127.0.0.1:5000``."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host  # noqa: S104 - a comparison, not a bind
        return f"http://{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The pid of the server's session leader (the ``mlflow server`` CLI) while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _default_log_path(self) -> Path:
        sqlite = "sqlite:///"
        if self.backend_store_uri.startswith(sqlite):
            return Path(self.backend_store_uri[len(sqlite) :]).parent / DEFAULT_LOG_NAME
        import tempfile

        return Path(tempfile.gettempdir()) / f"mlflow-server-{self.port}.log"

    # -- start ------------------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The server's argv (no store URI, no secret: those are in :meth:`environment`)."""
        args = ["-m", "mlflow", "server", "--host", self.host, "--port", str(self.port), "--workers", "1"]
        if self.die_with_parent and sys.platform.startswith("linux"):
            return [sys.executable, "-c", _DEATHSIG_LAUNCHER, str(os.getpid()), *args]
        return [sys.executable, *args]

    def environment(self) -> dict[str, str]:
        """The server's environment: ``child_env``'s allow-list plus the store, the root and two switches.

        Contains the backend store URI (and so its password, if it has one): never print it.
        """
        return child_environment(
            extra={
                # `mlflow server` runs `python -m uvicorn` of this interpreter: keep its bin folder first
                "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)]),
                "PYTHONUNBUFFERED": "1",
                "MLFLOW_BACKEND_STORE_URI": self.backend_store_uri,
                "MLFLOW_DEFAULT_ARTIFACT_ROOT": self.artifact_root,
                "MLFLOW_ARTIFACTS_DESTINATION": self.artifact_root,
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            }
        )

    def _prepare_folders(self) -> None:
        sqlite = "sqlite:///"
        folders = [self.log_path.parent]
        if self.backend_store_uri.startswith(sqlite):
            folders.append(Path(self.backend_store_uri[len(sqlite) :]).parent)
        if _is_local_path(self.artifact_root):
            folders.append(Path(self.artifact_root.removeprefix("file://")))
        for folder in folders:
            if not folder.exists():
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _open_log(self) -> IO[bytes]:
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)
        return os.fdopen(fd, "ab")

    def healthy(self, timeout: float = 2.0) -> bool:
        """True when ``GET /health`` answers 200 now."""
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=timeout) as response:  # noqa: S310 - http only
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def start(self, timeout: float = 120) -> MlflowServer:
        """Start the server and wait until ``/health`` answers; raises :class:`MlflowServerError`.

        MLflow creates (or migrates) the backend store's tables before it listens, so once this
        returns, clients of the same store find them. ``start()`` is :meth:`launch` then
        :meth:`wait_until_healthy`; call those two to do something else while MLflow starts.
        """
        return self.launch().wait_until_healthy(timeout)

    def launch(self) -> MlflowServer:
        """Start the server process and return at once (see :meth:`wait_until_healthy`)."""
        if self.running:
            raise MlflowServerError(f"the MLflow server at {self.url} is already running")
        if not port_is_free(self.host, self.port):
            raise MlflowPortInUseError(
                f"port {self.host}:{self.port} is already in use; stop what listens there or choose another port"
            )
        self._prepare_folders()
        self._launched_at = time.monotonic()
        self.startup_seconds = None
        with self._open_log() as log:
            log.write(f"--- starting mlflow server for {masked_uri(self.backend_store_uri)} on {self.url}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                cwd=self.log_path.parent,
                start_new_session=True,  # its own session: stop() ends the CLI, uvicorn and workers together
                umask=SERVER_UMASK,
            )
        return self

    def wait_until_healthy(self, timeout: float = 120) -> MlflowServer:
        """Wait until a launched server answers ``/health``; stop it and raise if it exits or times out."""
        proc = self._proc
        if proc is None:
            raise MlflowServerError("the MLflow server was not launched")
        deadline = time.monotonic() + timeout
        while not self.healthy(timeout=1.0):
            if proc.poll() is not None:
                self.stop()
                raise MlflowServerError(
                    f"the MLflow server for {masked_uri(self.backend_store_uri)} exited with code {proc.returncode} "
                    f"before answering {self.url}/health; last lines of {self.log_path}:\n{_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise MlflowServerError(
                    f"the MLflow server did not answer {self.url}/health within {timeout:.0f}s; "
                    f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(0.25)
        if self.startup_seconds is None:
            self.startup_seconds = time.monotonic() - self._launched_at
        return self

    def check(self) -> None:
        """Raise :class:`MlflowServerError` when a started server has exited."""
        if self._proc is not None and self._proc.poll() is not None:
            raise MlflowServerError(
                f"the MLflow server at {self.url} exited with code {self._proc.returncode}; "
                f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
            )

    # -- stop -------------------------------------------------------------------------------------

    def stop(self, timeout: float = 10.0) -> bool:
        """SIGTERM the server's session, SIGKILL what is left after ``timeout``; True if it was running."""
        proc, self._proc = self._proc, None
        if proc is None:
            return False
        was_running = proc.poll() is None
        terminate_group(proc.pid, grace=timeout)  # the session leader's group: CLI, uvicorn, its worker
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        return was_running

    def __enter__(self) -> MlflowServer:
        """Start the server unless it runs already (``with MlflowServer(...).start(timeout=600):``)."""
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
