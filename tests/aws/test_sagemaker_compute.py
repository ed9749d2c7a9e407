"""SageMaker training jobs behind the Compute seam, against the moto server and the tests' training container."""

from __future__ import annotations

import contextlib
import io
import tarfile
import time

import pytest

from mlops_core.compute import (
    Compute,
    JobNameInUse,
    JobNotFound,
    JobSpec,
    download_outputs,
    extract_archive,
    read_metrics,
)
from mlops_core.contract import DatasetContract
from mlops_core.s3_storage import S3ObjectStore
from mlops_core.sagemaker_compute import SageMakerCompute, SageMakerTrainingSettings
from mlops_core.stages.train import ENTRYPOINT
from mlops_core.training.entrypoint import job_hyperparameters
from mlops_core.training.model import load_model
from tests.core.test_training import CONTRACT_PATH, _split, make_churn_frame
from tests.moto_server import unique_name
from tests.sagemaker_container import SageMakerTrainingContainer

TRAINING = SageMakerTrainingSettings(role_arn="arn:aws:iam::123456789012:role/mlops-training", image="img:1")


@pytest.fixture
def store(moto_server):
    bucket = unique_name("compute")
    moto_server.client("s3").create_bucket(Bucket=bucket)
    store = S3ObjectStore(moto_server.code_client("s3"), bucket, "mlops/dev")
    train, test = _split(make_churn_frame(300))
    store.put_bytes("training_sets/ts1/train.parquet", train.to_parquet(index=False))
    store.put_bytes("training_sets/ts1/holdout.parquet", test.to_parquet(index=False))
    return store


@pytest.fixture
def compute(moto_server, store):
    return SageMakerCompute(moto_server.code_client("sagemaker"), store, TRAINING)


def spec(store: S3ObjectStore, name: str | None = None, **changes) -> JobSpec:
    contract = DatasetContract.from_yaml(CONTRACT_PATH)
    fields = {
        "name": name or unique_name("train"),
        "entrypoint": ENTRYPOINT,
        "inputs": {
            "train": store.uri("training_sets/ts1/train.parquet"),
            "test": store.uri("training_sets/ts1/holdout.parquet"),
        },
        "output_uri": store.uri("jobs"),
        "hyperparameters": job_hyperparameters(contract, "logistic_regression", {}),
        "max_runtime_seconds": 600,
    }
    return JobSpec(**{**fields, **changes})


def test_a_job_runs_on_sagemaker_and_its_model_and_metrics_come_back_through_the_store(
    moto_server, compute, store, tmp_path
):
    assert isinstance(compute, Compute)
    job = compute.submit(spec(store))
    assert job.status == "InProgress" and job.model_uri is None
    request = moto_server.training_job(job.name)
    assert request.algorithm_specification["ContainerEntrypoint"] == list(ENTRYPOINT)
    assert request.input_data_config[0]["DataSource"]["S3DataSource"]["S3Uri"].endswith("/holdout.parquet")
    assert SageMakerTrainingContainer(moto_server).run(job.name) == "Completed"
    done = compute.describe(job.name)
    assert done.status == "Completed" and done.terminal
    assert done.model_uri == store.uri(f"jobs/{job.name}/output/model.tar.gz")
    assert done.metrics_uri == store.uri(f"jobs/{job.name}/output/output.tar.gz")
    metrics = read_metrics(store, done.metrics_uri)
    assert set(metrics) == {"test_roc_auc", "test_accuracy", "test_f1", "test_log_loss"}
    files = download_outputs(store, done.model_uri, tmp_path / "model")
    assert {p.name for p in files} >= {"model.skops", "model_meta.json"}
    _pipeline, meta = load_model(tmp_path / "model")
    assert meta["algorithm"] == "logistic_regression" and meta["metrics"] == metrics


def test_a_training_set_becomes_one_channel_per_split_from_its_s3_prefix(moto_server, compute, store, mlops_home):
    """A channel-layout training set (train/, validation/, test/) on S3: the job gets each folder as an
    S3Prefix channel, and the training container finds its data there."""
    from mlops_core.settings import load_settings
    from mlops_core.stages.train import channel_key, training_job_spec

    train, test = _split(make_churn_frame(300))
    validation = train.tail(40)
    for channel, frame in (("train", train.head(len(train) - 40)), ("validation", validation), ("test", test)):
        store.put_bytes(channel_key("training_sets/ts2", channel), frame.to_parquet(index=False))
    manifest = {
        "key": "training_sets/ts2",
        "channels": {c: f"training_sets/ts2/{c}/" for c in ("train", "validation", "test")},
        "train_rows": len(train) - 40,
        "validation_rows": len(validation),
        "holdout_rows": len(test),
    }
    spec = training_job_spec(load_settings("dev"), manifest, unique_name("channels"), store)
    job = compute.submit(spec)
    channels = {
        c["ChannelName"]: c["DataSource"]["S3DataSource"] for c in moto_server.training_job(job.name).input_data_config
    }
    assert set(channels) == {"train", "validation", "test"}
    for name, source in channels.items():
        assert source["S3DataType"] == "S3Prefix"
        assert source["S3Uri"] == f"s3://{store.bucket}/mlops/dev/training_sets/ts2/{name}/"
    assert SageMakerTrainingContainer(moto_server).run(job.name) == "Completed"
    metrics = read_metrics(store, compute.describe(job.name).metrics_uri)
    assert "test_roc_auc" in metrics  # scored on the test channel


