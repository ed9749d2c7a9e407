"""What moto does differently from AWS, and the extensions in tests/moto_server.py that close the gap.

Each test states AWS's behaviour and checks the moto server of the session has it. If a moto
upgrade moves the internals an extension patches, these fail first.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from botocore.exceptions import ClientError

from tests.moto_server import unique_name


def test_a_wrong_sha256_checksum_is_refused_with_bad_digest(moto_server):
    """AWS recomputes x-amz-checksum-sha256 and answers 400 BadDigest; moto 5.2.5 alone stores it as given."""
    s3 = moto_server.client("s3")
    bucket = unique_name("fidelity")
    s3.create_bucket(Bucket=bucket)
    wrong = base64.b64encode(hashlib.sha256(b"other bytes").digest()).decode()
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=bucket, Key="k", Body=b"these bytes", ChecksumSHA256=wrong)
    assert caught.value.response["Error"]["Code"] == "BadDigest"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    right = base64.b64encode(hashlib.sha256(b"these bytes").digest()).decode()
    s3.put_object(Bucket=bucket, Key="k", Body=b"these bytes", ChecksumSHA256=right)
    s3.put_object(Bucket=bucket, Key="k2", Body=b"these bytes", ChecksumAlgorithm="SHA256")  # computed by botocore
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"these bytes"


def test_copy_source_if_match_refuses_another_object(moto_server):
    """AWS answers 412 PreconditionFailed when the source's ETag is not the one given; moto 5.2.5 alone copies
    whatever is there now (the S3 drop zone archives only the object it read, and leans on this)."""
    s3 = moto_server.client("s3")
    bucket = unique_name("fidelity")
    s3.create_bucket(Bucket=bucket)
    first = s3.put_object(Bucket=bucket, Key="src", Body=b"first")["ETag"]
    s3.put_object(Bucket=bucket, Key="src", Body=b"second")
    with pytest.raises(ClientError) as caught:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"}, CopySourceIfMatch=first)
    assert caught.value.response["Error"]["Code"] == "PreconditionFailed"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3.list_objects_v2(Bucket=bucket, Prefix="dst").get("KeyCount") == 0
    now = s3.head_object(Bucket=bucket, Key="src")["ETag"]
    s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"}, CopySourceIfMatch=now)
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == b"second"


def test_get_and_delete_with_if_match_refuse_another_object(moto_server):
    """As on AWS (moto agrees): GetObject and DeleteObject with IfMatch answer 412 for another ETag."""
    s3 = moto_server.client("s3")
    bucket = unique_name("fidelity")
    s3.create_bucket(Bucket=bucket)
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"first")["ETag"]
    s3.put_object(Bucket=bucket, Key="k", Body=b"second")
    for call in (s3.get_object, s3.delete_object):
        with pytest.raises(ClientError) as caught:
            call(Bucket=bucket, Key="k", IfMatch=first)
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"second"


def test_an_unfinished_multipart_upload_is_invisible(moto_server):
    """As on AWS (moto agrees): parts uploaded but not completed are no object."""
    s3 = moto_server.client("s3")
    bucket = unique_name("fidelity")
    s3.create_bucket(Bucket=bucket)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="half")
    s3.upload_part(Bucket=bucket, Key="half", UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 1024)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="half")


def test_update_model_package_changes_only_what_is_sent(moto_server):
    """SageMaker's UpdateModelPackage leaves unsent fields alone; moto 5.2.5 alone resets them."""
    sm = moto_server.client("sagemaker")
    group = unique_name("fidelity")
    sm.create_model_package_group(ModelPackageGroupName=group)
    arn = sm.create_model_package(
        ModelPackageGroupName=group,
        ModelPackageDescription="d",
        ModelApprovalStatus="PendingManualApproval",
        CustomerMetadataProperties={"a": "1", "b": "2"},
    )["ModelPackageArn"]
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved", ApprovalDescription="ok")
    sm.update_model_package(ModelPackageArn=arn, CustomerMetadataProperties={"c": "3"})
    sm.update_model_package(ModelPackageArn=arn, CustomerMetadataPropertiesToRemove=["a"])
    described = sm.describe_model_package(ModelPackageName=arn)
    assert described["ModelApprovalStatus"] == "Approved"
    assert described["ApprovalDescription"] == "ok"
    assert described["CustomerMetadataProperties"] == {"b": "2", "c": "3"}


def test_training_job_names_are_unique_forever_and_jobs_run_until_they_end(moto_server):
    """SageMaker: ResourceInUse for a used name, InProgress until the job ends, StopTrainingJob stops it."""
    s3, sm = moto_server.client("s3"), moto_server.client("sagemaker")
    bucket = unique_name("fidelity")
    s3.create_bucket(Bucket=bucket)
    name = unique_name("job")
    spec = {
        "AlgorithmSpecification": {"TrainingImage": "img:1", "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::123456789012:role/sagemaker",
        "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 60},
    }
    before = moto_server.calls("sagemaker", "CreateTrainingJob")
    sm.create_training_job(TrainingJobName=name, **spec)
    with pytest.raises(ClientError) as caught:
        sm.create_training_job(TrainingJobName=name, **spec)
    assert caught.value.response["Error"]["Code"] == "ResourceInUse"
    assert moto_server.calls("sagemaker", "CreateTrainingJob") == before + 2  # both reached the server
    assert sm.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] == "InProgress"
    sm.stop_training_job(TrainingJobName=name)
    assert sm.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] == "Stopping"
    moto_server.finish_training_job(name, "Stopped")
    assert sm.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] == "Stopped"
    failed = unique_name("job")
    sm.create_training_job(TrainingJobName=failed, **spec)
    moto_server.finish_training_job(failed, "Failed", "AlgorithmError: boom")
    described = sm.describe_training_job(TrainingJobName=failed)
    assert described["TrainingJobStatus"] == "Failed" and described["FailureReason"] == "AlgorithmError: boom"


