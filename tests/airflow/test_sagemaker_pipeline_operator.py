"""StartSageMakerPipelineOperator and its trigger against the session's moto server.

moto alone would prove little here: it marks every execution ``Succeeded`` the moment it starts,
starts a second execution for a repeated ClientRequestToken and implements neither
StopPipelineExecution nor ListPipelineExecutionSteps. ``tests/moto_server.py`` makes it behave
like SageMaker (an execution runs until the test ends it, with the steps the test gives it), and
the calls are counted where they land, at the server.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import types

import pendulum
import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from mlops_airflow.operators.sagemaker_pipeline import StartSageMakerPipelineOperator
from mlops_airflow.triggers.sagemaker_pipeline import PipelineExecutionTrigger
from mlops_core.sagemaker_pipeline import PipelineExecutionFailed
from tests.airflow.test_training_operator import execute_in_worker, first_event, rebuilt, run_task
from tests.moto_server import unique_name

CONN = "mlops_aws_pipeline_test"
ROLE = "arn:aws:iam::123456789012:role/mlops-pipelines"


@pytest.fixture
def pipeline(moto_server, monkeypatch) -> str:
    """An existing pipeline, as the users of the AWS seed have them, and a connection to its account."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", moto_server.connection_uri())
    name = unique_name("churn-pipeline")
    definition = {
        "Version": "2020-12-01",
        "Parameters": [{"Name": "InputUri", "Type": "String"}, {"Name": "Epochs", "Type": "Integer"}],
        "Steps": [],
    }
    moto_server.client("sagemaker").create_pipeline(
        PipelineName=name, PipelineDefinition=json.dumps(definition), RoleArn=ROLE
    )
    return name


def _context(run_id: str, dag_id: str = "retrain_on_sagemaker") -> dict:
    return {
        "params": {"env": "dev"},
        "run_id": run_id,
        "dag": types.SimpleNamespace(dag_id=dag_id),
        "dag_run": types.SimpleNamespace(run_after=pendulum.now("UTC").subtract(minutes=5)),
        "logical_date": pendulum.datetime(2026, 2, 1, tz="UTC"),
    }


def _operator(pipeline: str, **kwargs) -> StartSageMakerPipelineOperator:
    kwargs.setdefault("parameters", {"InputUri": "s3://data/churn/v3", "Epochs": 10})
    return StartSageMakerPipelineOperator(
        task_id="run_pipeline", pipeline_name=pipeline, aws_conn_id=CONN, poll_interval=0.1, **kwargs
    )


def _executions(moto_server, pipeline: str) -> list[dict]:
    return moto_server.client("sagemaker").list_pipeline_executions(PipelineName=pipeline)["PipelineExecutionSummaries"]


def _after_polls(moto_server, polls: int, action) -> threading.Thread:
    """Run ``action`` once the trigger has listed the steps ``polls`` more times (it saw them running)."""
    start = moto_server.calls("sagemaker", "ListPipelineExecutionSteps")

    def wait_then_act() -> None:
        deadline = time.monotonic() + 60
        while moto_server.calls("sagemaker", "ListPipelineExecutionSteps") < start + polls:
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        action()

    thread = threading.Thread(target=wait_then_act)
    thread.start()
    return thread


