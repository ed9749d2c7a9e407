"""A SageMaker endpoint per environment behind the Serving seam: moto's control plane, our container serving."""

from __future__ import annotations

import pytest

from mlops_core.model_integrity import ModelIntegrityError
from mlops_core.registry import ModelRegistry
from mlops_core.s3_storage import S3ObjectStore
from mlops_core.sagemaker_serving import SageMakerEndpointSettings, SageMakerServing
from mlops_core.serving import DeploymentFailed, SmokeTestFailed
from mlops_core.serving_target import Serving
from tests.core.conftest import TOY_FEATURES, register_toy_model, toy_frame
from tests.model_tampering import artifact_folder, restored_afterwards, tamper_to_pickle
from tests.moto_server import unique_name

MODEL = "dev.endpoint"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Version 1 predicts churn; version 2 (flipped labels) the opposite."""
    root = tmp_path_factory.mktemp("sm-serving")
    registry = ModelRegistry(f"sqlite:///{root}/mlflow.db", root / "artifacts", "sagemaker-serving")
    data = toy_frame(80, 4)
    labels = (data["tenure"] < 40).astype(int)
    for i, y in enumerate((labels, 1 - labels), start=1):
        assert register_toy_model(registry, MODEL, data, y, run_name=f"v{i}") == str(i)
    registry.rows = data[TOY_FEATURES].head(5)  # type: ignore[attr-defined]
    return registry


@pytest.fixture
def target(moto_server, registry):
    s3 = moto_server.client("s3")
    bucket = unique_name("serving")
    s3.create_bucket(Bucket=bucket)
    endpoint = SageMakerEndpointSettings(
        endpoint_name=unique_name("dev-churn"),
        role_arn="arn:aws:iam::123456789012:role/mlops-serving",
        image="123456789012.dkr.ecr.us-east-1.amazonaws.com/mlops-inference:1",
        deployment_config={
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}
            }
        },
        poll_seconds=0.1,
    )
    serving = SageMakerServing(
        moto_server.code_client("sagemaker"),
        moto_server.code_client("sagemaker-runtime"),
        S3ObjectStore(moto_server.code_client("s3"), bucket, "mlops/dev"),
        endpoint,
        registry.tracking_uri,
    )
    yield serving
    serving.stop()


def deploy(target: SageMakerServing, registry: ModelRegistry, version: str):
    return target.deploy(
        registry.model_uri(MODEL, version),
        version,
        expected_sha256=registry.model_sha256(MODEL, version),
        startup_timeout=120,
    )


def predicted(registry: ModelRegistry, version: str) -> list[int]:
    return [int(p) for p in registry.load_model(MODEL, version).predict(registry.rows)]


def test_first_deploy_creates_the_endpoint_and_the_smoke_test_scores_with_the_real_model(target, registry, moto_server):
    assert isinstance(target, Serving) and target.live() is None
    live = deploy(target, registry, "1")
    assert live.model_version == "1" and live.healthy and live.endpoint == target.name
    assert live.target == f"sagemaker:{target.name}" and live.model_sha256 == registry.model_sha256(MODEL, "1")
    described = moto_server.client("sagemaker").describe_endpoint(EndpointName=target.name)
    container = moto_server.client("sagemaker").describe_model(ModelName=described["EndpointConfigName"])[
        "PrimaryContainer"
    ]
    assert container["Environment"] == {"MLOPS_MODEL_SHA256": live.model_sha256}
    assert container["ModelDataUrl"].endswith("/model.tar.gz") and container["ModelDataUrl"].startswith(
        target.store.uri()
    )
    smoke = target.smoke_test(registry.rows)
    assert smoke.predictions == predicted(registry, "1") and smoke.model_version == "1"
    assert target.verify("1", live.model_sha256) and not target.verify("2")


def test_updates_are_blue_green_verified_idempotent_and_roll_back(target, registry, moto_server):
    deploy(target, registry, "1")
    updates = moto_server.calls("sagemaker", "UpdateEndpoint")
    assert deploy(target, registry, "2").model_version == "2"
    assert moto_server.calls("sagemaker", "UpdateEndpoint") == updates + 1
    assert target.smoke_test(registry.rows).predictions == predicted(registry, "2")
    deploy(target, registry, "2")  # already live: nothing changes
    assert moto_server.calls("sagemaker", "UpdateEndpoint") == updates + 1
    back = target.rollback(startup_timeout=120)
    assert back is not None and back.model_version == "1" and target.verify("1")
    assert target.smoke_test(registry.rows).predictions == predicted(registry, "1")


def test_an_update_sagemaker_rolled_back_is_a_failed_deploy(target, registry, moto_server, monkeypatch):
    """SageMaker's auto-rollback leaves the endpoint InService on the old config: that is not success."""
    from moto.sagemaker.responses import SageMakerResponse

    deploy(target, registry, "1")
    before = moto_server.client("sagemaker").describe_endpoint(EndpointName=target.name)["EndpointConfigName"]
    update = SageMakerResponse.update_endpoint

    def rolled_back(self):
        answer = update(self)
        self.sagemaker_backend.endpoints[self._get_param("EndpointName")].endpoint_config_name = before
        return answer

    monkeypatch.setattr(SageMakerResponse, "update_endpoint", rolled_back)
    with pytest.raises(DeploymentFailed, match="SageMaker rolled the update back"):
        deploy(target, registry, "2")
    assert target.live().model_version == "1"