def test_names_are_unique_forever_and_unknown_names_say_so(moto_server, compute, store):
    name = unique_name("train")
    compute.submit(spec(store, name))
    with pytest.raises(JobNameInUse, match="exists already"):
        compute.submit(spec(store, name))
    with pytest.raises(JobNotFound):
        compute.describe(unique_name("never"))
    with pytest.raises(JobNotFound):
        compute.stop(unique_name("never"))


def test_failure_reason_is_sagemakers_own_and_stop_stops(moto_server, compute, store):
    failing = compute.submit(spec(store, inputs={"test": store.uri("training_sets/ts1/holdout.parquet")}))
    SageMakerTrainingContainer(moto_server).run(failing.name)
    failed = compute.describe(failing.name)
    assert failed.status == "Failed" and failed.failure_reason.startswith("AlgorithmError: ")
    assert "train channel" in failed.failure_reason and failed.model_uri is None
    running = compute.submit(spec(store))
    compute.stop(running.name)
    assert compute.describe(running.name).status == "Stopping"
    moto_server.finish_training_job(running.name, "Stopped")
    assert compute.describe(running.name).status == "Stopped"
    compute.stop(running.name)  # a finished job is left as it is


def test_uris_outside_the_store_are_refused_before_anything_is_submitted(moto_server, compute, store):
    before = moto_server.calls("sagemaker", "CreateTrainingJob")
    for changes in (
        {"inputs": {"train": "s3://someone-elses-bucket/data/train.parquet"}},
        {"output_uri": f"s3://{store.bucket}/other-prefix/jobs"},
    ):
        with pytest.raises(ValueError, match="is not an object of the store"):
            compute.submit(spec(store, **changes))
    assert moto_server.calls("sagemaker", "CreateTrainingJob") == before


def test_instances_spot_and_image_come_from_the_settings(moto_server, store):
    spot = SageMakerTrainingSettings(
        role_arn=TRAINING.role_arn,
        image="123.dkr.ecr.us-east-1.amazonaws.com/train:7",
        instance_type="ml.c5.xlarge",
        volume_size_gb=50,
        spot=True,
        max_wait_seconds=7200,
    )
    request = SageMakerCompute(moto_server.code_client("sagemaker"), store, spot).request(spec(store))
    assert request["AlgorithmSpecification"]["TrainingImage"] == spot.image
    assert request["ResourceConfig"] == {"InstanceType": "ml.c5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50}
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 7200}
    assert SageMakerCompute(moto_server.code_client("sagemaker"), store, spot).log_lines("any") == []


def _tar(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return out.getvalue()


@pytest.mark.parametrize(
    ("members", "links"),
    [
        ({"../escape.txt": b"x"}, None),
        ({"/etc/cron.d/x": b"x"}, None),
        ({"model.skops": b"x"}, {"link": "/etc/passwd"}),
    ],
)
def test_a_hostile_output_archive_is_refused_before_anything_is_written(store, tmp_path, members, links):
    store.put_bytes("jobs/evil/output/model.tar.gz", _tar(members, links))
    with pytest.raises(ValueError, match="refusing archive member"):
        extract_archive(store, store.uri("jobs/evil/output/model.tar.gz"), tmp_path / "out")
    assert not any((tmp_path / "out").rglob("*"))


def test_the_jobs_log_lines_come_from_cloudwatch(moto_server, store):
    """SageMaker writes a job's output to CloudWatch, one stream per instance; log_lines reads them in order."""
    name = unique_name("train")
    logs = moto_server.client("logs")  # plays SageMaker writing the job's log
    group = "/aws/sagemaker/TrainingJobs"
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=group)
    now_ms = int(time.time() * 1000)  # CloudWatch refuses events older than 14 days
    for instance, lines in (
        ("algo-1-1700000000", ["fitting", "METRIC test_roc_auc=0.9"]),
        ("algo-2-1700000000", ["x"]),
    ):
        stream = f"{name}/{instance}"
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
        events = [{"timestamp": now_ms + i, "message": m} for i, m in enumerate(lines)]
        logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)
    compute = SageMakerCompute(
        moto_server.code_client("sagemaker"), store, TRAINING, logs_client=moto_server.code_client("logs")
    )
    assert compute.log_lines(name) == ["fitting", "METRIC test_roc_auc=0.9", "x"]
    assert compute.log_lines(name, skip=2) == ["x"]
    assert compute.log_lines(unique_name("no-logs-yet")) == []
