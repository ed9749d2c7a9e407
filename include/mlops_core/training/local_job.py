"""The supervisor of one local training job (started by :class:`mlops_core.compute.LocalJobCompute`).

``python -m mlops_core.training.local_job <job folder> --store-root DIR [--python EXE]`` does what
SageMaker does around a training container, on this machine:

1. copies each input channel's objects (through the object store) to ``ml/input/data/<channel>/``
   and writes ``ml/input/config/hyperparameters.json``;
2. runs the entrypoint with ``--ml-root ml`` in its own process group, with the allow-listed
   environment of :mod:`mlops_core.child_env`; its output goes to the job's log;
3. stops it at ``max_runtime_seconds`` or when asked (SIGTERM, or the ``stop-requested`` file);
4. uploads ``ml/model/`` and ``ml/output/data/metrics.json`` under ``<output_uri>/<name>/``
   through the object store;
5. records the outcome in ``status.json`` (atomically), with the entrypoint's own failure reason
   (``ml/output/failure``) when it failed; a completed job's ``ml/`` is removed (its outputs are
   in the object store, its inputs came from there), a failed one's is kept for a look.

Nothing here imports pandas or scikit-learn: the entrypoint does, in its own process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from mlops_core.atomic_files import write_atomic
from mlops_core.child_env import child_environment
from mlops_core.compute import (
    ML_ROOT,
    SPEC_FILE,
    STATUS_FILE,
    STOP_FILE,
    JobSpec,
    download_prefix,
    job_output_uris,
    object_key,
    read_record,
    upload_folder,
    write_record,
)
from mlops_core.processes import terminate_group
from mlops_core.storage import LocalObjectStore

log = logging.getLogger("mlops_core.training.local_job")

POLL_SECONDS = 0.2


class _Outcome(Exception):
    """Ends the job early with a status and a reason."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Supervisor:
    def __init__(self, folder: Path, store: LocalObjectStore, python: str) -> None:
        self.folder = folder
        self.store = store
        self.python = python
        raw = read_record(folder / SPEC_FILE)
        if raw is None:
            raise FileNotFoundError(f"{folder / SPEC_FILE} is missing or unreadable")
        self.spec = JobSpec.from_dict(raw)
        self.ml_root = folder / ML_ROOT
        self.record: dict[str, Any] = read_record(folder / STATUS_FILE) or {"name": self.spec.name}
        self.stop_requested = threading.Event()
        self.deadline = 0.0

    def _save(self, **changes: Any) -> None:
        self.record.update(changes)
        write_record(self.folder / STATUS_FILE, self.record)

    def _check_stop(self) -> None:
        if self.stop_requested.is_set() or (self.folder / STOP_FILE).exists():
            raise _Outcome("Stopped", "stopped on request")
        if time.time() > self.deadline:
            raise _Outcome(
                "Stopped", f"timed out after {self.spec.max_runtime_seconds}s (the job's max_runtime_seconds)"
            )

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stop_requested.set()

    def run(self) -> int:
        started = time.time()
        self.deadline = started + self.spec.max_runtime_seconds
        self._save(pid=os.getpid(), started_at=started, secondary_status="Downloading")
        log.info("training job %s started (max runtime %ss)", self.spec.name, self.spec.max_runtime_seconds)
        try:
            self._lay_out()
            code = self._train()
            if code != 0:
                failure = self.ml_root / "output" / "failure"
                reason = failure.read_text(encoding="utf-8").strip() if failure.is_file() else ""
                raise _Outcome("Failed", reason or f"the entrypoint exited with code {code}")
            model_uri, metrics_uri = self._upload()
        except _Outcome as outcome:
            log.info("training job %s %s: %s", self.spec.name, outcome.status.lower(), outcome.reason)
            self._save(
                status=outcome.status,
                secondary_status=outcome.status,
                failure_reason=outcome.reason,
                ended_at=time.time(),
            )
            return 0 if outcome.status == "Stopped" else 1
        except Exception as exc:  # anything else fails the job with its reason, never silently
            log.exception("training job %s failed", self.spec.name)
            self._save(
                status="Failed",
                secondary_status="Failed",
                failure_reason=f"{type(exc).__name__}: {exc}",
                ended_at=time.time(),
            )
            return 1
        self._save(
            status="Completed",
            secondary_status="Completed",
            model_uri=model_uri,
            metrics_uri=metrics_uri,
            ended_at=time.time(),
        )
        # Everything the job made is in the object store now; a failed job's folder stays for a look.
        shutil.rmtree(self.ml_root, ignore_errors=True)
        log.info("training job %s completed in %.1fs", self.spec.name, time.time() - started)
        return 0

    def _lay_out(self) -> None:
        shutil.rmtree(self.ml_root, ignore_errors=True)
        for channel, uri in sorted(self.spec.inputs.items()):
            self._check_stop()
            files = download_prefix(self.store, uri, self.ml_root / "input" / "data" / channel)
            log.info("channel %s: %d object(s) from %s", channel, len(files), uri)
        config = self.ml_root / "input" / "config" / "hyperparameters.json"
        write_atomic(config, json.dumps(dict(self.spec.hyperparameters), indent=2, sort_keys=True), fsync=False)
        self._check_stop()

    def _train(self) -> int:
        command = [self.python, *self.spec.entrypoint[1:], "--ml-root", str(self.ml_root)]
        log.info("running %s", " ".join(command))
        sys.stdout.flush()
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            env=child_environment(extra={"PYTHONUNBUFFERED": "1"}),
            cwd=self.ml_root,
            start_new_session=True,  # its own group: stopping it never stops this supervisor
        )
        self._save(entrypoint_pid=proc.pid, secondary_status="Training")
        try:
            while proc.poll() is None:
                self._check_stop()
                self.stop_requested.wait(POLL_SECONDS)
        except _Outcome:
            terminate_group(proc.pid)
            proc.wait()
            raise
        return proc.returncode

    def _upload(self) -> tuple[str, str]:
        self._save(secondary_status="Uploading")
        model_uri, metrics_uri = job_output_uris(self.spec)
        metrics = self.ml_root / "output" / "data" / "metrics.json"
        model_dir = self.ml_root / "model"
        if not metrics.is_file() or not model_dir.is_dir() or not any(model_dir.iterdir()):
            raise _Outcome("Failed", f"the entrypoint exited 0 but left no model in {model_dir} or no {metrics}")
        keys = upload_folder(self.store, model_dir, model_uri)
        self.store.put_bytes(object_key(self.store, metrics_uri), metrics.read_bytes())
        log.info("uploaded %d model file(s) to %s and the metrics to %s", len(keys), model_uri, metrics_uri)
        return model_uri, metrics_uri


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlops_core.training.local_job", description=__doc__.splitlines()[0]
    )
    parser.add_argument("job_dir", help="the job's folder (spec.json, status.json)")
    parser.add_argument("--store-root", required=True, help="root of the local object store")
    parser.add_argument("--python", default=sys.executable, help="interpreter for Python entrypoints")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    supervisor = Supervisor(Path(args.job_dir), LocalObjectStore(args.store_root), args.python)
    signal.signal(signal.SIGTERM, supervisor.on_signal)
    signal.signal(signal.SIGINT, supervisor.on_signal)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
