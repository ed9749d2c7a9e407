"""The aws object store built through the Amazon provider's S3Hook, its connection pointing at moto."""

from __future__ import annotations

import pytest

from tests.moto_server import unique_name


@pytest.fixture
def aws_settings(mlops_home, moto_server, monkeypatch):
    from mlops_core.settings import load_settings

    bucket = unique_name("mlops")
    moto_server.client("s3").create_bucket(Bucket=bucket)
    monkeypatch.setenv("AIRFLOW_CONN_MLOPS_AWS_TEST", moto_server.connection_uri())
    return load_settings(
        "dev",
        {
            "backends": {"storage": "aws", "compute": "aws"},
            "storage": {"root": f"s3://{bucket}/mlops/dev"},
            "aws": {
                "conn_id": "mlops_aws_test",
                "multipart_threshold_mb": 5,
                "multipart_chunk_mb": 5,
                "sagemaker_role_arn": "arn:aws:iam::123456789012:role/mlops",
                "training_image": "img:1",
            },
        },
    )


def test_the_store_reaches_s3_through_the_connection(aws_settings, moto_server):
    from mlops_airflow.hooks.aws import s3_object_store

    store = s3_object_store(aws_settings)
    bucket = aws_settings.storage_root.split("/")[2]
    assert store.uri("datasets/churn/manifest.json") == f"s3://{bucket}/mlops/dev/datasets/churn/manifest.json"
    assert store.multipart_threshold == 5 * 1024 * 1024
    store.put_bytes("datasets/churn/manifest.json", b"{}")
    keys = [o["Key"] for o in moto_server.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["mlops/dev/datasets/churn/manifest.json"]
    assert store.get_bytes("datasets/churn/manifest.json") == b"{}"


def test_the_registry_mirror_reaches_sagemaker_through_the_connection(aws_settings, moto_server):
    from mlops_airflow.hooks.aws import sagemaker_registry_mirror
    from mlops_core.registry_mirror import MirroredVersion

    mirror = sagemaker_registry_mirror(aws_settings)
    model = f"dev.{unique_name('hooked')}"
    arn = mirror.mirror(MirroredVersion(model, "1", f"models:/{model}/1", "cd" * 32))
    assert arn is not None and arn.startswith("arn:aws:sagemaker:us-east-1:")
    packages = moto_server.client("sagemaker").list_model_packages(ModelPackageGroupName=model.replace(".", "-"))
    assert [p["ModelPackageArn"] for p in packages["ModelPackageSummaryList"]] == [arn]


def test_the_glue_catalog_reaches_glue_through_the_connection(aws_settings, moto_server):
    from mlops_airflow.hooks.aws import glue_catalog

    catalog = glue_catalog(aws_settings)
    assert catalog.database("churn") == "mlops_dev_churn"
    versions = aws_settings.storage_root + "/datasets/churn/versions/"
    catalog.register_version(
        {"dataset": "churn", "version_id": "v1", "schema": {"x": "int64"}, "partitions": {"2026-01-01": {}}}, versions
    )
    glue = moto_server.client("glue")
    assert glue.get_partition(DatabaseName="mlops_dev_churn", TableName="churn", PartitionValues=["v1", "2026-01-01"])


def test_the_bundle_creates_the_sagemaker_clients_only_when_compute_is_used(aws_settings, moto_server, monkeypatch):
    """A task that never trains (ingest, features, ...) pays for no SageMaker client; the first use works."""
    from botocore.session import Session

    from mlops_airflow.backends import backends_for
    from mlops_core.compute import JobNotFound
    from mlops_core.sagemaker_compute import SageMakerCompute

    created: list[str] = []
    create_client = Session.create_client

    def counting(self, service_name, *args, **kwargs):  # every boto3 client of every hook is made here
        created.append(service_name)
        return create_client(self, service_name, *args, **kwargs)

    monkeypatch.setattr(Session, "create_client", counting)
    bundle = backends_for(aws_settings)
    assert created == ["s3"]  # the store's client only
    bundle.store.put_bytes("probe.txt", b"x")
    assert created == ["s3"]
    compute = bundle.compute
    assert isinstance(compute, SageMakerCompute) and compute.store is bundle.store
    assert sorted(created) == ["logs", "s3", "sagemaker"]
    assert bundle.compute is compute and sorted(created) == ["logs", "s3", "sagemaker"]  # built once, then kept
    describes = moto_server.calls("sagemaker", "DescribeTrainingJob")
    with pytest.raises(JobNotFound):
        compute.describe(unique_name("no-such-job"))
    assert moto_server.calls("sagemaker", "DescribeTrainingJob") == describes + 1  # it reached the moto server


def test_settings_refuse_an_aws_store_without_an_s3_root(mlops_home):
    from mlops_core.settings import SettingsError, load_settings

    with pytest.raises(
        SettingsError, match=r"storage\.root: must be s3://<bucket>/<prefix> when backends\.storage is aws"
    ):
        load_settings("dev", {"backends": {"storage": "aws"}})
    with pytest.raises(SettingsError, match=r"aws\.multipart_chunk_mb: must be >= 5"):
        load_settings("dev", {"aws": {"multipart_chunk_mb": 1}})
    with pytest.raises(SettingsError, match=r"aws\.glue_database_prefix: must match"):
        load_settings("dev", {"aws": {"glue_database_prefix": "Bad-Name"}})


def test_sagemaker_training_needs_its_role_image_and_s3(mlops_home):
    from mlops_core.settings import SettingsError, load_settings

    s3 = {"backends": {"storage": "aws", "compute": "aws"}, "storage": {"root": "s3://b/p"}}
    with pytest.raises(SettingsError, match=r"aws\.sagemaker_role_arn: is required when backends\.compute is aws"):
        load_settings("dev", s3)
    with pytest.raises(SettingsError, match=r"aws\.sagemaker_role_arn: must match"):
        load_settings("dev", {**s3, "aws": {"sagemaker_role_arn": "not-an-arn", "training_image": "i"}})
    with pytest.raises(SettingsError, match=r"needs backends\.storage aws"):
        load_settings(
            "dev",
            {
                "backends": {"compute": "aws"},
                "aws": {"sagemaker_role_arn": "arn:aws:iam::123456789012:role/r", "training_image": "i"},
            },
        )


def test_the_endpoint_target_is_built_on_the_connection(aws_settings, moto_server):
    from botocore.exceptions import ClientError

    from mlops_airflow.backends import backends_for
    from mlops_core.sagemaker_serving import SageMakerServing
    from mlops_core.settings import with_overrides

    settings = with_overrides(
        aws_settings,
        backends={"serving": "aws", "registry_mirror": "sagemaker"},
        aws={"sagemaker_role_arn": "arn:aws:iam::123456789012:role/r", "inference_image": "img:2"},
    )
    bundle = backends_for(settings)
    serving = bundle.serving
    assert isinstance(serving, SageMakerServing)
    assert serving.name == "dev-churn" and serving.endpoint.image == "img:2" and serving.live() is None
    with pytest.raises(ClientError, match="not found"):  # the runtime client reaches moto, which knows no such endpoint
        serving.runtime.invoke_endpoint(EndpointName="dev-churn", ContentType="application/json", Body=b"{}")
    assert type(bundle.mirror).__name__ == "SageMakerRegistryMirror"


def test_a_sagemaker_endpoint_needs_its_image_role_and_s3(mlops_home):
    from mlops_core.settings import SettingsError, load_settings

    s3 = {"backends": {"storage": "aws", "compute": "aws", "serving": "aws"}, "storage": {"root": "s3://b/p"}}
    training = {"training_image": "img:1"}
    with pytest.raises(SettingsError, match=r"aws\.sagemaker_role_arn: is required when backends\.compute is aws"):
        load_settings("dev", {**s3, "aws": training})
    role = {"sagemaker_role_arn": "arn:aws:iam::123456789012:role/r", **training}
    with pytest.raises(SettingsError, match=r"aws\.inference_image: is required when backends\.serving is aws"):
        load_settings("dev", {**s3, "aws": role})
    with pytest.raises(SettingsError, match=r"aws\.endpoint_name: must match"):
        load_settings("dev", {"aws": {"endpoint_name": "no_underscores"}})


def test_the_feature_repository_keeps_offline_data_on_s3_and_reaches_redis_through_a_connection(
    aws_settings, monkeypatch
):
    import json

    from mlops_airflow.backends import backends_for

    redis_conn = {"conn_type": "redis", "host": "127.0.0.1", "port": 6379, "password": "s3cret-pw", "extra": {"db": 13}}
    monkeypatch.setenv("AIRFLOW_CONN_MLOPS_FEATURE_REDIS_TEST", json.dumps(redis_conn))
    features = aws_settings.features.model_copy(
        update={"online_store": "redis", "redis_conn_id": "mlops_feature_redis_test"}
    )
    settings = aws_settings.model_copy(update={"features": features})
    repo = backends_for(settings).feature_repository(settings.load_contract())
    assert repo.offline_uri == f"{settings.storage_root}/features/churn"
    assert repo.online.redis_url == "redis://:s3cret-pw@127.0.0.1:6379/13"
    assert "s3cret-pw" not in repr(repo.online)
    assert repo.repo_config().online_store.connection_string == '127.0.0.1:6379,db=13,password="s3cret-pw"'
