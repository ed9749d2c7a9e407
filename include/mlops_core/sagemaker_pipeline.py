"""Executions of an existing SageMaker Pipeline: started once per run, followed step by step, stopped.

Teams on AWS often have their own SageMaker Pipelines already (processing, training, a condition,
a registration step). A DAG task starts one as a step of the lifecycle and waits for it. What
SageMaker offers for starting a run exactly once, and how this module uses it:

- ``PipelineExecutionDisplayName`` is not unique: SageMaker accepts any number of executions with
  the same display name. It is still the handle a retry finds its execution by: the name is
  deterministic per DAG run, task and parameters (the operator builds it), and
  :meth:`SageMakerPipelines.find` lists the pipeline's executions newest first (only those created
  after the DAG run began) and matches it exactly.
- ``ClientRequestToken`` (32-128 characters) makes ``StartPipelineExecution`` idempotent: a
  request repeated with the same token completes no more than once and answers the execution it
  started. AWS does not document how long a token is remembered, so it only covers a start whose
  answer was lost (a timeout, a worker killed right after the call), not a retry hours later; the
  token here is derived from the pipeline, display name and parameters, so the repeated request is
  exactly the same request.
- An execution that failed or was stopped is not started again under its name: the next attempt
  gets ``<name>-a2``, ``-a3``, ... (as training jobs do), so each attempt stays visible in SageMaker
  Studio and a retry never re-attaches to a failure.

Parameters are sent as SageMaker takes them (names ``[A-Za-z0-9_-]{1,256}``, values strings of at
most 1024 characters, at most 200 of them); :func:`pipeline_parameters` refuses anything else
before any call. The boto3 SageMaker client is injected (``SageMakerHook(aws_conn_id).get_conn()``
in Airflow), so this module never imports Airflow.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlops_core.aws_errors import is_missing
from mlops_core.errors import PermanentError

log = logging.getLogger(__name__)

EXECUTING, STOPPING = "Executing", "Stopping"
# Terminal statuses -> the event status of the operator. CompletedWithFailures (the pipeline ran
# to its end but some steps failed, e.g. behind a condition) is a failure here: a downstream task
# must not assume every output of the pipeline exists.
OUTCOMES = {"Succeeded": "success", "Failed": "failed", "Stopped": "stopped", "CompletedWithFailures": "failed"}
MAX_ATTEMPTS = 20
MAX_PARAMETERS = 200
MAX_PARAMETER_NAME = 256
MAX_PARAMETER_VALUE = 1024
MAX_DISPLAY_NAME = 82
_PARAMETER_NAME = re.compile(r"[A-Za-z0-9_-]+")
_NOT_IN_DISPLAY_NAME = re.compile(r"[^A-Za-z0-9]+")
_PIPELINE_NAME = re.compile(r"[A-Za-z0-9](-*[A-Za-z0-9]){0,255}")


class PipelineParametersError(PermanentError, ValueError):
    """Pipeline parameters SageMaker would refuse; they fail the same way on every retry."""


class PipelineNotFound(PermanentError, LookupError):
    """The pipeline does not exist in the account and region of the connection."""


class PipelineExecutionFailed(RuntimeError):
    """A pipeline execution ended without success; the message carries SageMaker's own reason."""


def pipeline_parameters(parameters: Mapping[str, Any] | None) -> list[dict[str, str]]:
    """``{"name": value}`` as ``StartPipelineExecution`` takes it, checked against SageMaker's limits.

    Values must be strings (a templated field renders to one) or numbers, sent as their ``str``.
    Booleans and anything else are refused: SageMaker compares Boolean parameters with ``true`` /
    ``false``, and Python's ``True`` would arrive as ``True``.
    """
    if parameters is None:
        return []
    if not isinstance(parameters, Mapping):
        raise PipelineParametersError(f"pipeline parameters must be a mapping of name to value, not {parameters!r}")
    if len(parameters) > MAX_PARAMETERS:
        raise PipelineParametersError(
            f"{len(parameters)} pipeline parameters; SageMaker takes at most {MAX_PARAMETERS}"
        )
    checked = []
    for name, value in parameters.items():
        if not isinstance(name, str) or not _PARAMETER_NAME.fullmatch(name) or len(name) > MAX_PARAMETER_NAME:
            raise PipelineParametersError(
                f"pipeline parameter name {name!r}: SageMaker takes 1-{MAX_PARAMETER_NAME} of A-Z a-z 0-9 _ -"
            )
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise PipelineParametersError(
                f"pipeline parameter {name}: value {value!r} is a {type(value).__name__}; pass a string "
                "(Boolean parameters: 'true' or 'false')"
            )
        text = str(value)
        if len(text) > MAX_PARAMETER_VALUE:
            raise PipelineParametersError(
                f"pipeline parameter {name}: value of {len(text)} characters; SageMaker takes at most "
                f"{MAX_PARAMETER_VALUE}"
            )
        checked.append({"Name": name, "Value": text})
    return sorted(checked, key=lambda p: p["Name"])


