"""The pure parts of running a SageMaker Pipeline: parameters as SageMaker takes them, names, tokens, statuses."""

from __future__ import annotations

import pytest

from mlops_core.errors import PermanentError
from mlops_core.sagemaker_pipeline import (
    MAX_DISPLAY_NAME,
    PipelineExecution,
    PipelineParametersError,
    PipelineStep,
    attempt_display_name,
    check_pipeline_name,
    display_name,
    failure_message,
    pipeline_parameters,
    request_token,
    step_changes,
)


def test_parameters_become_sorted_name_value_strings():
    assert pipeline_parameters({"Epochs": 10, "InputUri": "s3://b/k", "Rate": 0.5, "Empty": ""}) == [
        {"Name": "Empty", "Value": ""},
        {"Name": "Epochs", "Value": "10"},
        {"Name": "InputUri", "Value": "s3://b/k"},
        {"Name": "Rate", "Value": "0.5"},
    ]
    assert pipeline_parameters(None) == [] and pipeline_parameters({}) == []
    assert pipeline_parameters({"n" * 256: "v" * 1024})[0]["Value"] == "v" * 1024  # at the limits


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (["Epochs", "10"], "must be a mapping"),
        ({"": "x"}, "name ''"),
        ({"a.b": "x"}, "name 'a.b'"),
        ({"n" * 257: "x"}, "SageMaker takes 1-256"),
        ({1: "x"}, "name 1"),
        ({"Flag": False}, "value False is a bool"),
        ({"Rows": None}, "value None is a NoneType"),
        ({"List": ["a"]}, "is a list"),
        ({"Text": "v" * 1025}, "value of 1025 characters"),
        ({f"P{i}": "1" for i in range(201)}, "at most 200"),
    ],
)
def test_parameters_sagemaker_would_refuse_are_refused_here(parameters, message):
    with pytest.raises(PipelineParametersError, match=message) as refused:
        pipeline_parameters(parameters)
    assert isinstance(refused.value, PermanentError)  # the task fails at once, no retries


def test_display_names_fit_sagemakers_pattern_and_length():
    assert display_name("run_pipeline-20260201T000000-ab12") == "run-pipeline-20260201T000000-ab12"
    assert display_name("--a__b..c--") == "a-b-c"
    long = display_name("x" * 200)
    assert len(long) == MAX_DISPLAY_NAME
    assert attempt_display_name(long, 1) == long
    second = attempt_display_name(long, 2)
    assert len(second) <= MAX_DISPLAY_NAME and second.endswith("-a2") and second != long
    with pytest.raises(PipelineParametersError):
        display_name("___")


def test_pipeline_names_are_names_not_arns():
    assert check_pipeline_name("churn-retrain-2") == "churn-retrain-2"
    for bad in ("", "-x", "x_y", "arn:aws:sagemaker:us-east-1:123456789012:pipeline/p", None):
        with pytest.raises(PipelineParametersError):
            check_pipeline_name(bad)


def test_the_request_token_is_the_same_for_the_same_request_only():
    params = pipeline_parameters({"a": "1"})
    token = request_token("p", "run-1", params)
    assert token == request_token("p", "run-1", list(params)) and 32 <= len(token) <= 128
    assert token != request_token("p", "run-1-a2", params)
    assert token != request_token("p", "run-1", pipeline_parameters({"a": "2"}))
    assert token != request_token("q", "run-1", params)


def test_statuses_map_to_outcomes():
    outcomes = {s: PipelineExecution("arn", s).outcome for s in ("Executing", "Stopping", "Succeeded", "Failed")}
    assert outcomes == {"Executing": "running", "Stopping": "running", "Succeeded": "success", "Failed": "failed"}
    assert PipelineExecution("arn", "Stopped").outcome == "stopped"
    assert PipelineExecution("arn", "CompletedWithFailures").outcome == "failed"  # not every output exists
    assert not PipelineExecution("arn", "Stopping").terminal and PipelineExecution("arn", "Stopped").terminal


def test_step_changes_are_logged_once_each():
    seen: dict[str, str] = {}
    assert step_changes(seen, [PipelineStep("Prep", "Executing")]) == ["step Prep: Executing"]
    assert step_changes(seen, [PipelineStep("Prep", "Executing")]) == []
    assert step_changes(seen, [PipelineStep("Prep", "Succeeded"), PipelineStep("Train", "Failed", "OOM")]) == [
        "step Prep: Succeeded",
        "step Train: Failed: OOM",
    ]


def test_the_failure_message_carries_sagemakers_reason_and_each_failed_step():
    steps = [PipelineStep("Prep", "Succeeded"), PipelineStep("Train", "Failed", "AlgorithmError: y")]
    message = failure_message(PipelineExecution("arn", "Failed", failure_reason="Step failure"), steps)
    assert message == "Step failure; failed steps: Train (AlgorithmError: y)"
    assert "without a reason" in failure_message(PipelineExecution("arn", "Stopped"), [])