def test_an_execution_defers_succeeds_and_a_retry_reattaches(pipeline, moto_server, capsys):
    starts = moto_server.calls("sagemaker", "StartPipelineExecution")
    with pytest.raises(TaskDeferred) as deferred:
        _operator(pipeline).execute(_context("manual__p1"))
    trigger = deferred.value.trigger
    assert isinstance(trigger, PipelineExecutionTrigger)
    classpath, kwargs = trigger.serialize()
    assert classpath == "mlops_airflow.triggers.sagemaker_pipeline.PipelineExecutionTrigger"
    assert kwargs == {"execution_arn": trigger.execution_arn, "aws_conn_id": CONN, "poll_interval": 0.1}
    assert rebuilt(trigger).serialize() == (classpath, kwargs)
    arn = trigger.execution_arn
    execution = moto_server.pipeline_execution(arn)
    assert execution.pipeline_execution_status == "Executing"
    assert execution.pipeline_parameters == [
        {"Name": "Epochs", "Value": "10"},
        {"Name": "InputUri", "Value": "s3://data/churn/v3"},
    ]
    assert len(execution.client_request_token) == 64

    moto_server.set_pipeline_steps(arn, ("Preprocess", "Succeeded"), ("Train", "Executing"))

    def finish() -> None:
        moto_server.set_pipeline_steps(arn, ("Preprocess", "Succeeded"), ("Train", "Succeeded"))
        moto_server.finish_pipeline_execution(arn, "Succeeded")

    finisher = _after_polls(moto_server, 2, finish)
    capsys.readouterr()
    event = first_event(rebuilt(trigger), timeout=60)
    finisher.join()
    assert event["status"] == "success" and event["execution_status"] == "Succeeded"
    logged = capsys.readouterr().out  # the trigger's log is the task's log
    assert "step Preprocess: Succeeded" in logged and "step Train: Executing" in logged
    assert "step Train: Succeeded" in logged and logged.count("step Preprocess") == 1  # changes only
    result = _operator(pipeline).execute_complete(_context("manual__p1"), event=event, **deferred.value.kwargs)
    assert result["execution_arn"] == arn and result["status"] == "Succeeded" and result["reattached"] is False

    again = run_task(_operator(pipeline), _context("manual__p1"))  # a retry of the task
    assert again["execution_arn"] == arn and again["reattached"] is True
    assert moto_server.calls("sagemaker", "StartPipelineExecution") == starts + 1  # one execution per run
    assert len(_executions(moto_server, pipeline)) == 1

    other = _operator(pipeline, parameters={"InputUri": "s3://data/churn/v4", "Epochs": "10"})
    with pytest.raises(TaskDeferred) as changed:  # other parameters: another execution, not the old one
        other.execute(_context("manual__p1"))
    assert changed.value.trigger.execution_arn != arn
    with pytest.raises(TaskDeferred) as next_run:
        _operator(pipeline).execute(_context("manual__p2"))
    assert next_run.value.trigger.execution_arn not in (arn, changed.value.trigger.execution_arn)
    assert moto_server.calls("sagemaker", "StartPipelineExecution") == starts + 3


def test_a_failed_execution_raises_with_sagemakers_reason_and_the_retry_starts_a_new_attempt(pipeline, moto_server):
    starts = moto_server.calls("sagemaker", "StartPipelineExecution")
    with pytest.raises(TaskDeferred) as deferred:
        _operator(pipeline).execute(_context("manual__p3"))
    arn = deferred.value.trigger.execution_arn
    moto_server.set_pipeline_steps(
        arn, ("Preprocess", "Succeeded"), ("Train", "Failed", "ClientError: AlgorithmError: single class in y")
    )
    moto_server.finish_pipeline_execution(arn, "Failed", failure_reason="Step failure: One or multiple steps failed.")
    event = first_event(rebuilt(deferred.value.trigger), timeout=60)
    assert event["status"] == "failed"
    with pytest.raises(PipelineExecutionFailed) as failed:
        _operator(pipeline).execute_complete(_context("manual__p3"), event=event, **deferred.value.kwargs)
    assert "Failed: Step failure: One or multiple steps failed." in str(failed.value)
    assert "failed steps: Train (ClientError: AlgorithmError: single class in y)" in str(failed.value)

    with pytest.raises(TaskDeferred) as retried:  # the next try: a new attempt, never the failure again
        _operator(pipeline).execute(_context("manual__p3"))
    second = retried.value.trigger.execution_arn
    assert second != arn
    assert moto_server.calls("sagemaker", "StartPipelineExecution") == starts + 2
    names = {e["PipelineExecutionArn"]: e["PipelineExecutionDisplayName"] for e in _executions(moto_server, pipeline)}
    assert names[second] == names[arn] + "-a2"