def check_pipeline_name(name: Any) -> str:
    """A pipeline name (not an ARN: the executions are listed by name) as SageMaker spells them."""
    if not isinstance(name, str) or not _PIPELINE_NAME.fullmatch(name):
        raise PipelineParametersError(
            f"pipeline name {name!r}: SageMaker pipeline names are 1-256 of A-Z a-z 0-9 and inner hyphens"
        )
    return name


def display_name(text: str) -> str:
    """``text`` as a valid ``PipelineExecutionDisplayName``: letters, digits, single hyphens, <= 82."""
    cleaned = _NOT_IN_DISPLAY_NAME.sub("-", text).strip("-")[:MAX_DISPLAY_NAME].strip("-")
    if not cleaned:
        raise PipelineParametersError(f"no SageMaker execution display name can be made from {text!r}")
    return cleaned


def attempt_display_name(base: str, attempt: int) -> str:
    """``base`` for the first attempt, ``base-a<N>`` after (cut to SageMaker's 82 characters)."""
    if attempt == 1:
        return base
    suffix = f"-a{attempt}"
    return base[: MAX_DISPLAY_NAME - len(suffix)].rstrip("-") + suffix


def request_token(pipeline_name: str, name: str, parameters: list[dict[str, str]]) -> str:
    """The ``ClientRequestToken`` of starting ``name``: the same request always carries the same token."""
    spec = json.dumps({"pipeline": pipeline_name, "name": name, "parameters": parameters}, sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()  # 64 characters: within SageMaker's 32-128


@dataclass(frozen=True)
class PipelineExecution:
    """What DescribePipelineExecution (or a ListPipelineExecutions summary) says of one execution."""

    arn: str
    status: str
    display_name: str = ""
    failure_reason: str = ""

    @property
    def terminal(self) -> bool:
        return self.status in OUTCOMES

    @property
    def outcome(self) -> str:
        """``success``, ``failed`` or ``stopped`` once terminal; ``running`` before."""
        return OUTCOMES.get(self.status, "running")


@dataclass(frozen=True)
class PipelineStep:
    """One step of an execution (ListPipelineExecutionSteps)."""

    name: str
    status: str
    failure_reason: str = ""


def step_changes(seen: dict[str, str], steps: list[PipelineStep]) -> list[str]:
    """Log lines for the steps whose status changed since ``seen`` (updated in place), in list order."""
    lines = []
    for step in steps:
        if seen.get(step.name) == step.status:
            continue
        seen[step.name] = step.status
        reason = f": {step.failure_reason}" if step.failure_reason else ""
        lines.append(f"step {step.name}: {step.status}{reason}")
    return lines


def failure_message(execution: PipelineExecution, steps: list[PipelineStep]) -> str:
    """Why an execution did not succeed: SageMaker's FailureReason, then each failed step's own reason."""
    parts = [execution.failure_reason] if execution.failure_reason else []
    failed = [f"{s.name} ({s.failure_reason or s.status})" for s in steps if s.status == "Failed"]
    if failed:
        parts.append("failed steps: " + ", ".join(failed))
    return "; ".join(parts) or f"the execution ended {execution.status} without a reason from SageMaker"


class SageMakerPipelines:
    """Start, find, follow and stop executions of existing SageMaker Pipelines.

    :param client: a boto3 SageMaker client.
    :param poll_seconds: how often a stopping execution is checked before a new attempt starts.
    :param sleep: how to wait between those checks (tests pass a fake clock).
    """

    def __init__(self, client: Any, poll_seconds: float = 10.0, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.poll_seconds = poll_seconds
        self.sleep = sleep

    def find(self, pipeline_name: str, name: str, created_after: datetime | None = None) -> PipelineExecution | None:
        """The newest execution of ``pipeline_name`` whose display name is ``name``, or None.

        Lists newest first and, with ``created_after``, only executions created since (the DAG
        run's start: an execution of this run cannot be older), so a busy pipeline costs few pages.
        """
        query: dict[str, Any] = {"PipelineName": pipeline_name, "SortBy": "CreationTime", "SortOrder": "Descending"}
        if created_after is not None:
            query["CreatedAfter"] = created_after
        try:
            for page in self.client.get_paginator("list_pipeline_executions").paginate(**query):
                for summary in page.get("PipelineExecutionSummaries", []):
                    if summary.get("PipelineExecutionDisplayName") == name:
                        return self.describe(str(summary["PipelineExecutionArn"]))
        except Exception as exc:
            if is_missing(exc):
                raise PipelineNotFound(
                    f"SageMaker pipeline {pipeline_name!r} does not exist in this account and region ({exc}); "
                    "create it first (SageMaker Studio, the SageMaker Python SDK) or fix the pipeline name"
                ) from exc
            raise
        return None

    def start(
        self, pipeline_name: str, name: str, parameters: list[dict[str, str]], description: str | None = None
    ) -> str:
        """Start an execution named ``name``; a repeated identical request answers the first one's ARN."""
        request: dict[str, Any] = {
            "PipelineName": pipeline_name,
            "PipelineExecutionDisplayName": name,
            "PipelineParameters": parameters,
            "ClientRequestToken": request_token(pipeline_name, name, parameters),
        }
        if description:
            request["PipelineExecutionDescription"] = description[:3072]
        return str(self.client.start_pipeline_execution(**request)["PipelineExecutionArn"])

    def describe(self, arn: str) -> PipelineExecution:
        answer = self.client.describe_pipeline_execution(PipelineExecutionArn=arn)
        return PipelineExecution(
            arn=arn,
            status=str(answer["PipelineExecutionStatus"]),
            display_name=str(answer.get("PipelineExecutionDisplayName") or ""),
            failure_reason=str(answer.get("FailureReason") or ""),
        )

    def steps(self, arn: str) -> list[PipelineStep]:
        """Every step of the execution so far, oldest first."""
        found = []
        pages = self.client.get_paginator("list_pipeline_execution_steps").paginate(
            PipelineExecutionArn=arn, SortOrder="Ascending"
        )
        for page in pages:
            for step in page.get("PipelineExecutionSteps", []):
                found.append(
                    PipelineStep(
                        name=str(step.get("StepName", "?")),
                        status=str(step.get("StepStatus", "?")),
                        failure_reason=str(step.get("FailureReason") or ""),
                    )
                )
        return found

    def stop(self, arn: str) -> bool:
        """Ask SageMaker to stop the execution if it is still executing; True when it was asked.

        Described first: an execution that already ended (or is stopping) is left alone, so a
        second kill, or a kill racing the end of the run, sends no second request.
        """
        try:
            execution = self.describe(arn)
        except Exception as exc:
            if is_missing(exc):
                log.warning("Pipeline execution %s does not exist; nothing to stop", arn)
                return False
            raise
        if execution.status != EXECUTING:
            log.info("Pipeline execution %s is %s; not stopping it", arn, execution.status)
            return False
        self.client.stop_pipeline_execution(
            PipelineExecutionArn=arn, ClientRequestToken=hashlib.sha256(f"stop {arn}".encode()).hexdigest()
        )
        log.info("Asked SageMaker to stop pipeline execution %s", arn)
        return True

    def wait_while_stopping(self, execution: PipelineExecution) -> PipelineExecution:
        while execution.status == STOPPING:
            self.sleep(self.poll_seconds)
            execution = self.describe(execution.arn)
        return execution

    def find_or_start(
        self,
        pipeline_name: str,
        base_name: str,
        parameters: list[dict[str, str]],
        *,
        created_after: datetime | None = None,
        description: str | None = None,
    ) -> tuple[PipelineExecution, bool]:
        """The run's execution: ``(execution, started)``.

        Walks the attempts ``base_name``, ``base_name-a2``, ...: the first one executing or
        succeeded is the run's execution (re-attached, not started); one that failed or was
        stopped is passed over (one that is stopping is waited for first, so two executions never
        run for one run); the first name never used is started. SageMaker's own list of executions
        is the record of the attempts: nothing else has to survive between tries.
        """
        last = "none"
        for attempt in range(1, MAX_ATTEMPTS + 1):
            name = attempt_display_name(base_name, attempt)
            execution = self.find(pipeline_name, name, created_after)
            if execution is None:
                arn = self.start(pipeline_name, name, parameters, description)
                log.info("Started %s execution %s as %s (attempt %d)", pipeline_name, name, arn, attempt)
                return self.describe(arn), True
            execution = self.wait_while_stopping(execution)
            if execution.status in (EXECUTING, "Succeeded"):
                log.info("Pipeline execution %s (%s) is %s: re-attaching", name, execution.arn, execution.status)
                return execution, False
            last = f"{execution.arn} {execution.status}: {execution.failure_reason}"
            log.info(
                "Pipeline execution %s ended %s (%s); the next attempt gets a new name",
                name,
                execution.status,
                execution.failure_reason,
            )
        raise PipelineExecutionFailed(
            f"pipeline {pipeline_name}: {MAX_ATTEMPTS} attempts of {base_name} ended without success; the last: {last}"
        )
