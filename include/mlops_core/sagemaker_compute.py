"""Training jobs on Amazon SageMaker: the :class:`~mlops_core.compute.Compute` of ``backends.compute: aws``.

A :class:`~mlops_core.compute.JobSpec` becomes one ``CreateTrainingJob``: the spec's channels are
``S3Prefix`` data sources in ``File`` mode (SageMaker copies them to ``/opt/ml/input/data/<channel>/``,
the layout our entrypoint reads), the hyperparameters go as they are (strings), the entrypoint is
the container's ``ContainerEntrypoint``, the output goes to ``<output_uri>/<job name>/output/``
(``model.tar.gz``, ``output.tar.gz`` with ``metrics.json``), and the image, instance type and count,
volume size, managed spot and the runtime limit come from the spec or the ``aws.training_*``
settings. SageMaker's own names are kept: a name ever used is ``ResourceInUse``
(:class:`~mlops_core.compute.JobNameInUse` here), statuses are the same five, and the failure
reason is SageMaker's ``FailureReason`` word for word.

The boto3 clients are injected (the Airflow layer builds them on ``SageMakerHook`` and the logs hook
for ``aws.conn_id``), so this module never imports Airflow.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops_core.aws_errors import aws_error as _error
from mlops_core.aws_errors import is_missing as _not_found
from mlops_core.compute import JobDescription, JobNameInUse, JobNotFound, JobSpec, object_key

if TYPE_CHECKING:
    from mlops_core.s3_storage import S3ObjectStore

MAX_HYPERPARAMETER_CHARS = 2500  # per value (CreateTrainingJob HyperParameters)
log = logging.getLogger(__name__)

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
_STATUSES = ("InProgress", "Completed", "Failed", "Stopping", "Stopped")


@dataclass(frozen=True)
class SageMakerTrainingSettings:
    """What SageMaker needs beyond the job spec (``aws.training_*`` settings)."""

    role_arn: str
    image: str
    instance_type: str = "ml.m5.large"
    instance_count: int = 1
    volume_size_gb: int = 30
    spot: bool = False
    max_wait_seconds: int | None = None  # spot only: runtime plus the time to wait for capacity


class SageMakerCompute:
    """Training jobs on SageMaker, their inputs and outputs in the environment's S3 store.

    :param client: a boto3 SageMaker client.
    :param store: the S3 object store the spec's URIs point into (URIs outside it are refused).
    :param training: role, image and instances (:class:`SageMakerTrainingSettings`).
    :param logs_client: a boto3 CloudWatch Logs client for :meth:`log_lines` (None: no job logs).
    """

    def __init__(
        self, client: Any, store: S3ObjectStore, training: SageMakerTrainingSettings, logs_client: Any = None
    ) -> None:
        self.client = client
        self.store = store
        self.training = training
        self.logs_client = logs_client

    def __repr__(self) -> str:
        return f"SageMakerCompute(store={self.store!r}, image={self.training.image!r})"

    # ------------------------------------------------------------------ submit
    def request(self, spec: JobSpec) -> dict[str, Any]:
        """The ``CreateTrainingJob`` request for ``spec`` (refuses URIs outside the store first)."""
        for uri in [*spec.inputs.values(), spec.output_uri]:
            object_key(self.store, uri)
        training = self.training
        stopping: dict[str, int] = {"MaxRuntimeInSeconds": spec.max_runtime_seconds}
        request: dict[str, Any] = {
            "TrainingJobName": spec.name,
            "AlgorithmSpecification": {
                "TrainingImage": spec.image or training.image,
                "TrainingInputMode": "File",
                "ContainerEntrypoint": list(spec.entrypoint),
            },
            "RoleArn": training.role_arn,
            "HyperParameters": dict(spec.hyperparameters),
            "InputDataConfig": [
                {
                    "ChannelName": channel,
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "S3Prefix",
                            "S3Uri": uri,
                            "S3DataDistributionType": "FullyReplicated",
                        }
                    },
                    "InputMode": "File",
                }
                for channel, uri in sorted(spec.inputs.items())
            ],
            "OutputDataConfig": {"S3OutputPath": spec.output_uri.rstrip("/")},
            "ResourceConfig": {
                "InstanceType": spec.instance_type or training.instance_type,
                "InstanceCount": spec.instance_count if spec.instance_count > 1 else training.instance_count,
                "VolumeSizeInGB": training.volume_size_gb,
            },
            "StoppingCondition": stopping,
            "EnableManagedSpotTraining": training.spot,
        }
        if training.spot:
            stopping["MaxWaitTimeInSeconds"] = max(training.max_wait_seconds or 0, spec.max_runtime_seconds)
        return request

    def submit(self, spec: JobSpec) -> JobDescription:
        too_long = sorted(k for k, v in spec.hyperparameters.items() if len(v) > MAX_HYPERPARAMETER_CHARS)
        if too_long:  # SageMaker would answer a ValidationException that names no value
            raise ValueError(
                f"hyperparameter(s) {too_long} of job {spec.name} exceed SageMaker's {MAX_HYPERPARAMETER_CHARS} "
                "characters per value; shorten them (the contract travels as the job's contract channel)"
            )
        try:
            self.client.create_training_job(**self.request(spec))
        except Exception as exc:
            code, message = _error(exc)
            if code == "ResourceInUse":
                raise JobNameInUse(
                    f"a SageMaker training job named {spec.name!r} exists already ({message}); job names are unique "
                    "forever, so submit the next attempt under a new name"
                ) from exc
            raise
        log.info("Submitted SageMaker training job %s (%s)", spec.name, self.training.image)
        return self.describe(spec.name)

    # ------------------------------------------------------------------ describe / stop
    def describe(self, name: str) -> JobDescription:
        try:
            job = self.client.describe_training_job(TrainingJobName=name)
        except Exception as exc:
            if _not_found(exc):
                raise JobNotFound(f"no SageMaker training job {name!r}") from exc
            raise
        status = str(job["TrainingJobStatus"])
        if status not in _STATUSES:
            raise ValueError(f"SageMaker answered an unknown status {status!r} for training job {name}")
        model_uri = metrics_uri = None
        if status == "Completed":
            model_uri = str(job.get("ModelArtifacts", {}).get("S3ModelArtifacts") or "") or None
            output = str(job["OutputDataConfig"]["S3OutputPath"]).rstrip("/")
            metrics_uri = f"{output}/{name}/output/output.tar.gz"
        seconds = job.get("TrainingTimeInSeconds")
        if seconds is None and job.get("TrainingStartTime") is not None:
            end = job.get("TrainingEndTime")
            seconds = (end.timestamp() if end else time.time()) - job["TrainingStartTime"].timestamp()
        return JobDescription(
            name=name,
            status=status,  # type: ignore[arg-type]  # checked against _STATUSES above
            failure_reason=job.get("FailureReason") or None,
            model_uri=model_uri,
            metrics_uri=metrics_uri,
            seconds=float(seconds or 0.0),
            secondary_status=job.get("SecondaryStatus"),
        )

    def stop(self, name: str) -> None:
        try:
            self.client.stop_training_job(TrainingJobName=name)
        except Exception as exc:
            code, message = _error(exc)
            if _not_found(exc):
                raise JobNotFound(f"no SageMaker training job {name!r}") from exc
            if code == "ValidationException":  # already ended: "a finished job is left as it is"
                log.info("SageMaker training job %s was not stopped: %s", name, message)
                return
            raise
        log.warning("Asked SageMaker to stop training job %s", name)

    # ------------------------------------------------------------------ logs
    def log_lines(self, name: str, skip: int = 0) -> list[str]:
        """The job's CloudWatch log lines after the first ``skip`` (every instance's stream, in order)."""
        if self.logs_client is None:
            return []
        lines: list[str] = []
        try:
            streams = self.logs_client.describe_log_streams(
                logGroupName=LOG_GROUP, logStreamNamePrefix=f"{name}/", orderBy="LogStreamName"
            ).get("logStreams", [])
            for stream in streams:
                token = None
                while True:
                    kwargs: dict[str, Any] = {
                        "logGroupName": LOG_GROUP,
                        "logStreamName": stream["logStreamName"],
                        "startFromHead": True,
                    }
                    if token:
                        kwargs["nextToken"] = token
                    page = self.logs_client.get_log_events(**kwargs)
                    lines += [str(event["message"]) for event in page.get("events", [])]
                    if not page.get("events") or page.get("nextForwardToken") == token:
                        break
                    token = page.get("nextForwardToken")
        except Exception as exc:
            code, _ = _error(exc)
            if code == "ResourceNotFoundException":  # no log group/stream yet: the job has not started
                return []
            raise
        return lines[skip:]
