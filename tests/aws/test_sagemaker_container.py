"""The tests' SageMaker training container runs our entrypoint on a job's S3 channels like SageMaker does."""

from __future__ import annotations

import io
import json
import tarfile
import time

import pytest

from mlops_core.contract import DatasetContract
from mlops_core.training.entrypoint import prepare_ml_root
from tests.core.test_training import CONTRACT_PATH, _split, make_churn_frame
from tests.moto_server import unique_name
from tests.sagemaker_container import SageMakerTrainingContainer

ENTRYPOINT = ["python", "-m", "mlops_core.training.entrypoint"]


@pytest.fixture
def job_inputs(moto_server, tmp_path):
    """A bucket with train/test channels and the hyperparameters prepare_ml_root writes."""
    contract = DatasetContract.from_yaml(CONTRACT_PATH)
    train, test = _split(make_churn_frame(300))
    paths = prepare_ml_root(tmp_path, train, test, contract, "logistic_regression", {})
    s3 = moto_server.client("s3")
    bucket = unique_name("train")
    s3.create_bucket(Bucket=bucket)
    s3.upload_file(str(paths.train / "train.parquet"), bucket, "ts/run1/train/part-0.parquet")
    s3.upload_file(str(paths.test / "test.parquet"), bucket, "ts/run1/test/part-0.parquet")
    return {"bucket": bucket, "hyperparameters": json.loads(paths.hyperparameters.read_text())}


def create_job(moto_server, inputs, entrypoint=ENTRYPOINT, channels=("train", "test"), runtime=600) -> str:
    name = unique_name("job")
    moto_server.client("sagemaker").create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={
            "TrainingImage": "img:1",
            "TrainingInputMode": "File",
            "ContainerEntrypoint": entrypoint,
        },
        RoleArn="arn:aws:iam::123456789012:role/sagemaker",
        HyperParameters=inputs["hyperparameters"],
        InputDataConfig=[
            {
                "ChannelName": c,
                "DataSource": {
                    "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{inputs['bucket']}/ts/run1/{c}/"}
                },
            }
            for c in channels
        ],
        OutputDataConfig={"S3OutputPath": f"s3://{inputs['bucket']}/jobs"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": runtime},
    )
    return name


def members(s3, bucket: str, key: str) -> dict[str, bytes]:
    data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_a_job_trains_on_its_channels_and_leaves_model_and_metrics_where_sagemaker_does(moto_server, job_inputs):
    name = create_job(moto_server, job_inputs)
    assert SageMakerTrainingContainer(moto_server).run(name) == "Completed"
    described = moto_server.client("sagemaker").describe_training_job(TrainingJobName=name)
    assert described["TrainingJobStatus"] == "Completed"
    s3, bucket = moto_server.client("s3"), job_inputs["bucket"]
    model = members(s3, bucket, f"jobs/{name}/output/model.tar.gz")
    assert {"model.skops", "model_meta.json"} <= set(model)
    assert json.loads(model["model_meta.json"])["train_rows"] == 225
    metrics = json.loads(members(s3, bucket, f"jobs/{name}/output/output.tar.gz")["metrics.json"])
    assert metrics["test_roc_auc"] > 0.6
    assert described["ModelArtifacts"]["S3ModelArtifacts"] == f"s3://{bucket}/jobs/{name}/output/model.tar.gz"


def test_a_failing_job_ends_failed_with_the_entrypoint_reason(moto_server, job_inputs):
    name = create_job(moto_server, job_inputs, channels=("test",))  # no train channel
    assert SageMakerTrainingContainer(moto_server).run(name) == "Failed"
    described = moto_server.client("sagemaker").describe_training_job(TrainingJobName=name)
    assert described["FailureReason"].startswith("AlgorithmError: ") and "train channel" in described["FailureReason"]


def test_a_stopped_job_ends_stopped(moto_server, job_inputs):
    sleeper = ["python", "-c", "import time; time.sleep(60)"]
    container = SageMakerTrainingContainer(moto_server).start()
    try:
        name = create_job(moto_server, job_inputs, entrypoint=sleeper)
        sm = moto_server.client("sagemaker")
        deadline = time.monotonic() + 30
        while moto_server.training_job(name).training_job_status == "InProgress" and name not in container._taken:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        sm.stop_training_job(TrainingJobName=name)
        while sm.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] != "Stopped":
            assert time.monotonic() < deadline, "the container did not stop the job"
            time.sleep(0.1)
    finally:
        container.close()
    assert container.ran == [name]
