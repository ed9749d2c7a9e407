"""Training compute as a job service: submit a job spec, describe a job by name, stop it.

The seam is shaped on SageMaker's training jobs (``CreateTrainingJob`` / ``DescribeTrainingJob`` /
``StopTrainingJob``), which Azure ML command jobs also fit:

- a job has a **name that is unique forever**: submitting a name that was ever used raises
  :class:`JobNameInUse` (SageMaker's ``ResourceInUse``), whatever became of that job;
- its **inputs are object-store URIs**, one string prefix per channel (as S3 prefixes are), laid
  out for the entrypoint under ``/opt/ml/input/data/<channel>/``; hyperparameters are strings;
- its **outputs go to object storage** under ``<output_uri>/<job name>/``; a description says where
  the model and the metrics are (:attr:`JobDescription.model_uri`, ``metrics_uri``) so whoever
  logs the model reads them through the object store, never from a folder of the machine that ran
  the job;
- :meth:`Compute.describe` and :meth:`Compute.stop` work from any process (a worker, the
  triggerer, a retry on another machine), and no description carries a local detail (a pid, a
  path) that a cloud service could not provide.

:class:`LocalJobCompute` is the ``local`` implementation: each job runs detached from the process
that submitted it, under a small supervisor (``python -m mlops_core.training.local_job``) that
keeps the job's status record in a state folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol, cast, runtime_checkable

from mlops_core.atomic_files import write_atomic
from mlops_core.child_env import child_environment
from mlops_core.processes import runs_with, terminate_group
from mlops_core.storage import LocalObjectStore, ObjectStore

JobStatus = Literal["InProgress", "Completed", "Failed", "Stopping", "Stopped"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"Completed", "Failed", "Stopped"})

# SageMaker's rules, so a name the local backend accepts is one SageMaker accepts too.
JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
CHANNEL_NAME = re.compile(r"^[A-Za-z0-9.\-_]{1,64}$")

# What a Python entrypoint's command starts with; the local backend runs it with its own interpreter.
PYTHON = "python"


class ComputeError(RuntimeError):
    """A request to the compute service was refused."""


class JobNameInUse(ComputeError):
    """A job of that name exists already (job names are unique forever, as in SageMaker)."""


class JobNotFound(ComputeError, LookupError):
    """No job of that name exists."""


# ----------------------------------------------------------------------------- the seam
@dataclass(frozen=True)
class JobSpec:
    """Everything a training job needs, in terms every compute service understands.

    :param name: unique forever; SageMaker's rule (letters, digits and ``-``, at most 63).
    :param entrypoint: the command run in the job's container, e.g.
        ``("python", "-m", "mlops_core.training.entrypoint")`` (SageMaker's ``ContainerEntrypoint``).
    :param inputs: channel name -> object-store URI, a string prefix (``.../train.parquet`` is the
        one object, ``.../train/`` everything under that folder).
    :param output_uri: prefix the job writes under: ``<output_uri>/<name>/model/`` and
        ``<output_uri>/<name>/output/data/``.
    :param hyperparameters: string values (as SageMaker passes them; a backend with a length limit
        refuses longer values when the job is submitted).
    :param max_runtime_seconds: the job is stopped after this (status ``Stopped``).
    :param image: container image (cloud backends); ``None`` where the backend needs none.
    :param instance_type: machine type (cloud backends).
    :param instance_count: number of machines.
    """

    name: str
    entrypoint: tuple[str, ...]
    inputs: Mapping[str, str]
    output_uri: str
    hyperparameters: Mapping[str, str] = field(default_factory=dict)
    max_runtime_seconds: int = 3600
    image: str | None = None
    instance_type: str | None = None
    instance_count: int = 1

    def __post_init__(self) -> None:
        problems = []
        if not JOB_NAME.match(self.name):
            problems.append(
                f"job name {self.name!r} must be 1-63 letters, digits and '-', starting and ending with a "
                f"letter or digit (SageMaker's rule)"
            )
        if not self.entrypoint or not all(isinstance(a, str) and a for a in self.entrypoint):
            problems.append(f"entrypoint must be a non-empty command, got {self.entrypoint!r}")
        problems += [
            f"channel name {c!r} must match {CHANNEL_NAME.pattern}" for c in self.inputs if not CHANNEL_NAME.match(c)
        ]
        problems += [
            f"hyperparameter {k!r} must be a string (got {type(v).__name__})"
            for k, v in self.hyperparameters.items()
            if not isinstance(k, str) or not isinstance(v, str)
        ]
        if self.max_runtime_seconds < 1:
            problems.append(f"max_runtime_seconds must be >= 1, got {self.max_runtime_seconds}")
        if self.instance_count < 1:
            problems.append(f"instance_count must be >= 1, got {self.instance_count}")
        if problems:
            raise ValueError("invalid job spec: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["entrypoint"] = list(self.entrypoint)
        raw["inputs"] = dict(self.inputs)
        raw["hyperparameters"] = dict(self.hyperparameters)
        return raw

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> JobSpec:
        return cls(**{**raw, "entrypoint": tuple(raw["entrypoint"])})


@dataclass(frozen=True)
class JobDescription:
    """What a compute service says about one job (SageMaker's ``DescribeTrainingJob``, reduced).

    ``model_uri`` is a prefix ending in ``/`` holding the model's files (``model.skops``,
    ``model_meta.json``) or a ``.tar.gz`` archive of them (SageMaker's ``model.tar.gz``);
    ``metrics_uri`` the ``metrics.json`` object or an archive holding it (SageMaker's
    ``output.tar.gz``); both are set once the job is ``Completed``
    (:func:`download_outputs`, :func:`read_metrics` read either form). ``seconds`` is the time it has run.
    """

    name: str
    status: JobStatus
    failure_reason: str | None = None
    model_uri: str | None = None
    metrics_uri: str | None = None
    seconds: float = 0.0
    secondary_status: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@runtime_checkable
class Compute(Protocol):
    """A training-job service. Implementations: :class:`LocalJobCompute`; SageMaker and Azure ML next."""

    def submit(self, spec: JobSpec) -> JobDescription:
        """Start the job; :class:`JobNameInUse` when the name was ever used."""
        ...

    def describe(self, name: str) -> JobDescription:
        """The job's status now; :class:`JobNotFound` for a name never submitted."""
        ...

    def stop(self, name: str) -> None:
        """Ask the job to stop (it goes ``Stopping``, then ``Stopped``); a finished job is left as it is."""
        ...

    def log_lines(self, name: str, skip: int = 0) -> list[str]:
        """The job's complete log lines after the first ``skip`` (for streaming into a task log)."""
        ...


# ----------------------------------------------------------------------------- URIs and keys
def object_key(store: ObjectStore, uri: str) -> str:
    """The key of ``uri`` in ``store``; ``ValueError`` when the URI is not inside the store.

    The answer is checked by a round trip (``store.uri(key) == uri``), so a URI that only looks
    like it is inside the store (another bucket, ``..``) is refused.
    """
    root = store.uri().rstrip("/")
    if uri.rstrip("/") == root:
        return ""
    if uri.startswith(root + "/"):
        rest = uri[len(root) + 1 :]
        for key in dict.fromkeys((rest, urllib.parse.unquote(rest))):
            with contextlib.suppress(ValueError):
                if store.uri(key).rstrip("/") == uri.rstrip("/"):
                    return key
    raise ValueError(f"{uri!r} is not an object of the store at {store.uri()!r}")


def relative_key(key: str, prefix: str) -> str:
    """Where the object ``key`` found under the string prefix ``prefix`` lands in a channel folder.

    As for an S3 prefix: the part after the prefix's last ``/`` stays, so ``ts/train.parquet``
    under prefix ``ts/train.parquet`` is ``train.parquet`` and ``ts/train/part-0.parquet`` under
    ``ts/train/`` is ``part-0.parquet``.
    """
    folder = prefix.rpartition("/")[0]
    relative = key[len(folder) + 1 :] if folder else key
    path = PurePosixPath(relative)
    if not relative or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"object key {key!r} does not stay inside its channel")
    return relative


def download_prefix(store: ObjectStore, uri: str, destination: Path) -> list[Path]:
    """Copy every object under the string prefix ``uri`` into ``destination`` (see :func:`relative_key`)."""
    prefix = object_key(store, uri)
    written = []
    for key in store.list_keys(prefix):
        target = destination / relative_key(key, prefix)
        write_atomic(target, store.get_bytes(key), fsync=False)
        written.append(target)
    return written


def upload_folder(store: ObjectStore, folder: Path, uri: str) -> list[str]:
    """Put every file under ``folder`` below ``uri`` (a prefix), keeping relative paths; returns the keys."""
    prefix = object_key(store, uri).rstrip("/")
    keys = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key = f"{prefix}/{path.relative_to(folder).as_posix()}" if prefix else path.relative_to(folder).as_posix()
        store.put_bytes(key, path.read_bytes())
        keys.append(key)
    return keys


# SageMaker hands a job's outputs back as archives: /opt/ml/model as model.tar.gz, /opt/ml/output/data
# as output.tar.gz (where metrics.json is). A model_uri / metrics_uri ending in this is such an archive.
ARCHIVE_SUFFIX = ".tar.gz"
METRICS_MEMBER = "metrics.json"
MAX_ARCHIVE_BYTES = 2 * 1024**3  # what an archive may unpack to: a model is MBs, never GBs


def extract_archive(store: ObjectStore, uri: str, destination: Path) -> list[Path]:
    """Unpack the ``.tar.gz`` object ``uri`` into ``destination``: regular files and folders only.

    A job's archive is as untrusted as any artifact: members that are links, devices or absolute,
    that climb out with ``..``, or that unpack beyond :data:`MAX_ARCHIVE_BYTES` are refused
    (``ValueError``) before anything is written.
    """
    import io
    import tarfile

    data = store.get_foreign_bytes(object_key(store, uri))  # written by the compute service, not by us
    destination.mkdir(parents=True, exist_ok=True)
    written = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = tar.getmembers()
        total = 0
        for member in members:
            path = PurePosixPath(member.name)
            if path.is_absolute() or ".." in path.parts or not (member.isfile() or member.isdir()):
                raise ValueError(f"{uri}: refusing archive member {member.name!r} (only plain files inside it)")
            total += member.size
        if total > MAX_ARCHIVE_BYTES:
            raise ValueError(f"{uri}: unpacks to {total} bytes, over the limit of {MAX_ARCHIVE_BYTES}")
        tar.extractall(destination, members=members, filter="data")
        written = [destination / m.name for m in members if m.isfile()]
    return written


def download_outputs(store: ObjectStore, uri: str, destination: Path) -> list[Path]:
    """A job's output files into ``destination``: a ``.tar.gz`` archive unpacked, or a prefix copied."""
    if uri.endswith(ARCHIVE_SUFFIX):
        return extract_archive(store, uri, destination)
    return download_prefix(store, uri, destination)


def read_metrics(store: ObjectStore, metrics_uri: str) -> dict[str, Any]:
    """A job's metrics: the ``metrics.json`` object, or the member of that name in an output archive."""
    if metrics_uri.endswith(ARCHIVE_SUFFIX):
        with tempfile.TemporaryDirectory(prefix="mlops-job-output-") as tmp:
            extract_archive(store, metrics_uri, Path(tmp))
            metrics_file = Path(tmp) / METRICS_MEMBER
            if not metrics_file.is_file():
                raise ValueError(f"{metrics_uri} holds no {METRICS_MEMBER}")
            raw = metrics_file.read_bytes()
    else:
        raw = store.get_bytes(object_key(store, metrics_uri))
    metrics = json.loads(raw)
    if not isinstance(metrics, dict):
        raise ValueError(f"{metrics_uri}: metrics are not a JSON object")
    return metrics


def job_output_uris(spec: JobSpec) -> tuple[str, str]:
    """``(model_uri, metrics_uri)`` of a completed job: the model's folder (a prefix ending in ``/``)
    and the ``metrics.json`` object, under ``<output_uri>/<name>/``."""
    base = f"{spec.output_uri.rstrip('/')}/{spec.name}"
    return f"{base}/model/", f"{base}/output/data/metrics.json"


# ----------------------------------------------------------------------------- local
SPEC_FILE = "spec.json"
STATUS_FILE = "status.json"
LAUNCH_FILE = "launch.json"
STOP_FILE = "stop-requested"
LOG_FILE = "job.log"
ML_ROOT = "ml"
SUPERVISOR_MODULE = "mlops_core.training.local_job"
# A submitted job whose supervisor has not said its pid after this long never started.
STARTUP_GRACE_SECONDS = 60.0


def read_record(path: Path) -> dict[str, Any] | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return raw if isinstance(raw, dict) else None


def write_record(path: Path, record: Mapping[str, Any]) -> None:
    write_atomic(path, json.dumps(record, indent=2, sort_keys=True))


class LocalJobCompute:
    """Training jobs as detached local processes, described and stopped from any process.

    Each job has a folder ``<state_dir>/<name>/``: ``spec.json`` (what was submitted),
    ``status.json`` (the status record, always replaced atomically: by :meth:`submit` once, then by
    the job's supervisor, or by the first :meth:`describe` that finds the supervisor gone without an
    outcome), ``launch.json`` (the supervisor's pid), ``job.log`` (the job's output),
    ``stop-requested`` (written by :meth:`stop`) and ``ml/`` (the job's ``/opt/ml``). The folder
    appears in one ``rename``, so a name is claimed exactly once and never reused: that is how a
    second submission of a name is refused.

    The supervisor (``python -m mlops_core.training.local_job``) leads its own session, so a task
    process that ends (a deferral, a killed worker) does not take the job with it. It lays out
    ``ml/`` from the input URIs through the object store, runs the entrypoint (a Python command,
    run with ``python``, in its own process group, with the allow-listed environment of
    :mod:`mlops_core.child_env`), stops it at ``max_runtime_seconds`` or on :meth:`stop`, uploads
    the model and metrics under the output URI through the object store, and records the outcome.

    :param state_dir: where job folders live (``MLOPS_HOME/jobs``).
    :param store: the object store the input and output URIs point into (a local folder).
    :param python: the interpreter that runs Python entrypoints; default this one.
    """

    def __init__(self, state_dir: str | Path, store: LocalObjectStore, python: str | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.store = store
        self.python = python or sys.executable

    def __repr__(self) -> str:
        return f"LocalJobCompute({str(self.state_dir)!r}, {self.store!r})"

    def job_dir(self, name: str) -> Path:
        if not JOB_NAME.match(name):
            raise JobNotFound(f"no training job {name!r}: not a valid job name")
        return self.state_dir / name

    # ------------------------------------------------------------------ submit
    def submit(self, spec: JobSpec) -> JobDescription:
        if spec.entrypoint[0] != PYTHON:
            raise ValueError(
                f"the local compute backend runs Python entrypoints ('python', ...), got {list(spec.entrypoint)}"
            )
        for uri in [*spec.inputs.values(), spec.output_uri]:
            object_key(self.store, uri)  # refuse URIs outside the store before anything starts
        self.state_dir.mkdir(parents=True, exist_ok=True)
        folder = self.job_dir(spec.name)
        in_use = JobNameInUse(
            f"a training job named {spec.name!r} exists already ({folder}); job names are unique forever, "
            f"so submit the next attempt under a new name"
        )
        if folder.exists():
            raise in_use
        staging = Path(tempfile.mkdtemp(prefix=f".submit-{spec.name}-", dir=self.state_dir))
        try:
            write_record(staging / SPEC_FILE, spec.to_dict())
            write_record(
                staging / STATUS_FILE,
                {
                    "name": spec.name,
                    "status": "InProgress",
                    "secondary_status": "Starting",
                    "submitted_at": time.time(),
                },
            )
            (staging / LOG_FILE).touch()
            try:
                os.rename(staging, folder)  # the claim: a concurrent submit finds a non-empty folder and fails
            except OSError as exc:
                if folder.exists():
                    raise in_use from exc
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        command = [
            sys.executable,
            "-m",
            SUPERVISOR_MODULE,
            str(folder),
            "--store-root",
            str(self.store.root),
            "--python",
            self.python,
        ]
        with open(folder / LOG_FILE, "ab") as log:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=folder,
                env=child_environment(extra={"PYTHONUNBUFFERED": "1"}),
                start_new_session=True,  # outlives the task process that submitted it
                close_fds=True,
            )
        write_record(folder / LAUNCH_FILE, {"pid": proc.pid, "command": command})
        return self.describe(spec.name)

    # ------------------------------------------------------------------ describe
    def _record(self, name: str) -> tuple[Path, dict[str, Any] | None]:
        folder = self.job_dir(name)
        if not folder.is_dir():
            raise JobNotFound(f"no training job {name!r} in {self.state_dir}")
        return folder, read_record(folder / STATUS_FILE)

    def _supervisor_pid(self, folder: Path, record: Mapping[str, Any]) -> int | None:
        pid = record.get("pid") or (read_record(folder / LAUNCH_FILE) or {}).get("pid")
        return int(pid) if pid else None

    def _supervisor_alive(self, folder: Path, pid: int | None) -> bool:
        return pid is not None and runs_with(pid, [SUPERVISOR_MODULE, str(folder)])

    def describe(self, name: str) -> JobDescription:
        folder, record = self._record(name)
        if record is None:
            return JobDescription(
                name,
                "Failed",
                failure_reason=f"{folder} has no status record (an interrupted submission or an older layout)",
            )
        status = str(record.get("status"))
        if status not in TERMINAL_STATUSES:
            pid = self._supervisor_pid(folder, record)
            if self._supervisor_alive(folder, pid):
                status = "Stopping" if (folder / STOP_FILE).exists() else status
            elif pid is not None or time.time() - float(record.get("submitted_at") or 0) >= STARTUP_GRACE_SECONDS:
                record = self._settle(folder, pid)
                status = str(record.get("status"))
        started = float(record.get("started_at") or record.get("submitted_at") or time.time())
        ended = record.get("ended_at")
        return JobDescription(
            name=name,
            status=cast(JobStatus, status),
            failure_reason=record.get("failure_reason"),
            model_uri=record.get("model_uri"),
            metrics_uri=record.get("metrics_uri"),
            seconds=round((float(ended) if ended else time.time()) - started, 3),
            secondary_status=record.get("secondary_status"),
        )

    def _settle(self, folder: Path, pid: int | None) -> dict[str, Any]:
        """Record the outcome of a job whose supervisor is gone without having recorded one.

        The first observer writes it: ``Stopped`` when a stop was asked for (a SIGTERM that came
        before the supervisor's handler, say), else ``Failed``; an entrypoint the supervisor left
        behind is stopped, so a job that is reported ended has nothing running.
        """
        record = read_record(folder / STATUS_FILE) or {}
        if record.get("status") in TERMINAL_STATUSES:  # it finished between our two reads
            return record
        child = record.get("entrypoint_pid")
        if child and runs_with(int(child), [str(folder / ML_ROOT)]):
            terminate_group(int(child))
        if (folder / STOP_FILE).exists():
            status, reason = "Stopped", "stopped on request"
        elif pid is None:
            status, reason = "Failed", f"the job never started within {STARTUP_GRACE_SECONDS:.0f}s of its submission"
        else:
            status = "Failed"
            reason = (
                f"the job's supervisor (pid {pid}) ended without recording an outcome; its log: {folder / LOG_FILE}"
            )
        record.update(status=status, secondary_status=status, failure_reason=reason, ended_at=time.time())
        write_record(folder / STATUS_FILE, record)
        return record

    # ------------------------------------------------------------------ stop
    def stop(self, name: str) -> None:
        folder, record = self._record(name)
        if record is None or record.get("status") in TERMINAL_STATUSES:
            return
        write_atomic(folder / STOP_FILE, f"{time.time()}\n")
        pid = self._supervisor_pid(folder, record)
        if pid is not None and self._supervisor_alive(folder, pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # the supervisor stops the entrypoint and records Stopped
        else:
            self.describe(name)  # no supervisor: record the outcome (and stop what it left behind)

    # ------------------------------------------------------------------ logs
    def log_lines(self, name: str, skip: int = 0) -> list[str]:
        folder, _ = self._record(name)
        try:
            text = (folder / LOG_FILE).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        complete = text[: text.rfind("\n") + 1]
        return complete.splitlines()[skip:]

    # ------------------------------------------------------------------ cleanup
    @classmethod
    def stop_all(cls, state_dir: str | Path, wait_seconds: float = 30.0) -> list[str]:
        """Stop every job still running under ``state_dir`` and wait for them (``make up``'s Ctrl-C,
        ``make demo``'s cleanup); the names of the jobs that were running."""
        root = Path(state_dir)
        if not root.is_dir():
            return []
        compute = cls(root, LocalObjectStore(root))  # describe and stop never touch the store
        running = []
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and JOB_NAME.match(p.name)):
            with contextlib.suppress(JobNotFound):
                if not compute.describe(folder.name).terminal:
                    compute.stop(folder.name)
                    running.append(folder.name)
        deadline = time.monotonic() + wait_seconds
        while running and time.monotonic() < deadline and not all(compute.describe(n).terminal for n in running):
            time.sleep(0.2)
        return running
