"""The SageMaker training container, played by the tests against the moto server.

moto records a training job but runs nothing. :class:`SageMakerTrainingContainer` does what
SageMaker does with a ``File``-mode job, on this machine:

1. downloads every input channel (``S3Prefix`` data sources) to ``/opt/ml/input/data/<channel>/``
   of a scratch ``/opt/ml`` root, keeping each object's path below the prefix (SageMaker's layout),
   and writes the job's hyperparameters to ``/opt/ml/input/config/hyperparameters.json``;
2. runs the image's ``ContainerEntrypoint`` (``python`` is this interpreter) with ``--ml-root``
   pointing at the scratch root, stopped at ``StoppingCondition.MaxRuntimeInSeconds``;
3. packs ``/opt/ml/model`` into ``<S3OutputPath>/<job>/output/model.tar.gz`` and
   ``/opt/ml/output/data`` into ``<S3OutputPath>/<job>/output/output.tar.gz``, as SageMaker does;
4. ends the job ``Completed``, or ``Failed`` with ``AlgorithmError: <the output/failure file>``
   (SageMaker's own prefix), or ``Stopped`` when ``StopTrainingJob`` asked for it meanwhile.

``start()`` runs it in the background: each ``InProgress`` job created after the start is taken once
(jobs other tests of the session left behind are not its business), so a test that
submits through the real code path sees the job run, end and leave its outputs where SageMaker
would. What it does not reproduce: instance provisioning, image pulls, spot interruptions,
distributed training (``InstanceCount`` > 1 runs one process), SageMaker's own logs in CloudWatch.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tests.moto_server import MotoServer

log = logging.getLogger(__name__)


def _split(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


class SageMakerTrainingContainer:
    def __init__(self, moto: MotoServer, poll_seconds: float = 0.2) -> None:
        self.moto = moto
        self.poll_seconds = poll_seconds
        self.ran: list[str] = []
        self._taken: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._since: Any = None

    # ----------------------------------------------------------------- background
    def start(self) -> SageMakerTrainingContainer:
        from moto.core.utils import utcnow

        self._since = utcnow()
        self._thread = threading.Thread(target=self._loop, name="sagemaker-container", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _loop(self) -> None:
        from moto.sagemaker.models import sagemaker_backends

        from tests.moto_server import ACCOUNT

        while not self._stop.is_set():
            jobs = sagemaker_backends[ACCOUNT][self.moto.region].training_jobs
            for name, job in list(jobs.items()):
                new = job.creation_time >= self._since
                if new and name not in self._taken and job.training_job_status == "InProgress":
                    self._taken.add(name)
                    try:
                        self.run(name)
                    except Exception as exc:  # the job fails, the container keeps serving others
                        log.exception("training job %s could not run", name)
                        self.moto.finish_training_job(name, "Failed", f"ClientError: {type(exc).__name__}: {exc}")
            self._stop.wait(self.poll_seconds)

    # ----------------------------------------------------------------- one job
    def run(self, name: str) -> str:
        """Run one ``InProgress`` job to its end; returns its final status."""
        job = self.moto.training_job(name)
        s3 = self.moto.client("s3")
        with tempfile.TemporaryDirectory(prefix=f"opt-ml-{name}-") as tmp:
            root = Path(tmp)
            for channel in job.input_data_config or []:
                self._download(
                    s3, channel["DataSource"]["S3DataSource"]["S3Uri"], root / "input" / "data" / channel["ChannelName"]
                )
            config = root / "input" / "config"
            config.mkdir(parents=True)
            (config / "hyperparameters.json").write_text(json.dumps(job.hyper_parameters or {}))
            entrypoint = list((job.algorithm_specification or {}).get("ContainerEntrypoint") or [])
            if not entrypoint:
                raise ValueError(f"job {name} has no ContainerEntrypoint (the image's default is not modelled here)")
            command = [sys.executable if entrypoint[0] in ("python", "python3") else entrypoint[0], *entrypoint[1:]]
            limit = float((job.stopping_condition or {}).get("MaxRuntimeInSeconds", 86400))
            status, reason = self._execute(name, [*command, "--ml-root", str(root)], limit, root)
            if status == "Completed":
                output = job.output_data_config["S3OutputPath"].rstrip("/")
                self._upload_tar(s3, root / "model", f"{output}/{name}/output/model.tar.gz")
                self._upload_tar(s3, root / "output" / "data", f"{output}/{name}/output/output.tar.gz")
        self.moto.finish_training_job(name, status, reason)
        self.ran.append(name)
        return status

    def _execute(self, name: str, command: list[str], limit: float, root: Path) -> tuple[str, str | None]:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + limit
        while proc.poll() is None:
            job = self.moto.training_job(name)
            if job.training_job_status == "Stopping" or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                why = None if job.training_job_status == "Stopping" else f"MaxRuntimeExceeded: {limit:.0f}s"
                return ("Stopped", why)
            time.sleep(0.1)
        out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        log.info("training job %s exited %s:\n%s", name, proc.returncode, out[-4000:])
        if proc.returncode == 0:
            return "Completed", None
        failure = root / "output" / "failure"
        text = failure.read_text(errors="replace").strip() if failure.is_file() else f"exit code {proc.returncode}"
        return "Failed", f"AlgorithmError: {text}"[:1024]

    @staticmethod
    def _download(s3: Any, uri: str, dest: Path) -> None:
        bucket, prefix = _split(uri)
        base = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
        dest.mkdir(parents=True, exist_ok=True)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                target = dest / item["Key"][len(base) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, item["Key"], str(target))

    @staticmethod
    def _upload_tar(s3: Any, folder: Path, uri: str) -> None:
        bucket, key = _split(uri)
        with tempfile.NamedTemporaryFile(suffix=".tar.gz") as tmp:
            with tarfile.open(tmp.name, "w:gz") as tar:
                if folder.is_dir():
                    for path in sorted(folder.rglob("*")):
                        tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
            s3.upload_file(tmp.name, bucket, key)