def test_endpoint_names_are_unique_and_update_endpoint_switches_the_config(moto_server):
    """SageMaker refuses to create what exists and implements UpdateEndpoint; moto 5.2.5 overwrites and 500s."""
    sm = moto_server.client("sagemaker")
    model, endpoint = unique_name("model"), unique_name("endpoint")
    container = {"Image": "img:1", "ModelDataUrl": "s3://b/model.tar.gz"}
    sm.create_model(ModelName=model, ExecutionRoleArn="arn:aws:iam::123456789012:role/r", PrimaryContainer=container)
    variant = [{"VariantName": "main", "ModelName": model, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}]
    sm.create_endpoint_config(EndpointConfigName=f"{endpoint}-a", ProductionVariants=variant)
    sm.create_endpoint_config(EndpointConfigName=f"{endpoint}-b", ProductionVariants=variant)
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=f"{endpoint}-a")
    for call in (
        lambda: sm.create_model(
            ModelName=model, ExecutionRoleArn="arn:aws:iam::123456789012:role/r", PrimaryContainer=container
        ),
        lambda: sm.create_endpoint_config(EndpointConfigName=f"{endpoint}-a", ProductionVariants=variant),
        lambda: sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=f"{endpoint}-b"),
    ):
        with pytest.raises(ClientError, match="Cannot create already existing"):
            call()
    sm.update_endpoint(EndpointName=endpoint, EndpointConfigName=f"{endpoint}-b")
    described = sm.describe_endpoint(EndpointName=endpoint)
    assert described["EndpointConfigName"] == f"{endpoint}-b" and described["EndpointStatus"] == "InService"
    group = unique_name("group")
    sm.create_model_package_group(ModelPackageGroupName=group)
    with pytest.raises(ClientError, match="Model Package Group already exists"):
        sm.create_model_package_group(ModelPackageGroupName=group)


def test_pipeline_executions_run_until_they_end_and_a_repeated_token_starts_nothing(moto_server):
    """SageMaker: an execution is Executing until its steps end; a repeated ClientRequestToken answers the first
    execution; StopPipelineExecution stops; steps and FailureReason are listed. moto 5.2.5: Succeeded at once, a
    new execution per request, no StopPipelineExecution or ListPipelineExecutionSteps, an empty FailureReason."""
    import json

    sm = moto_server.client("sagemaker")
    pipeline = unique_name("pipeline")
    sm.create_pipeline(
        PipelineName=pipeline,
        PipelineDefinition=json.dumps({"Version": "2020-12-01", "Steps": []}),
        RoleArn="arn:aws:iam::123456789012:role/r",
    )
    token = "t" * 40
    first = sm.start_pipeline_execution(PipelineName=pipeline, ClientRequestToken=token)["PipelineExecutionArn"]
    again = sm.start_pipeline_execution(PipelineName=pipeline, ClientRequestToken=token)["PipelineExecutionArn"]
    assert again == first
    other = sm.start_pipeline_execution(PipelineName=pipeline, ClientRequestToken="u" * 40)["PipelineExecutionArn"]
    assert other != first
    assert len(sm.list_pipeline_executions(PipelineName=pipeline)["PipelineExecutionSummaries"]) == 2
    described = sm.describe_pipeline_execution(PipelineExecutionArn=first)
    assert described["PipelineExecutionStatus"] == "Executing" and "FailureReason" not in described
    moto_server.set_pipeline_steps(first, ("Prepare", "Succeeded"), ("Train", "Failed", "AlgorithmError: boom"))
    steps = sm.list_pipeline_execution_steps(PipelineExecutionArn=first, SortOrder="Ascending")
    assert [(s["StepName"], s["StepStatus"]) for s in steps["PipelineExecutionSteps"]] == [
        ("Prepare", "Succeeded"),
        ("Train", "Failed"),
    ]
    assert steps["PipelineExecutionSteps"][1]["FailureReason"] == "AlgorithmError: boom"
    moto_server.finish_pipeline_execution(first, "Failed", "Step failure: One or multiple steps failed.")
    described = sm.describe_pipeline_execution(PipelineExecutionArn=first)
    assert described["PipelineExecutionStatus"] == "Failed"
    assert described["FailureReason"] == "Step failure: One or multiple steps failed."
    sm.stop_pipeline_execution(PipelineExecutionArn=other, ClientRequestToken="s" * 40)
    assert sm.describe_pipeline_execution(PipelineExecutionArn=other)["PipelineExecutionStatus"] == "Stopping"
    moto_server.finish_pipeline_execution(other, "Stopped")
    assert sm.describe_pipeline_execution(PipelineExecutionArn=other)["PipelineExecutionStatus"] == "Stopped"
