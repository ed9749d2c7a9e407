"""Local serving target: one MLflow scoring server on ``host:port``, managed through a state folder.

:class:`LocalModelServer` never hands a registry URI to MLflow's server. It first downloads the
version into ``state_dir/models/`` and verifies it (``mlops_core.model_integrity``: the digest
recorded in the tracking database when the model was logged, skops only, our trusted types), then
runs ``python -m mlflow models serve -m <that folder> --env-manager local`` as a detached process
group. The server's environment is an allow-list (``mlops_core.child_env``: none of Airflow's
secrets) plus ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``; the verified folder loads through our
own loader, which that flag does not block. A version that fails verification is refused before
the live server is touched. What it did is kept in ``state_dir``:

- ``deployment.json`` -- what is live: model URI and version, the served folder and its digest,
  pid, port, URL, start time (written atomically, only after the server answered ``/ping``);
- ``starting.json`` -- a server being started, so a crash mid-start leaves nothing unaccounted for;
- ``history.jsonl`` -- every deploy / restore / stop, newest last (what :meth:`rollback` reads);
- ``server-<version>.log`` -- the server's output; its tail is part of every startup error.

Rollout on one machine (the local target is a development backend; SageMaker and Azure ML do real
blue/green). The URL stays ``http://<host>:<port>`` for every version, so clients never follow a
move. A switch stops the live server, starts the new version on the same port and waits for
``/ping``; during the server's startup the port does not answer (about 8 s on an idle 2-CPU
machine: the CLI and then uvicorn each import MLflow before the model loads; a minute or more
under heavy load, hence the generous default ``startup_timeout``). When the new version
does not come up (bad URI, model that fails to load, timeout), the previous version is started
again before the error is raised, so a failed deploy never leaves the port empty when something
was serving before. After a successful switch the caller smoke-tests (:meth:`smoke_test`) and
verifies (:meth:`verify`); if that fails, :meth:`rollback` redeploys the version served before
(from ``history.jsonl``) -- or the caller deploys the registry's ``previous-champion``. Starting
the candidate on a side port first would not shorten the gap (an MLflow server cannot hand its
socket over, so the main port needs a second start) and would double the startup time.

Prediction capture: with a :class:`CaptureConfig`, the process group's leader is our capture proxy
(:mod:`mlops_core.capture_proxy`) on the public port, and MLflow's server its child on an internal
loopback port; every scoring request is recorded to the object store
(:mod:`mlops_core.capture`). ``stop()`` ends both; the proxy writes what it buffered on SIGTERM.

Deploying the version that is already live is a no-op, so a retried task does not restart the
server. Operations on one ``state_dir`` are serialized by a file lock. A port held by any process
that this state folder did not start is refused with :class:`PortInUseError`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_core.atomic_files import write_atomic
from mlops_core.child_env import child_environment
from mlops_core.model_integrity import fetch_verified_model, parse_model_uri, registered_model_sha256
from mlops_core.ports import free_port, port_is_free
from mlops_core.processes import pid_alive, terminate_group

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

DEPLOYMENT_FILE = "deployment.json"
STARTING_FILE = "starting.json"
HISTORY_FILE = "history.jsonl"
LOCK_FILE = ".lock"
MODELS_DIR = "models"  # verified copies of the served versions


class ServingError(RuntimeError):
    """Base class of local serving errors."""


class DeploymentFailed(ServingError):
    """A deployment did not complete: the server did not come up (the message holds its log's tail),
    the model was refused, or the deploy stage could not deploy, smoke-test or verify it."""


class PortInUseError(ServingError):
    """The serving port is held by a process this server did not start."""


class SmokeTestFailed(ServingError):
    """The live server did not answer a scoring request as expected; the message holds its answer."""


@dataclass(frozen=True)
class Deployment:
    """What one server process serves: ``model_uri`` as asked, ``model_path`` the verified folder it loads."""

    model_uri: str
    model_version: str
    pid: int
    host: str
    port: int
    url: str
    started_at: str
    log_path: str
    model_path: str = ""  # empty in records written before verified serving
    model_sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready values (``deployment.json``, history entries)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Deployment:
        """A record read back; fields with defaults may be missing (older records)."""
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})


@dataclass(frozen=True)
class CaptureConfig:
    """Where and how the local server's capture proxy records requests (``capture:`` settings).

    :param store_root: folder of the object store the part files go to (the environment's local
        store, or a spool folder that :func:`mlops_core.capture.ship_captures` empties into S3).
    :param model_name: the registered model's name, written in every record.
    :param env: the environment (``captures/<model_dir>/<env>/``); ``model_dir`` defaults to ``model_name``.
    :param entity_key: the contract's entity key column, taken from each request row.
    """

    store_root: str
    model_name: str
    env: str
    model_dir: str = ""
    entity_key: str | None = None
    sample_rate: float = 1.0
    flush_records: int = 100
    flush_seconds: float = 10.0
    max_request_mb: float = 6.0

    @property
    def prefix(self) -> str:
        from mlops_core.capture import capture_prefix

        return capture_prefix(self.model_dir or self.model_name, self.env)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return raw if isinstance(raw, dict) else None


def _is_model_server(pid: int, model_uri: str | None = None) -> bool:
    """Whether ``pid`` runs ``mlflow models serve`` (for ``model_uri`` when given); guards against pid reuse."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():  # no procfs (macOS): trust the pid
        return pid_alive(pid)
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    argv = [a.decode(errors="replace") for a in args if a]
    if "mlflow" not in argv or "serve" not in argv:
        return False
    return model_uri is None or model_uri in argv


def _http(method: str, url: str, body: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    if not url.startswith(("http://", "https://")):
        raise ValueError(f"serving URLs are http(s) only, got {url!r}")
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - scheme checked above
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _ping(url: str, timeout: float = 2.0) -> bool:
    try:
        status, _ = _http("GET", f"{url}/ping", timeout=timeout)
    except OSError:
        return False
    return status == 200


def dataframe_split_payload(rows: pd.DataFrame) -> bytes:
    """The ``/invocations`` JSON body for ``rows``: ``{"dataframe_split": {"columns": [...], "data": [...]}}``.

    Serialized by pandas: NaN/NaT become ``null``, timestamps ISO-8601 strings, numpy scalars plain
    JSON numbers; the index is dropped (the scoring server does not need it).
    """
    split = rows.to_json(orient="split", index=False, date_format="iso", date_unit="us")
    return b'{"dataframe_split": ' + split.encode("utf-8") + b"}"


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:])