def test_on_kill_in_the_worker_stops_the_execution_exactly_once(pipeline, moto_server):
    stops = moto_server.calls("sagemaker", "StopPipelineExecution")
    op = _operator(pipeline, deferrable=False)
    arn, worker, outcome = execute_in_worker(op, _context("manual__p4"), "_execution_arn")
    assert arn is not None
    op.on_kill()
    op.on_kill()  # Airflow may call it again; the execution is asked to stop once
    assert moto_server.pipeline_execution(arn).pipeline_execution_status == "Stopping"
    moto_server.finish_pipeline_execution(arn, "Stopped")  # SageMaker ends a stopping execution
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert moto_server.calls("sagemaker", "StopPipelineExecution") == stops + 1
    assert isinstance(outcome.get("error"), PipelineExecutionFailed) and "Stopped" in str(outcome["error"])


def test_the_triggers_on_kill_stops_the_deferred_execution_once(pipeline, moto_server):
    stops = moto_server.calls("sagemaker", "StopPipelineExecution")
    with pytest.raises(TaskDeferred) as deferred:
        _operator(pipeline).execute(_context("manual__p5"))
    trigger = rebuilt(deferred.value.trigger)
    asyncio.run(trigger.on_kill())
    asyncio.run(trigger.on_kill())  # stopping already: nothing more is sent
    assert moto_server.calls("sagemaker", "StopPipelineExecution") == stops + 1
    moto_server.finish_pipeline_execution(trigger.execution_arn, "Stopped")
    event = first_event(trigger, timeout=60)
    assert event["status"] == "stopped" and event["execution_status"] == "Stopped"


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"Input Uri": "x"}, "name 'Input Uri'"),
        ({"Flag": True}, "value True is a bool"),
        ({"InputUri": "x" * 1025}, "value of 1025 characters"),
        ({f"P{i}": "1" for i in range(201)}, "201 pipeline parameters"),
    ],
)
def test_parameters_sagemaker_would_refuse_fail_the_task_before_any_call(pipeline, moto_server, parameters, message):
    starts = moto_server.calls("sagemaker", "StartPipelineExecution")
    with pytest.raises(AirflowFailException, match=message):
        _operator(pipeline, parameters=parameters).execute(_context("manual__p6"))
    assert moto_server.calls("sagemaker", "StartPipelineExecution") == starts


def test_a_missing_pipeline_fails_without_retries(pipeline, moto_server):
    with pytest.raises(AirflowFailException, match="does not exist"):
        _operator(unique_name("no-such-pipeline")).execute(_context("manual__p7"))


def test_templated_parameters_and_the_settings_connection(pipeline, moto_server, mlops_home, monkeypatch, tmp_path):
    """Rendered fields reach SageMaker as rendered; without ``aws_conn_id`` the settings' ``aws.conn_id`` is used."""
    import shutil

    import jinja2
    import yaml

    from tests.conftest import REPO

    conf = tmp_path / "conf"
    shutil.copytree(REPO / "include" / "conf", conf)
    dev = yaml.safe_load((conf / "dev.yaml").read_text())
    dev["aws"] = {"conn_id": CONN}
    (conf / "dev.yaml").write_text(yaml.safe_dump(dev))
    monkeypatch.setenv("MLOPS_CONF_DIR", str(conf))
    op = StartSageMakerPipelineOperator(
        task_id="run_pipeline",
        pipeline_name="{{ params.pipeline }}",
        parameters={"InputUri": "s3://data/{{ params.dataset }}/{{ ds }}"},
        poll_interval=0.1,
    )
    context = {**_context("manual__p8"), "ds": "2026-02-01"}
    context["params"] = {"env": "dev", "pipeline": pipeline, "dataset": "churn"}
    op.render_template_fields(context, jinja_env=jinja2.Environment(autoescape=True))
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    assert deferred.value.trigger.aws_conn_id == CONN
    execution = moto_server.pipeline_execution(deferred.value.trigger.execution_arn)
    assert execution.pipeline_parameters == [{"Name": "InputUri", "Value": "s3://data/churn/2026-02-01"}]
