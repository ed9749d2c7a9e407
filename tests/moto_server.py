"""A real moto server on loopback for the aws backend's tests, with moto made faithful where we lean on it.

One server per test session (``moto_server`` fixture in ``tests/conftest.py``): moto 5.2.5 in server
mode (``ThreadedMotoServer``, port 0 so the kernel picks a free port), reached over HTTP by boto3,
the Amazon provider's hooks and Airflow task processes alike. Tests isolate themselves by bucket
and resource names (``unique_name``), or call :meth:`MotoServer.reset`.

moto is not faithful everywhere. Where the code under test depends on a behaviour the real service
has and moto lacks, this module extends moto's server to behave like the service, and says so:

- **S3 checksums** (``x-amz-checksum-*``): moto stores whatever value the client sends and never
  checks it; S3 recomputes the checksum of the received bytes and answers ``400 BadDigest`` when
  they differ. :func:`_verify_s3_checksums` makes moto do the same for PutObject and UploadPart.
- **CopyObject with** ``CopySourceIfMatch``: S3 answers ``412 PreconditionFailed`` when the source's
  ETag is not the one given; moto 5.2.5 ignores the header and copies whatever is there now, so
  the S3 drop zone's "archive only the object that was read" could not be tested.
  :func:`_copy_source_if_match` makes moto check it.
- **UpdateModelPackage** changes only what the request sends (``CustomerMetadataProperties`` are
  merged in, ``CustomerMetadataPropertiesToRemove`` removes); moto 5.2.5 sets every field,
  so an approval would wipe the package's metadata and description.
  :func:`_update_model_package_keeps_unsent_fields` makes it behave like SageMaker.
- **Training jobs** (:func:`_sagemaker_training_jobs_like_sagemaker`): SageMaker refuses a
  ``CreateTrainingJob`` whose name was ever used (``ResourceInUse``), a new job is ``InProgress``
  until it ends, and ``StopTrainingJob`` stops it. moto 5.2.5 overwrites the old job, marks every
  job ``Completed`` the moment it is created, and does not implement ``StopTrainingJob`` (HTTP 500).
  Here a job stays ``InProgress`` until the test (or :class:`SageMakerContainer`, which plays the
  training container) ends it through :meth:`MotoServer.finish_training_job`.
- **Endpoints** (:func:`_sagemaker_endpoints_like_sagemaker`): creating a model, endpoint config or
  endpoint whose name exists is a ``ValidationException`` in SageMaker (moto overwrites), and
  ``UpdateEndpoint`` switches the endpoint to the new config (moto: HTTP 500). The same goes for
  ``CreateModelPackageGroup``, whose "already exists" answer the provider's hook relies on.

- **Pipeline executions** (:func:`_sagemaker_pipelines_like_sagemaker`): in SageMaker an execution
  is ``Executing`` until its steps end, ``StartPipelineExecution`` repeated with the same
  ``ClientRequestToken`` starts nothing and answers the first execution, ``StopPipelineExecution``
  moves an executing one to ``Stopping``, ``ListPipelineExecutionSteps`` lists its steps and
  ``DescribePipelineExecution`` carries its ``FailureReason``. moto 5.2.5 marks every execution
  ``Succeeded`` the moment it starts, ignores the token (a second execution each time), implements
  neither StopPipelineExecution nor ListPipelineExecutionSteps (HTTP 500) and always answers an empty
  FailureReason. Here an execution stays ``Executing`` until the test ends it through
  :meth:`MotoServer.finish_pipeline_execution`, with the steps the test gives it. What SageMaker
  answers to stopping an execution that already ended is not documented: moto answers a
  ``ValidationException`` here, and the code never sends that request (it describes first).
  moto also ignores ListPipelineExecutions' ``CreatedAfter``, sorting and paging (one page of
  everything), which the code only uses to list fewer executions.

- **InvokeEndpoint** answers canned bytes in moto; :mod:`tests.sagemaker_hosting` forwards it to
  our serving container run locally with the endpoint's model, as SageMaker would.

Every JSON-protocol call the server answers is counted in :data:`CALLS` (``(service, action)``),
so tests can assert "exactly one CreateTrainingJob per run" at the server. Every call made with
the project code's credentials (:data:`CODE_KEY`: the Airflow connection and
:meth:`MotoServer.code_client`) is also recorded as an IAM action in :data:`CODE_ACTIONS`, which
``tests/aws/test_zz_iam_policy.py`` holds against the shipped IAM policy; the tests' own setup
and assertions use other credentials (:meth:`MotoServer.client`) and are not recorded.

Each extension has a test in ``tests/aws/test_moto_fidelity.py`` that fails loudly if moto's
internals it relies on move (moto is pinned exactly in ``requirements.txt`` for that reason).
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import requests

REGION = "us-east-1"
_CHECKSUM_HEADER = re.compile(r"^x-amz-checksum-(crc32|crc32c|crc64nvme|sha1|sha256)$", re.IGNORECASE)
_TRAILER = re.compile(rb"x-amz-checksum-(crc32|crc32c|crc64nvme|sha1|sha256):([A-Za-z0-9+/=]+)", re.IGNORECASE)
_patched = False
CALLS: Counter[tuple[str, str]] = Counter()
CODE_KEY = "AKIAMLOPSPROJECTCODE"  # the identity of the project's own code in the tests
TEST_KEY = "AKIATESTSETUPANDASSERT"  # the tests' setup and assertions
CODE_ACTIONS: Counter[str] = Counter()  # IAM actions (``s3:PutObject``) called with CODE_KEY
_CREDENTIAL = re.compile(r"Credential=([^/]+)/")
_S3_IAM = {"HeadBucket": "ListBucket"}  # moto's S3 action names that are not IAM's
_IAM_PREFIX = {"sagemaker-runtime": "sagemaker", "runtime.sagemaker": "sagemaker"}
# API actions authorized by another action's permission (IAM has no sqs:DeleteMessageBatch)
_IAM_ACTION = {"sqs:DeleteMessageBatch": "sqs:DeleteMessage"}
_CALLS_LOCK = threading.Lock()
ACCOUNT = "123456789012"  # moto's default account


def _verify_s3_checksums() -> None:
    """PutObject/UploadPart: a checksum sent by the client must match the bytes received (S3's BadDigest)."""
    from moto.s3.exceptions import S3ClientError
    from moto.s3.responses import S3Response
    from moto.s3.utils import compute_checksum

    class BadDigest(S3ClientError):
        code = "BadDigest"

        def __init__(self, algorithm: str) -> None:
            super().__init__(
                "BadDigest", f"The {algorithm.upper()} you specified did not match the calculated checksum."
            )

    original = S3Response._get_checksum

    def _get_checksum(self: Any, response_headers: dict[str, Any]) -> tuple[str, str | None]:
        sent: list[tuple[str, str]] = [
            (m.group(1), str(value)) for name, value in self.headers.items() if (m := _CHECKSUM_HEADER.match(name))
        ]
        if not sent and self.raw_body:  # aws-chunked uploads carry the checksum in a trailer
            sent = [(m.group(1).decode(), m.group(2).decode()) for m in _TRAILER.finditer(self.raw_body[-512:])]
        for algorithm, value in sent:
            expected = compute_checksum(self.body or b"", algorithm=algorithm.upper()).decode()
            if base64.b64decode(value) != base64.b64decode(expected):
                raise BadDigest(algorithm)
        return original(self, response_headers)  # type: ignore[no-any-return]

    S3Response._get_checksum = _get_checksum  # type: ignore[method-assign]


def _copy_source_if_match() -> None:
    """CopyObject: ``x-amz-copy-source-if-match`` must name the source's current ETag (S3's 412)."""
    from urllib.parse import unquote, urlparse

    from moto.s3.exceptions import PreconditionFailed
    from moto.s3.responses import S3Response

    original = S3Response.copy_object

    def copy_object(self: Any) -> Any:
        wanted = self.headers.get("x-amz-copy-source-if-match")
        if wanted:
            source = self.headers.get("x-amz-copy-source")
            source = source.decode("utf-8") if isinstance(source, bytes) else str(source)
            bucket, key = unquote(urlparse(source).path).lstrip("/").split("/", 1)
            current = self.backend.get_object(bucket, key)
            if current is not None and current.etag.strip('"') != str(wanted).strip('"'):
                raise PreconditionFailed(failed_condition="x-amz-copy-source-If-Match")
        return original(self)

    S3Response.copy_object = copy_object  # type: ignore[method-assign]


def _update_model_package_keeps_unsent_fields() -> None:
    from moto.sagemaker.models import SageMakerModelBackend

    original = SageMakerModelBackend.update_model_package

    def update_model_package(
        self: Any,
        model_package_arn: str,
        model_approval_status: str | None,
        approval_description: str | None,
        customer_metadata_properties: dict[str, str] | None,
        customer_metadata_properties_to_remove: list[str],
        additional_inference_specifications_to_add: list[Any] | None,
    ) -> str:
        package = self.model_packages.get(self.model_package_name_mapping.get(model_package_arn, model_package_arn))
        if package is not None:
            if model_approval_status is None:
                model_approval_status = package.model_approval_status
            if approval_description is None:
                approval_description = package.approval_description
            customer_metadata_properties = {
                **(package.customer_metadata_properties or {}),
                **(customer_metadata_properties or {}),
            }
        return original(  # type: ignore[no-any-return]
            self,
            model_package_arn,
            model_approval_status,
            approval_description,
            customer_metadata_properties,
            customer_metadata_properties_to_remove,
            additional_inference_specifications_to_add,
        )

    SageMakerModelBackend.update_model_package = update_model_package  # type: ignore[method-assign]


def _caller(headers: Any) -> str | None:
    match = _CREDENTIAL.search(str(headers.get("Authorization", "")))
    return match.group(1) if match else None


def _count_calls() -> None:
    from moto.core.responses import BaseResponse
    from moto.s3.responses import S3Response

    original = BaseResponse.call_action

    def call_action(self: Any) -> Any:
        service, action = str(self.service_name), self._get_action()
        with _CALLS_LOCK:
            CALLS[(service, action)] += 1
            if _caller(self.headers) == CODE_KEY:
                called = f"{_IAM_PREFIX.get(service, service)}:{action}"
                CODE_ACTIONS[_IAM_ACTION.get(called, called)] += 1
        return original(self)

    original_s3 = S3Response._set_action

    def set_action(self: Any, action_resource_type: str, method: str, querystring: dict[str, Any]) -> None:
        original_s3(self, action_resource_type, method, querystring)
        if _caller(self.headers) == CODE_KEY:
            with _CALLS_LOCK:
                action = str(self.data["Action"])
                CODE_ACTIONS[f"s3:{_S3_IAM.get(action, action)}"] += 1

    BaseResponse.call_action = call_action  # type: ignore[method-assign]
    S3Response._set_action = set_action  # type: ignore[method-assign]


def _sagemaker_training_jobs_like_sagemaker() -> None:
    from moto.core.responses import EmptyResult
    from moto.sagemaker.exceptions import ResourceInUseException, ValidationError
    from moto.sagemaker.models import SageMakerModelBackend
    from moto.sagemaker.responses import SageMakerResponse

    original = SageMakerModelBackend.create_training_job

    def create_training_job(self: Any, **kwargs: Any) -> Any:
        training_job_name = kwargs["training_job_name"]
        if training_job_name in self.training_jobs:
            raise ResourceInUseException(
                message=f"Training job names must be unique within an AWS account and region, and a training job "
                f"with this name already exists ({self.training_jobs[training_job_name].arn})"
            )
        job = original(self, **kwargs)
        job.training_job_status, job.secondary_status = "InProgress", "Starting"
        job.training_end_time = None
        job.final_metric_data_list = []
        job.secondary_status_transitions = [{"Status": "Starting", "StartTime": job.creation_time}]
        return job

    def stop_training_job(self: Any) -> Any:
        name = self._get_param("TrainingJobName")
        job = self.sagemaker_backend.training_jobs.get(name)
        if job is None:
            raise ValidationError(message=f"Could not find training job '{name}'.")
        if job.training_job_status == "InProgress":
            job.training_job_status, job.secondary_status = "Stopping", "Stopping"
        return EmptyResult()

    SageMakerModelBackend.create_training_job = create_training_job  # type: ignore[method-assign]
    SageMakerResponse.stop_training_job = stop_training_job  # type: ignore[attr-defined]


def _sagemaker_endpoints_like_sagemaker() -> None:
    from moto.core.responses import ActionResult
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.models import SageMakerModelBackend
    from moto.sagemaker.responses import SageMakerResponse

    def refuse_existing(method: str, name_arg: str, collection: str, message: str) -> None:
        original = getattr(SageMakerModelBackend, method)

        def create(self: Any, **kwargs: Any) -> Any:
            name = kwargs[name_arg]
            if name in getattr(self, collection):
                raise ValidationError(message=message.format(name=name))
            return original(self, **kwargs)

        setattr(SageMakerModelBackend, method, create)

    refuse_existing("create_model", "model_name", "_models", 'Cannot create already existing model "{name}".')
    refuse_existing(
        "create_endpoint_config",
        "endpoint_config_name",
        "endpoint_configs",
        'Cannot create already existing endpoint configuration "{name}".',
    )
    refuse_existing(
        "create_endpoint", "endpoint_name", "endpoints", 'Cannot create already existing endpoint "{name}".'
    )
    refuse_existing(
        "create_model_package_group",
        "model_package_group_name",
        "model_package_groups",
        "Model Package Group already exists: {name}",
    )

    def update_endpoint(self: Any) -> Any:
        backend = self.sagemaker_backend
        endpoint = backend.endpoints.get(self._get_param("EndpointName"))
        if endpoint is None:
            raise ValidationError(message=f"Could not find endpoint '{self._get_param('EndpointName')}'.")
        config = backend.describe_endpoint_config(self._get_param("EndpointConfigName"))
        endpoint.endpoint_config_name = config["EndpointConfigName"]
        endpoint.production_variants = endpoint._process_production_variants(config["ProductionVariants"])
        endpoint.endpoint_status = "InService"
        return ActionResult({"EndpointArn": endpoint.arn})

    SageMakerResponse.update_endpoint = update_endpoint  # type: ignore[attr-defined]


def _sagemaker_pipelines_like_sagemaker() -> None:
    from moto.core.responses import ActionResult, EmptyResult
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.models import SageMakerModelBackend
    from moto.sagemaker.responses import SageMakerResponse
    from moto.sagemaker.utils import get_pipeline_execution_from_arn

    original_start = SageMakerModelBackend.start_pipeline_execution
    original_describe = SageMakerModelBackend.describe_pipeline_execution

    def start_pipeline_execution(self: Any, pipeline_name: str, *args: Any) -> dict[str, str]:
        token = args[-1]  # client_request_token, the last argument
        tokens = self.__dict__.setdefault("_pipeline_request_tokens", {})
        if token and (pipeline_name, token) in tokens:  # the same request again: its first answer
            return {"PipelineExecutionArn": tokens[(pipeline_name, token)]}
        answer = original_start(self, pipeline_name, *args)
        execution = get_pipeline_execution_from_arn(self.pipelines, answer["PipelineExecutionArn"])
        execution.pipeline_execution_status = "Executing"
        execution.steps = []
        if token:
            tokens[(pipeline_name, token)] = answer["PipelineExecutionArn"]
        return answer  # type: ignore[no-any-return]

    def describe_pipeline_execution(self: Any, pipeline_execution_arn: str) -> dict[str, Any]:
        answer = dict(original_describe(self, pipeline_execution_arn))
        reason = get_pipeline_execution_from_arn(
            self.pipelines, pipeline_execution_arn
        ).pipeline_execution_failure_reason
        if reason:
            answer["FailureReason"] = reason
        else:
            answer.pop("FailureReason", None)
        return answer

    def stop_pipeline_execution(self: Any) -> Any:
        arn = self._get_param("PipelineExecutionArn")
        execution = get_pipeline_execution_from_arn(self.sagemaker_backend.pipelines, arn)
        if execution.pipeline_execution_status != "Executing":
            raise ValidationError(
                message=f"Pipeline execution {arn} is {execution.pipeline_execution_status}; only an executing "
                "pipeline execution can be stopped"
            )
        execution.pipeline_execution_status = "Stopping"
        return ActionResult({"PipelineExecutionArn": arn}) if arn else EmptyResult()

    def list_pipeline_execution_steps(self: Any) -> Any:
        arn = self._get_param("PipelineExecutionArn")
        execution = get_pipeline_execution_from_arn(self.sagemaker_backend.pipelines, arn)
        steps = list(getattr(execution, "steps", []))
        if self._get_param("SortOrder", "Descending") == "Descending":
            steps.reverse()
        return ActionResult({"PipelineExecutionSteps": steps})

    SageMakerModelBackend.start_pipeline_execution = start_pipeline_execution  # type: ignore[method-assign]
    SageMakerModelBackend.describe_pipeline_execution = describe_pipeline_execution  # type: ignore[method-assign]
    SageMakerResponse.stop_pipeline_execution = stop_pipeline_execution  # type: ignore[attr-defined]
    SageMakerResponse.list_pipeline_execution_steps = list_pipeline_execution_steps  # type: ignore[attr-defined]


def make_moto_faithful() -> None:
    """Apply every extension above once per process (they survive ``/moto-api/reset``)."""
    global _patched
    if not _patched:
        _verify_s3_checksums()
        _copy_source_if_match()
        _update_model_package_keeps_unsent_fields()
        _count_calls()
        _sagemaker_training_jobs_like_sagemaker()
        _sagemaker_endpoints_like_sagemaker()
        _sagemaker_pipelines_like_sagemaker()
        from tests import sagemaker_hosting

        sagemaker_hosting.install()  # InvokeEndpoint answered by our serving container (see there)
        _patched = True


def unique_name(prefix: str) -> str:
    """A resource name no other test uses (buckets: lowercase, <= 63 characters)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class MotoServer:
    """A running moto server: its URL and the settings clients need to reach it."""

    url: str
    region: str = REGION

    def client(self, service: str, key: str = TEST_KEY) -> Any:
        """A boto3 client for the tests' own setup and assertions (not recorded as the code's calls)."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=key,  # moto accepts any key; nothing secret
            aws_secret_access_key="testing",
        )

    def code_client(self, service: str) -> Any:
        """A boto3 client with the project code's identity: hand it to the classes under test."""
        return self.client(service, CODE_KEY)

    def connection_uri(self) -> str:
        """An Airflow connection (JSON form, for ``AIRFLOW_CONN_<ID>``) whose hooks reach this server."""
        import json

        return json.dumps(
            {
                "conn_type": "aws",
                "login": CODE_KEY,
                "password": "testing",
                "extra": {
                    "region_name": self.region,
                    "endpoint_url": self.url,
                    # the provider's connection test and role assumption use STS, which ignores endpoint_url
                    "service_config": {"sts": {"endpoint_url": self.url}},
                },
            }
        )

    def reset(self) -> None:
        requests.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()

    def calls(self, service: str, action: str) -> int:
        """How many ``action`` requests of ``service`` the server answered so far (``sagemaker``, ...)."""
        with _CALLS_LOCK:
            return CALLS[(service, action)]

    def training_job(self, name: str) -> Any:
        """moto's own record of a training job (the server runs in this process)."""
        from moto.sagemaker.models import sagemaker_backends

        return sagemaker_backends[ACCOUNT][self.region].training_jobs[name]

    def finish_training_job(self, name: str, status: str = "Completed", failure_reason: str | None = None) -> None:
        """End an ``InProgress`` (or ``Stopping``) job as SageMaker would: ``Completed``, ``Failed``
        with its reason, or ``Stopped``."""
        from moto.core.utils import utcnow

        if status not in ("Completed", "Failed", "Stopped"):
            raise ValueError(f"a training job ends Completed, Failed or Stopped, not {status!r}")
        job = self.training_job(name)
        job.training_job_status = job.secondary_status = status
        job.training_end_time = job.last_modified_time = utcnow()
        if failure_reason is not None:
            job.failure_reason = failure_reason  # shown as FailureReason by DescribeTrainingJob

    def pipeline_execution(self, arn: str) -> Any:
        """moto's own record of a pipeline execution."""
        from moto.sagemaker.models import sagemaker_backends
        from moto.sagemaker.utils import get_pipeline_execution_from_arn

        return get_pipeline_execution_from_arn(sagemaker_backends[ACCOUNT][self.region].pipelines, arn)

    def set_pipeline_steps(self, arn: str, *steps: tuple[str, str] | tuple[str, str, str]) -> None:
        """The execution's steps as ListPipelineExecutionSteps shows them: ``(name, status[, failure reason])``."""
        from moto.core.utils import utcnow

        listed = []
        for step in steps:
            entry: dict[str, Any] = {"StepName": step[0], "StepStatus": step[1], "StartTime": utcnow()}
            if len(step) > 2:
                entry["FailureReason"] = step[2]
            listed.append(entry)
        self.pipeline_execution(arn).steps = listed

    def finish_pipeline_execution(self, arn: str, status: str = "Succeeded", failure_reason: str | None = None) -> None:
        """End an ``Executing`` (or ``Stopping``) execution as SageMaker would."""
        from moto.core.utils import utcnow

        if status not in ("Succeeded", "Failed", "Stopped", "CompletedWithFailures"):
            raise ValueError(
                f"a pipeline execution ends Succeeded, Failed, Stopped or CompletedWithFailures, not {status!r}"
            )
        execution = self.pipeline_execution(arn)
        execution.pipeline_execution_status = status
        execution.last_modified_time = utcnow()
        execution.pipeline_execution_failure_reason = failure_reason


def start_moto_server() -> tuple[MotoServer, Any]:
    """Start moto on a free loopback port; returns the server description and the handle to stop it."""
    from moto.server import ThreadedMotoServer

    make_moto_faithful()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return MotoServer(url=f"http://{host}:{port}"), server
