"""The SageMaker Model Registry mirror against a real moto server: idempotent mirroring, the gate's verdicts."""

from __future__ import annotations

import json

import pytest

from mlops_core.compute import object_key
from mlops_core.registry_mirror import MirroredVersion, RegistryMirror
from mlops_core.s3_storage import S3ObjectStore
from mlops_core.sagemaker_registry import SageMakerRegistryMirror, group_name, metadata_value
from tests.moto_server import unique_name


@pytest.fixture
def mirror(moto_server):
    s3 = moto_server.client("s3")
    bucket = unique_name("mirror")
    s3.create_bucket(Bucket=bucket)
    return SageMakerRegistryMirror(
        moto_server.code_client("sagemaker"), S3ObjectStore(moto_server.code_client("s3"), bucket, "mlops/dev")
    )


def version(model: str, n: str, **lineage: str) -> MirroredVersion:
    return MirroredVersion(
        model_name=model,
        version=n,
        model_uri=f"models:/{model}/{n}",
        model_sha256="ab" * 32,
        metrics={"roc_auc": 0.91, "f1": 0.5},
        lineage={
            "mlops.run_id": f"run{n}",
            "mlops.git_commit": "0123abc",
            "mlops.dataset_versions": "v1,v2,v3",
            "mlops.training_set": f"training_sets/ts-{n}",
            **lineage,
        },
    )


def test_a_version_is_mirrored_once_with_its_lineage(mirror, moto_server):
    assert isinstance(mirror, RegistryMirror)
    model = f"dev.{unique_name('churn')}"
    arn = mirror.mirror(version(model, "1"))
    assert arn and mirror.mirror(version(model, "1")) == arn  # a retry finds the same package
    packages = moto_server.client("sagemaker").list_model_packages(ModelPackageGroupName=group_name(model))[
        "ModelPackageSummaryList"
    ]
    assert [p["ModelPackageArn"] for p in packages] == [arn]
    described = moto_server.client("sagemaker").describe_model_package(ModelPackageName=arn)
    assert described["ModelApprovalStatus"] == "PendingManualApproval"
    assert described["ModelPackageDescription"] == f"MLflow {model} version 1"
    meta = described["CustomerMetadataProperties"]
    assert meta["mlflow_run_id"] == "run1" and meta["git_commit"] == "0123abc"
    assert meta["dataset_versions"] == "v1 v2 v3" and meta["model_sha256"] == "ab" * 32
    assert meta["metric_roc_auc"] == "0.91"
    record_uri = described["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
    record = json.loads(mirror.store.get_bytes(object_key(mirror.store, record_uri)))
    assert record["lineage"]["mlops.dataset_versions"] == "v1,v2,v3" and record["metrics"]["f1"] == 0.5
    assert mirror.mirror(version(model, "2")) != arn  # the next version is its own package


def test_the_gate_decides_the_approval_status(mirror, moto_server):
    model = f"staging.{unique_name('churn')}"
    approved, rejected = mirror.mirror(version(model, "1")), mirror.mirror(version(model, "2"))
    mirror.approve(model, "1", approved_by="alice")
    mirror.reject(model, "2", reason="roc_auc 0.55 < threshold 0.6")
    one = moto_server.client("sagemaker").describe_model_package(ModelPackageName=approved)
    two = moto_server.client("sagemaker").describe_model_package(ModelPackageName=rejected)
    assert one["ModelApprovalStatus"] == "Approved" and "alice" in one["ApprovalDescription"]
    assert two["ModelApprovalStatus"] == "Rejected" and two["ApprovalDescription"] == "roc_auc 0.55 < threshold 0.6"
    assert one["CustomerMetadataProperties"]["mlflow_version"] == "1"  # the approval kept the lineage
    mirror.approve(model, "1", approved_by="alice")  # again: same outcome
    assert (
        moto_server.client("sagemaker").describe_model_package(ModelPackageName=approved)["ModelApprovalStatus"]
        == "Approved"
    )


def test_approving_a_version_never_mirrored_says_so(mirror):
    model = f"dev.{unique_name('none')}"
    with pytest.raises(LookupError, match="has no model package in SageMaker group"):
        mirror.approve(model, "7", approved_by=None)
    mirror.mirror(version(model, "1"))
    with pytest.raises(LookupError, match="version 7 has no model package"):
        mirror.reject(model, "7", reason="x")


def test_names_and_values_fit_sagemaker_limits():
    assert group_name("dev.churn") == "dev-churn"
    assert group_name("prod.house_prices") == "prod-house-prices"
    assert len(group_name("dev." + "x" * 100)) == 63
    assert metadata_value("a,b;c") == "a_b_c"
    long = metadata_value("v" * 300)
    assert len(long) <= 256 and long.endswith("+truncated")
