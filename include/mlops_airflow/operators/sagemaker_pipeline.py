"""Run an existing SageMaker Pipeline as one step of a DAG: started once per run, waited for deferred."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator, Context

if TYPE_CHECKING:
    from mlops_core.sagemaker_pipeline import PipelineExecution, SageMakerPipelines

# An execution of this run cannot be older than the run; the margin covers clocks that disagree.
CLOCK_MARGIN = timedelta(hours=1)


class StartSageMakerPipelineOperator(BaseOperator):
    """Start an execution of the SageMaker Pipeline ``pipeline_name`` and wait for it, deferred.

    The execution's display name is deterministic per DAG run, task and what the execution depends
    on (pipeline and parameters), so a retry re-attaches instead of starting a second execution: one
    executing is waited for again, one that succeeded is reused, and after one that failed or was
    stopped the next attempt starts under ``<name>-a2``, ... The start request carries a
    ``ClientRequestToken`` derived from the same inputs, so a start whose answer was lost is not
    repeated by SageMaker either. See :mod:`mlops_core.sagemaker_pipeline` for how SageMaker's
    (non-unique) display names and tokens are used.

    With ``deferrable=True`` (the default) the task frees its worker slot while the pipeline runs:
    a :class:`~mlops_airflow.triggers.sagemaker_pipeline.PipelineExecutionTrigger` polls the
    execution in the triggerer and writes each step's status changes to this task's log.
    ``deferrable=False`` polls in the worker. Killing the task stops the execution (``on_kill`` in
    the worker, the trigger's ``on_kill`` while deferred), once. An execution that fails raises
    :class:`~mlops_core.sagemaker_pipeline.PipelineExecutionFailed` with SageMaker's FailureReason
    and the failed steps' reasons.

    The client comes from the Amazon provider's ``SageMakerHook`` for ``aws_conn_id`` (default:
    ``aws.conn_id`` of the environment's settings), so the connection decides account, region and
    credentials. Parameters are checked against SageMaker's limits before any call
    (:func:`~mlops_core.sagemaker_pipeline.pipeline_parameters`); bad ones fail the task without
    retries.

    Returns ``{"pipeline_name", "execution_arn", "display_name", "status", "reattached"}``.

    :param pipeline_name: the pipeline to start (its name, not its ARN). (templated)
    :param parameters: pipeline parameters, ``{name: value}``; values are strings (or numbers,
        sent as text); names must exist in the pipeline definition. (templated)
    :param display_name: base of the execution's display name; default derived from the DAG run,
        task, pipeline and parameters. One given must differ per run (template it, e.g. with
        ``{{ run_id }}``): it is how a retry finds its execution. (templated)
    :param description: the execution's description in SageMaker. (templated)
    :param env: environment whose settings name the connection; default the run's ``env`` Param. (templated)
    :param aws_conn_id: Airflow connection to use instead of the settings' ``aws.conn_id``. (templated)
    :param deferrable: wait in the triggerer (``True``) or in the worker.
    :param poll_interval: seconds between status checks.
    :param max_wait: give up waiting (the task fails; the execution keeps running) after this long;
        ``None``: wait as long as the pipeline runs.
    """

    template_fields: Sequence[str] = (
        "pipeline_name",
        "parameters",
        "display_name",
        "description",
        "env",
        "aws_conn_id",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"parameters": "json"}
    ui_color = "#f5e9d7"

    def __init__(
        self,
        *,
        pipeline_name: str,
        parameters: Mapping[str, Any] | None = None,
        display_name: str | None = None,
        description: str | None = None,
        env: str | None = None,
        aws_conn_id: str | None = None,
        deferrable: bool = True,
        poll_interval: float = 30.0,
        max_wait: timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline_name = pipeline_name
        self.parameters = parameters
        self.display_name = display_name
        self.description = description
        self.env = env
        self.aws_conn_id = aws_conn_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.max_wait = max_wait
        self._pipelines: SageMakerPipelines | None = None
        self._execution_arn: str | None = None
        self._stopped = False

    def _conn_id(self, context: Context) -> str:
        if self.aws_conn_id:
            return self.aws_conn_id
        from mlops_airflow.runtime import settings_for

        return settings_for(context, self.env).aws.conn_id

    def _base_name(self, context: Context, parameters: list[dict[str, str]]) -> str:
        from mlops_airflow.runtime import run_key
        from mlops_core.sagemaker_pipeline import display_name

        if self.display_name:
            return display_name(self.display_name)
        ti = context.get("ti")
        spec = {
            "pipeline": self.pipeline_name,
            "parameters": parameters,
            "task": self.task_id,
            "map_index": getattr(ti, "map_index", -1),
        }
        return display_name(run_key(context, self.task_id[:40], spec=spec))

    @staticmethod
    def _created_after(context: Context) -> datetime | None:
        run = context.get("dag_run")
        began = getattr(run, "run_after", None) or getattr(run, "queued_at", None)
        return began - CLOCK_MARGIN if isinstance(began, datetime) else None

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_airflow.runtime import fail_fast
        from mlops_airflow.triggers.sagemaker_pipeline import PipelineExecutionTrigger, sagemaker_pipelines
        from mlops_core.sagemaker_pipeline import check_pipeline_name, pipeline_parameters

        with fail_fast():
            pipeline = check_pipeline_name(self.pipeline_name)
            parameters = pipeline_parameters(self.parameters)
            conn_id = self._conn_id(context)
            base = self._base_name(context, parameters)
            self._pipelines = sagemaker_pipelines(conn_id)
            self.log.info("Pipeline %s, execution %s, parameters %s", pipeline, base, parameters)
            execution, started = self._pipelines.find_or_start(
                pipeline,
                base,
                parameters,
                created_after=self._created_after(context),
                description=self.description,
            )
        self._execution_arn = execution.arn
        if not execution.terminal and self.deferrable:
            self.log.info(
                "Deferring while pipeline execution %s runs (status every %ss)", execution.arn, self.poll_interval
            )
            self.defer(
                trigger=PipelineExecutionTrigger(
                    execution_arn=execution.arn, aws_conn_id=conn_id, poll_interval=self.poll_interval
                ),
                method_name="execute_complete",
                kwargs={"reattached": not started, "display_name": execution.display_name},
                timeout=self.max_wait,
            )
        if not execution.terminal:
            execution = self._wait(self._pipelines, execution)
        if execution.outcome != "success":
            from mlops_core.sagemaker_pipeline import PipelineExecutionFailed, failure_message

            raise PipelineExecutionFailed(
                f"pipeline execution {execution.arn} {execution.status}: "
                f"{failure_message(execution, self._pipelines.steps(execution.arn))}"
            )
        return self._result(execution.arn, execution.display_name, execution.status, reattached=not started)

    def _wait(self, pipelines: SageMakerPipelines, execution: PipelineExecution) -> PipelineExecution:
        """Poll in the worker (``deferrable=False``), logging step changes, until the execution ends."""
        import time

        from mlops_core.sagemaker_pipeline import step_changes

        seen: dict[str, str] = {}
        deadline = time.monotonic() + self.max_wait.total_seconds() if self.max_wait else None
        while True:
            execution = pipelines.describe(execution.arn)
            for line in step_changes(seen, pipelines.steps(execution.arn)):
                self.log.info("[%s] %s", execution.display_name, line)
            if execution.terminal:
                return execution
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"pipeline execution {execution.arn} still {execution.status} after {self.max_wait}")
            time.sleep(self.poll_interval)

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any] | None = None,
        reattached: bool = False,
        display_name: str = "",
    ) -> dict[str, Any]:
        """Resume after the trigger fired: raise with SageMaker's failure reason, or return the execution."""
        from mlops_core.sagemaker_pipeline import PipelineExecutionFailed

        if not event:
            raise PipelineExecutionFailed("the pipeline execution's trigger fired no event")
        self._execution_arn = event.get("execution_arn")
        if event.get("status") != "success":
            ended = event.get("execution_status") or event.get("status")
            raise PipelineExecutionFailed(
                f"pipeline execution {event.get('execution_arn')} {ended}: {event.get('message')}"
            )
        return self._result(str(event["execution_arn"]), display_name, str(event["execution_status"]), reattached)

    def _result(self, arn: str, display_name: str, status: str, reattached: bool) -> dict[str, Any]:
        self.log.info("Pipeline execution %s %s (re-attached: %s)", arn, status, reattached)
        return {
            "pipeline_name": self.pipeline_name,
            "execution_arn": arn,
            "display_name": display_name,
            "status": status,
            "reattached": reattached,
        }

    def on_kill(self) -> None:
        if self._pipelines is None or not self._execution_arn or self._stopped:
            return
        self._stopped = True  # once: a second kill (or a kill racing the first) sends nothing more
        self.log.info("Stopping pipeline execution %s", self._execution_arn)
        self._pipelines.stop(self._execution_arn)
