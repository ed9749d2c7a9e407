"""Deferrable wait on one execution of a SageMaker Pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    from mlops_core.sagemaker_pipeline import SageMakerPipelines


def _event(payload: dict[str, Any]) -> TriggerEvent:
    return TriggerEvent(payload)  # Airflow's TriggerEvent.__init__ is unannotated


def sagemaker_pipelines(aws_conn_id: str) -> SageMakerPipelines:
    """The pipelines client on the Amazon provider's ``SageMakerHook`` for ``aws_conn_id`` (blocking)."""
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    from mlops_core.sagemaker_pipeline import SageMakerPipelines

    return SageMakerPipelines(SageMakerHook(aws_conn_id=aws_conn_id).get_conn())


class PipelineExecutionTrigger(BaseTrigger):
    """Fires once the SageMaker Pipeline execution ``execution_arn`` has ended.

    Runs in the triggerer, so the waiting costs no worker slot. DescribePipelineExecution and
    ListPipelineExecutionSteps are polled in a thread (boto3 has no async client; the provider's
    async hook would add aiobotocore for two calls); each step whose status changed is written to
    this task's log. Only the ARN, the connection id and the interval are serialized.

    The event: ``{"status": "success" | "failed" | "stopped" | "error", "execution_arn",
    "execution_status", "message"}``; ``message`` is SageMaker's FailureReason and the failed
    steps' reasons when the execution did not succeed.

    :param execution_arn: the execution to wait for.
    :param aws_conn_id: Airflow connection of the account (``aws.conn_id`` of the settings).
    :param poll_interval: seconds between status checks.
    """

    def __init__(self, execution_arn: str, aws_conn_id: str, poll_interval: float = 30.0) -> None:
        super().__init__()  # BaseTrigger.__init__ is unannotated
        self.execution_arn = execution_arn
        self.aws_conn_id = aws_conn_id
        self.poll_interval = poll_interval
        self._pipelines: SageMakerPipelines | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"execution_arn": self.execution_arn, "aws_conn_id": self.aws_conn_id, "poll_interval": self.poll_interval},
        )

    def pipelines(self) -> SageMakerPipelines:
        if self._pipelines is None:
            self._pipelines = sagemaker_pipelines(self.aws_conn_id)
        return self._pipelines

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from mlops_core.sagemaker_pipeline import failure_message, step_changes

        try:
            pipelines = await asyncio.to_thread(self.pipelines)
        except Exception as exc:  # a missing connection, no provider: the task says why
            yield _event(self._payload("error", "", f"no SageMaker client for {self.aws_conn_id}: {exc}"))
            return
        self.log.info("Waiting for pipeline execution %s (every %ss)", self.execution_arn, self.poll_interval)
        seen: dict[str, str] = {}
        while True:
            try:
                execution = await asyncio.to_thread(pipelines.describe, self.execution_arn)
                steps = await asyncio.to_thread(pipelines.steps, self.execution_arn)
            except Exception as exc:
                from mlops_core.aws_errors import is_missing

                if not is_missing(exc):
                    raise  # throttling, a network blip: the task fails, and its retry re-attaches
                yield _event(self._payload("error", "", f"pipeline execution {self.execution_arn} is gone: {exc}"))
                return
            for line in step_changes(seen, steps):
                self.log.info("[%s] %s", execution.display_name or self.execution_arn, line)
            if execution.terminal:
                message = "" if execution.outcome == "success" else failure_message(execution, steps)
                self.log.info("Pipeline execution %s ended %s %s", self.execution_arn, execution.status, message)
                yield _event(self._payload(execution.outcome, execution.status, message))
                return
            await asyncio.sleep(self.poll_interval)

    def _payload(self, status: str, execution_status: str, message: str) -> dict[str, Any]:
        return {
            "status": status,
            "execution_arn": self.execution_arn,
            "execution_status": execution_status,
            "message": message,
        }

    async def on_kill(self) -> None:
        """The task was marked failed or cleared while deferred: stop the execution (Airflow 3.3+)."""
        pipelines = await asyncio.to_thread(self.pipelines)
        self.log.info("Stopping pipeline execution %s", self.execution_arn)
        await asyncio.to_thread(pipelines.stop, self.execution_arn)