def test_a_changed_model_is_refused_before_sagemaker_is_touched(target, registry, moto_server, tmp_path):
    creates = moto_server.calls("sagemaker", "CreateModel")
    with restored_afterwards(artifact_folder(registry, MODEL, "2")) as folder:
        tamper_to_pickle(folder, tmp_path / "canary")
        with pytest.raises(ModelIntegrityError, match="do not match the digest recorded"):
            deploy(target, registry, "2")
    assert moto_server.calls("sagemaker", "CreateModel") == creates
    assert not (tmp_path / "canary").exists()


def test_smoke_test_failures_say_what_the_endpoint_answered(target, registry):
    with pytest.raises(SmokeTestFailed, match="nothing is deployed"):
        target.smoke_test(registry.rows)
    deploy(target, registry, "1")
    with pytest.raises(SmokeTestFailed, match="ModelError"):
        target.smoke_test(registry.rows[["tenure"]])  # columns the model needs are missing


def test_data_capture_asked_for_is_the_data_capture_live(moto_server, registry):
    """moto keeps the DataCaptureConfig of CreateEndpointConfig and echoes it in DescribeEndpointConfig
    (it writes no capture files: the reader is tested on SageMaker's format in tests/core/test_capture.py)."""
    from mlops_core.capture import sagemaker_capture_uri

    s3 = moto_server.client("s3")
    bucket = unique_name("capture")
    s3.create_bucket(Bucket=bucket)
    store = S3ObjectStore(moto_server.code_client("s3"), bucket, "mlops/dev")
    endpoint = SageMakerEndpointSettings(
        endpoint_name=unique_name("dev-churn"),
        role_arn="arn:aws:iam::123456789012:role/mlops-serving",
        image="123456789012.dkr.ecr.us-east-1.amazonaws.com/mlops-inference:1",
        poll_seconds=0.1,
        capture_destination=sagemaker_capture_uri(store, "churn", "dev"),
        capture_sampling_percent=40,
    )
    target = SageMakerServing(
        moto_server.code_client("sagemaker"), moto_server.code_client("sagemaker-runtime"), store, endpoint,
        registry.tracking_uri,
    )  # fmt: skip
    try:
        live = deploy(target, registry, "1")
        sm = moto_server.client("sagemaker")
        config = sm.describe_endpoint(EndpointName=target.name)["EndpointConfigName"]
        asked = sm.describe_endpoint_config(EndpointConfigName=config)["DataCaptureConfig"]
        assert asked == {
            "EnableCapture": True,
            "InitialSamplingPercentage": 40,
            "DestinationS3Uri": f"s3://{bucket}/mlops/dev/captures/churn/dev/sagemaker",
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"], "CsvContentTypes": ["text/csv"]},
        }
        assert target.live_capture() == asked == endpoint.data_capture_config() and live.model_version == "1"
        assert config.startswith(f"{target.name}-v1-") and config.split("-")[-1].startswith("c")
    finally:
        target.stop()
    assert target.live_capture() is None