class LocalModelServer:
    """One MLflow scoring server on ``host:port``, its state kept in ``state_dir``.

    :param state_dir: folder of this server's state (one per environment), created when needed.
    :param host: interface to bind (``127.0.0.1`` keeps it local).
    :param port: the stable serving port; every version is served at ``http://host:port``.
    :param tracking_uri: MLflow tracking/registry URI: where ``models:/`` URIs and their recorded
        digests are looked up (by this object; the server process never talks to the registry).
    :param request_timeout: seconds the server allows one scoring request.
    :param capture: record every request (the capture proxy in front of MLflow's server); None: no proxy.
    """

    def __init__(
        self,
        state_dir: Path | str,
        host: str,
        port: int,
        tracking_uri: str,
        request_timeout: int = 60,
        capture: CaptureConfig | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.host = host
        self.port = int(port)
        self.tracking_uri = tracking_uri
        self.request_timeout = request_timeout
        self.capture = capture

    def __repr__(self) -> str:
        return f"LocalModelServer(state_dir={str(self.state_dir)!r}, url={self.url!r})"

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host  # noqa: S104 - a comparison, not a bind
        return f"http://{host}:{self.port}"

    # ----------------------------------------------------------------- state
    @contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / LOCK_FILE, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _deployment(self) -> Deployment | None:
        raw = _read_json(self.state_dir / DEPLOYMENT_FILE)
        try:
            return None if raw is None else Deployment.from_dict(raw)
        except (KeyError, TypeError):
            return None

    def _record(self, event: str, deployment: Deployment | None, **extra: Any) -> None:
        entry = {"event": event, "at": _now(), **(deployment.to_dict() if deployment else {}), **extra}
        with open(self.state_dir / HISTORY_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")

    def history(self) -> list[dict[str, Any]]:
        """Every deploy/restore/stop event of this server, oldest first."""
        path = self.state_dir / HISTORY_FILE
        if not path.exists():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def _is_running(self, deployment: Deployment) -> bool:
        served = deployment.model_path or deployment.model_uri
        return pid_alive(deployment.pid) and _is_model_server(deployment.pid, served)

    # ----------------------------------------------------------------- reading
    def current(self) -> dict[str, Any] | None:
        """``deployment.json`` plus ``alive`` (the process runs and answers ``/ping``), or None."""
        deployment = self._deployment()
        if deployment is None:
            return None
        alive = self._is_running(deployment) and _ping(deployment.url)
        return {**deployment.to_dict(), "alive": alive}

    def verify(self, expected_version: str, expected_sha256: str | None = None) -> bool:
        """True when the live server is ``expected_version``: recorded, its process started for that
        model, still running, and answering ``/ping``; with ``expected_sha256``, also served from
        files verified against that digest."""
        deployment = self._deployment()
        return (
            deployment is not None
            and deployment.model_version == str(expected_version)
            and (expected_sha256 is None or deployment.model_sha256 == expected_sha256)
            and self._is_running(deployment)
            and _ping(deployment.url)
        )

    # ----------------------------------------------------------------- deploying
    def deploy(
        self, model_uri: str, model_version: str, startup_timeout: int = 120, *, expected_sha256: str | None = None
    ) -> Deployment:
        """Serve ``model_uri`` (registry version ``model_version``) at :attr:`url`; see the module doc.

        ``expected_sha256`` is the digest recorded for the version in the tracking database; when
        None it is looked up there (``models:/<name>/<version>`` URIs). The version is downloaded
        and verified first: ``ModelIntegrityError`` (files changed since logging, no recorded
        digest, a pickle format) is raised before anything that serves now is touched. Raises
        :class:`PortInUseError` when another process holds the port, and :class:`DeploymentFailed`
        (with the server log's tail) when the new server does not answer ``/ping`` within
        ``startup_timeout`` seconds -- after restoring the previous deployment.
        """
        model_version = str(model_version)
        with self._locked():
            previous = self._deployment()
            if previous is not None and not self._is_running(previous):
                self._record("lost", previous, reason="process not running")
                (self.state_dir / DEPLOYMENT_FILE).unlink(missing_ok=True)
                previous = None
            if (
                previous is not None
                and previous.model_uri == model_uri
                and previous.model_version == model_version
                and (expected_sha256 is None or previous.model_sha256 == expected_sha256)
                and _ping(previous.url)
            ):
                return previous  # already live: a retry changes nothing
            self._stop_starting()
            if previous is None or previous.port != self.port:
                self._require_free_port()  # before touching what serves now
            served, digest = self._fetch_verified(model_uri, model_version, expected_sha256)
            if previous is not None:
                self._terminate(previous.pid)
                self._wait_port_free(timeout=15)
            try:
                deployment = self._start(model_uri, model_version, startup_timeout, served, digest)
            except DeploymentFailed as exc:
                (self.state_dir / DEPLOYMENT_FILE).unlink(missing_ok=True)
                self._prune_models(keep=None)
                if previous is None:
                    raise
                try:
                    served, digest = self._fetch_verified(previous.model_uri, previous.model_version, None)
                    restored = self._start(previous.model_uri, previous.model_version, startup_timeout, served, digest)
                except Exception as again:
                    self._prune_models(keep=None)
                    self._record("stopped", previous, reason="restore failed")
                    raise DeploymentFailed(
                        f"{exc}\nRestoring the previous version {previous.model_version} also failed; "
                        f"nothing is served at {self.url}:\n{again}"
                    ) from exc
                self._commit(restored, "restored")
                raise DeploymentFailed(
                    f"{exc}\nThe previous version {previous.model_version} was restored at {self.url}."
                ) from exc
            self._commit(deployment, "deployed")
            return deployment

    def _fetch_verified(self, model_uri: str, model_version: str, expected_sha256: str | None) -> tuple[str, str]:
        """Download and verify ``model_uri`` into a fresh folder under ``models/``; ``(folder, digest)``.

        Without ``expected_sha256`` the digest recorded on the version in the registry is used.
        """
        label = f"{model_uri} (version {model_version})"
        if model_uri.startswith("models:/"):
            name, version, _alias = parse_model_uri(model_uri)
            label = f"{name} version {version or model_version}"
        if expected_sha256 is None:
            expected_sha256 = registered_model_sha256(model_uri, self.tracking_uri)
        models = self.state_dir / MODELS_DIR
        models.mkdir(parents=True, exist_ok=True)
        dest = Path(tempfile.mkdtemp(prefix=f"v{model_version}-", dir=models))
        try:
            folder = fetch_verified_model(model_uri, expected_sha256, dest, tracking_uri=self.tracking_uri, label=label)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        return str(folder), expected_sha256

    def _prune_models(self, keep: Deployment | None) -> None:
        """Remove the verified copies under ``models/`` except the one ``keep`` serves."""
        models = self.state_dir / MODELS_DIR
        if not models.is_dir():
            return
        kept = Path(keep.model_path).resolve() if keep is not None and keep.model_path else None
        for folder in models.iterdir():
            if kept is None or not kept.is_relative_to(folder.resolve()):
                shutil.rmtree(folder, ignore_errors=True)

    def rollback(self, startup_timeout: int = 120) -> Deployment | None:
        """Redeploy the version that was live before the current one (from the history); None if none."""
        current = self._deployment()
        current_version = None if current is None else current.model_version
        for entry in reversed(self.history()):
            if entry.get("event") in ("deployed", "restored") and entry.get("model_version") != current_version:
                return self.deploy(entry["model_uri"], entry["model_version"], startup_timeout)
        return None

    def _commit(self, deployment: Deployment, event: str) -> None:
        _write_json_atomic(self.state_dir / DEPLOYMENT_FILE, deployment.to_dict())
        (self.state_dir / STARTING_FILE).unlink(missing_ok=True)
        self._record(event, deployment)
        self._prune_models(keep=deployment)

    def _require_free_port(self) -> None:
        if not port_is_free(self.host, self.port):
            raise PortInUseError(
                f"port {self.port} on {self.host} is in use by a process this server did not start "
                f"(no live deployment recorded in {self.state_dir}). Stop that process, or choose another "
                f"port (serving.port in include/conf/<env>.yaml, e.g. MLOPS_SERVING_PORT_DEV)."
            )

    def _wait_port_free(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not port_is_free(self.host, self.port):
            if time.monotonic() > deadline:
                self._require_free_port()
            time.sleep(0.2)

    def _command(self, model_path: str, host: str, port: int) -> list[str]:
        """MLflow's scoring server for ``model_path`` on ``host:port``."""
        return [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            model_path,
            "--env-manager",
            "local",
            "-h",
            host,
            "-p",
            str(port),
            "--workers",
            "1",
            "-t",
            str(self.request_timeout),
        ]

    def _server_command(self, model_path: str, model_version: str) -> list[str]:
        """The process group leader's command: MLflow's server, behind the capture proxy when capturing."""
        capture = self.capture
        if capture is None:
            return self._command(model_path, self.host, self.port)
        upstream = free_port("127.0.0.1")
        return [
            sys.executable,
            "-m",
            "mlops_core.capture_proxy",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--upstream-port",
            str(upstream),
            "--store-root",
            capture.store_root,
            "--prefix",
            capture.prefix,
            "--target",
            f"local:{capture.env}",
            "--model-name",
            capture.model_name,
            "--model-version",
            model_version,
            *(["--entity-key", capture.entity_key] if capture.entity_key else []),
            "--sample-rate",
            str(capture.sample_rate),
            "--flush-records",
            str(capture.flush_records),
            "--flush-seconds",
            str(capture.flush_seconds),
            "--max-request-mb",
            str(capture.max_request_mb),
            "--timeout",
            str(self.request_timeout + 5),
            "--",
            *self._command(model_path, "127.0.0.1", upstream),
        ]

    def _environment(self, tmp_dir: Path) -> dict[str, str]:
        """The server's environment: the allow-list of ``child_env`` (no Airflow secrets) plus what it needs."""
        from mlflow.environment_variables import MLFLOW_ALLOW_PICKLE_DESERIALIZATION

        return child_environment(
            extra={
                # `mlflow models serve --env-manager local` runs `uvicorn` by name through bash: put the
                # interpreter's own bin folder first so it is the uvicorn of this environment.
                "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)]),
                # Temporary files of the CLI and the server stay in the state folder (removed by stop()).
                "TMPDIR": str(tmp_dir),
                "PYTHONUNBUFFERED": "1",
                # Defence in depth: no mlflow.sklearn load at all in the server (MLflow 3.17 gates
                # every sklearn format, skops included, behind it); our verified loader is not gated.
                MLFLOW_ALLOW_PICKLE_DESERIALIZATION.name: "false",
            }
        )

    def _start(
        self, model_uri: str, model_version: str, startup_timeout: int, model_path: str, model_sha256: str
    ) -> Deployment:
        """Start a server for the verified folder ``model_path`` and wait for ``/ping``."""
        log_path = self.state_dir / f"server-{model_version}.log"
        tmp_dir = self.state_dir / "tmp" / f"v{model_version}"
        shutil.rmtree(tmp_dir, ignore_errors=True)
        tmp_dir.mkdir(parents=True)
        env = self._environment(tmp_dir)
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(
                f"--- {_now()} starting {model_uri} (version {model_version}, verified sha256 {model_sha256}, "
                f"served from {model_path}) on {self.url}\n"
            )
            log.flush()
            started = time.monotonic()
            proc = subprocess.Popen(
                self._server_command(model_path, model_version),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.state_dir,
                start_new_session=True,  # its own process group: stop() kills the proxy, CLI and uvicorn together
            )
        _write_json_atomic(
            self.state_dir / STARTING_FILE, {"pid": proc.pid, "model_uri": model_uri, "model_version": model_version}
        )
        deadline = started + startup_timeout
        while True:
            if proc.poll() is not None:
                self._terminate(proc.pid)
                (self.state_dir / STARTING_FILE).unlink(missing_ok=True)
                raise DeploymentFailed(
                    f"the model server for {model_uri} exited with code {proc.returncode} before answering "
                    f"{self.url}/ping; last lines of {log_path}:\n{_tail(log_path)}"
                )
            if _ping(self.url, timeout=1.0):
                break
            if time.monotonic() > deadline:
                self._terminate(proc.pid)
                (self.state_dir / STARTING_FILE).unlink(missing_ok=True)
                raise DeploymentFailed(
                    f"the model server for {model_uri} did not answer {self.url}/ping within {startup_timeout}s; "
                    f"last lines of {log_path}:\n{_tail(log_path)}"
                )
            time.sleep(0.25)
        elapsed = time.monotonic() - started
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"--- {_now()} answered /ping after {elapsed:.1f}s (pid {proc.pid})\n")
        return Deployment(
            model_uri=model_uri,
            model_version=model_version,
            pid=proc.pid,
            host=self.host,
            port=self.port,
            url=self.url,
            started_at=_now(),
            log_path=str(log_path),
            model_path=model_path,
            model_sha256=model_sha256,
        )

    # ----------------------------------------------------------------- stopping
    def _terminate(self, pid: int, grace: float = 10.0) -> None:
        """SIGTERM the process group led by ``pid`` (MLflow CLI + uvicorn), SIGKILL after ``grace``."""
        terminate_group(pid, grace)

    def _stop_starting(self) -> None:
        starting = _read_json(self.state_dir / STARTING_FILE)
        if starting and pid_alive(int(starting["pid"])) and _is_model_server(int(starting["pid"])):
            self._terminate(int(starting["pid"]))
        (self.state_dir / STARTING_FILE).unlink(missing_ok=True)

    def stop(self) -> Deployment | None:
        """Stop the live server (and any half-started one); return what was stopped.

        ``deployment.json`` is removed; ``history.jsonl`` keeps the record.
        """
        with self._locked():
            self._stop_starting()
            deployment = self._deployment()
            if deployment is None:
                return None
            if self._is_running(deployment):
                self._terminate(deployment.pid)
            (self.state_dir / DEPLOYMENT_FILE).unlink(missing_ok=True)
            shutil.rmtree(self.state_dir / "tmp", ignore_errors=True)
            shutil.rmtree(self.state_dir / MODELS_DIR, ignore_errors=True)
            self._record("stopped", deployment)
            return deployment

    @staticmethod
    def stop_all(state_root: Path | str) -> list[Deployment]:
        """Stop every server whose state folder is under ``state_root`` (``make demo`` cleanup)."""
        stopped: list[Deployment] = []
        root = Path(state_root)
        if not root.exists():
            return stopped
        folders = {p.parent for p in root.rglob(DEPLOYMENT_FILE)} | {p.parent for p in root.rglob(STARTING_FILE)}
        for folder in sorted(folders):
            raw = _read_json(folder / DEPLOYMENT_FILE) or {}
            server = LocalModelServer(folder, raw.get("host", "127.0.0.1"), int(raw.get("port", 0)), tracking_uri="")
            deployment = server.stop()
            if deployment is not None:
                stopped.append(deployment)
        return stopped

    # ----------------------------------------------------------------- scoring
    def smoke_test(self, rows: pd.DataFrame, timeout: float = 30.0) -> dict[str, Any]:
        """Score ``rows`` on the live server: HTTP 200 and one prediction per row, or :class:`SmokeTestFailed`.

        Returns ``{"predictions": [...], "latency_ms": float, "model_version": str, "url": str}``.
        """
        deployment = self._deployment()
        if deployment is None:
            raise SmokeTestFailed(f"nothing is deployed in {self.state_dir}; deploy a model first")
        if len(rows) == 0:
            raise SmokeTestFailed("smoke test needs at least one row")
        body = dataframe_split_payload(rows)
        started = time.perf_counter()
        try:
            status, answer = _http("POST", f"{deployment.url}/invocations", body, timeout=timeout)
        except OSError as exc:
            raise SmokeTestFailed(
                f"{deployment.url}/invocations did not answer ({exc}); version {deployment.model_version}, "
                f"log {deployment.log_path}"
            ) from exc
        latency_ms = (time.perf_counter() - started) * 1000
        text = answer.decode("utf-8", errors="replace")
        if status != 200:
            raise SmokeTestFailed(
                f"{deployment.url}/invocations answered HTTP {status} for {len(rows)} row(s) "
                f"(version {deployment.model_version}): {text[:2000]}"
            )
        try:
            predictions = json.loads(text)["predictions"]
        except (ValueError, KeyError, TypeError) as exc:
            raise SmokeTestFailed(
                f"{deployment.url}/invocations answered something else than predictions: {text[:2000]}"
            ) from exc
        if not isinstance(predictions, list) or len(predictions) != len(rows):
            count = len(predictions) if isinstance(predictions, list) else "no list of"
            raise SmokeTestFailed(f"sent {len(rows)} row(s), got {count} prediction(s): {text[:2000]}")
        return {
            "predictions": predictions,
            "latency_ms": round(latency_ms, 1),
            "model_version": deployment.model_version,
            "url": deployment.url,
        }
