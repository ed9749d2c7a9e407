"""Backends chosen per environment in ``include/conf/<env>.yaml`` (``backends:``), never in a DAG.

Each concern sits behind a small interface:

- object storage: :class:`mlops_core.storage.ObjectStore`
- training compute: :class:`ComputeBackend` (runs the training entrypoint on an ``/opt/ml`` root)
- registry mirror: :class:`mlops_core.registry_mirror.RegistryMirror` (MLflow is always the
  registry; a mirror copies versions to a cloud registry and follows the promotion gate)
- serving: :class:`mlops_core.serving_target.Serving` (deploy, what is live, verify, smoke test,
  roll back)

Only ``local`` is built so far. ``aws`` and ``azure`` slot in here without touching ``dags/``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from mlops_core.child_env import child_environment
from mlops_core.storage import LocalObjectStore, ObjectStore

if TYPE_CHECKING:
    from mlops_core.contract import DatasetContract
    from mlops_core.features import FeatureRepository
    from mlops_core.registry import ModelRegistry
    from mlops_core.registry_mirror import RegistryMirror
    from mlops_core.serving import LocalModelServer
    from mlops_core.serving_target import Serving
    from mlops_core.settings import Settings

log = logging.getLogger(__name__)


class BackendNotAvailable(RuntimeError):
    """The configured backend is not built (yet) or not usable on this machine."""


def _not_built(concern: str, name: str) -> BackendNotAvailable:
    return BackendNotAvailable(
        f"backends.{concern} = {name!r} is not available in this version; use 'local' "
        f"(set it in include/conf/<env>.yaml)"
    )


# ----------------------------------------------------------------------------- storage
def object_store(settings: Settings) -> ObjectStore:
    if settings.backends.storage == "local":
        return LocalObjectStore(settings.storage_root)
    raise _not_built("storage", settings.backends.storage)


# ----------------------------------------------------------------------------- compute
@dataclass(frozen=True)
class TrainingJobResult:
    job_name: str
    status: str  # Completed | Failed | Stopped
    ml_root: str
    seconds: float
    failure_reason: str | None = None


class ComputeBackend(Protocol):
    def run(self, job_name: str, ml_root: Path, timeout_seconds: float) -> TrainingJobResult: ...
    def stop(self, job_name: str) -> None: ...


class LocalSubprocessCompute:
    """Runs ``python -m mlops_core.training.entrypoint --ml-root <root>`` in a subprocess.

    The child gets its own process group so that :meth:`stop` (called from an operator's
    ``on_kill``) stops it and everything it started. Output streams into our log. Its environment
    is the allow-list of :func:`mlops_core.child_env.child_environment` (none of Airflow's
    secrets): the entrypoint needs only its arguments, ``PATH``/``HOME``-style basics and
    ``PYTHONPATH`` when the code is not installed.
    """

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable
        self._procs: dict[str, subprocess.Popen[str]] = {}

    def run(self, job_name: str, ml_root: Path, timeout_seconds: float) -> TrainingJobResult:
        cmd = [self.python, "-m", "mlops_core.training.entrypoint", "--ml-root", str(ml_root)]
        log.info("Starting local training job %s: %s", job_name, " ".join(cmd))
        start = time.monotonic()
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env=child_environment(extra={"PYTHONUNBUFFERED": "1"}),
        )
        self._procs[job_name] = proc
        # A watchdog stops the job at the deadline even if it prints nothing.
        timed_out = threading.Event()

        def on_deadline() -> None:
            timed_out.set()
            self.stop(job_name)

        watchdog = threading.Timer(timeout_seconds, on_deadline)
        watchdog.daemon = True
        watchdog.start()
        try:
            if proc.stdout is None:  # pragma: no cover - stdout=PIPE always sets it
                raise RuntimeError(f"training job {job_name}: no output pipe")
            for line in proc.stdout:
                log.info("[%s] %s", job_name, line.rstrip())
            code = proc.wait()
        finally:
            watchdog.cancel()
            self._procs.pop(job_name, None)
        seconds = time.monotonic() - start
        if timed_out.is_set():
            return TrainingJobResult(
                job_name, "Stopped", str(ml_root), seconds, f"timed out after {timeout_seconds:.0f}s"
            )
        if code == 0:
            return TrainingJobResult(job_name, "Completed", str(ml_root), seconds)
        failure = Path(ml_root) / "output" / "failure"
        reason = failure.read_text(encoding="utf-8").strip() if failure.is_file() else f"exit code {code}"
        return TrainingJobResult(job_name, "Failed", str(ml_root), seconds, reason)

    def stop(self, job_name: str) -> None:
        proc = self._procs.get(job_name)
        if proc is None or proc.poll() is not None:
            return
        log.warning("Stopping local training job %s (pid %s)", job_name, proc.pid)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def compute_backend(settings: Settings) -> ComputeBackend:
    if settings.backends.compute == "local":
        return LocalSubprocessCompute()
    raise _not_built("compute", settings.backends.compute)


# ----------------------------------------------------------------------------- registry
def model_registry(settings: Settings) -> ModelRegistry:
    """The MLflow registry of the environment: the system of record, whatever the mirror."""
    from mlops_core.registry import ModelRegistry

    return ModelRegistry(settings.registry.tracking_uri, settings.registry.artifact_root, settings.registry.experiment)


def registry_mirror(settings: Settings) -> RegistryMirror:
    from mlops_core.registry_mirror import NoMirror

    if settings.backends.registry_mirror in ("none", None):
        return NoMirror()
    raise _not_built("registry_mirror", settings.backends.registry_mirror)


# ----------------------------------------------------------------------------- serving
def local_model_server(settings: Settings) -> LocalModelServer:
    """The environment's local scoring server itself (local tooling: ``make up``, the demo, tests)."""
    from mlops_core.serving import LocalModelServer

    return LocalModelServer(
        state_dir=settings.home / "serving" / settings.env,
        host=settings.serving.host,
        port=int(settings.serving.port),
        tracking_uri=settings.registry.tracking_uri,
    )


def serving_backend(settings: Settings) -> Serving:
    from mlops_core.serving_target import LocalServing

    if settings.backends.serving == "local":
        return LocalServing(local_model_server(settings), settings.env)
    raise _not_built("serving", settings.backends.serving)


# ----------------------------------------------------------------------------- features
def feature_repository(settings: Settings, contract: DatasetContract | None = None) -> FeatureRepository:
    from mlops_core.features import FeatureRepository

    contract = contract or settings.load_contract()
    if settings.backends.storage != "local":
        raise _not_built("storage (feature store offline data)", settings.backends.storage)
    root = settings.home / "feature_repo" / settings.features.project
    return FeatureRepository(
        contract,
        repo_dir=root,
        offline_dir=str(Path(settings.storage_root) / "features" / contract.name),
        project=settings.features.project,
        ttl_days=settings.features.ttl_days,
    )
