"""The aws backends built on the Amazon provider's hooks: credentials and endpoints from an Airflow connection.

``mlops_core`` never imports Airflow: its AWS classes take a boto3 client. This module makes that
client from the provider's hook for the connection named in settings (``aws.conn_id``), so the
connection -- environment (``AIRFLOW_CONN_AWS_DEFAULT``), secrets backend or metadata database --
decides credentials, role, region and endpoint (``extra.endpoint_url`` points at moto or a VPC
endpoint). No secret passes through settings, logs or this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlops_core.glue_catalog import GlueCatalog
    from mlops_core.s3_dropzone import S3DropZone
    from mlops_core.s3_storage import S3ObjectStore
    from mlops_core.sagemaker_compute import SageMakerCompute
    from mlops_core.sagemaker_registry import SageMakerRegistryMirror
    from mlops_core.sagemaker_serving import SageMakerServing
    from mlops_core.settings import Settings

MIB = 1024 * 1024


def split_s3_root(root: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> ``("bucket", "prefix")``."""
    if not root.startswith("s3://"):
        raise ValueError(f"not an s3:// location: {root!r}")
    bucket, _, prefix = root[len("s3://") :].partition("/")
    return bucket, prefix.strip("/")


def s3_object_store(settings: Settings) -> S3ObjectStore:
    """The environment's object store on S3 (``storage.root: s3://bucket/prefix``), through ``S3Hook``."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from mlops_core.s3_storage import S3ObjectStore

    bucket, prefix = split_s3_root(settings.storage_root)
    return S3ObjectStore(
        S3Hook(aws_conn_id=settings.aws.conn_id).get_conn(),
        bucket,
        prefix,
        multipart_threshold=settings.aws.multipart_threshold_mb * MIB,
        multipart_chunksize=settings.aws.multipart_chunk_mb * MIB,
    )


def s3_drop_zone(settings: Settings, location: str | None = None) -> S3DropZone:
    """The S3 drop zone at ``location`` (default ``dataset.drop_zone``, ``s3://bucket/prefix/``), through ``S3Hook``.

    Consumed objects are archived or tagged as ``dataset.mark_consumed`` says.
    """
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from mlops_core.s3_dropzone import S3DropZone, split_s3_uri

    bucket, prefix = split_s3_uri(str(location or settings.dataset.drop_zone))
    return S3DropZone(
        S3Hook(aws_conn_id=settings.aws.conn_id).get_conn(),
        bucket,
        prefix,
        mark_consumed=settings.dataset.mark_consumed,
    )


def sagemaker_registry_mirror(settings: Settings) -> SageMakerRegistryMirror:
    """The SageMaker Model Registry mirror (``backends.registry_mirror: sagemaker``), through ``SageMakerHook``."""
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    from mlops_core.sagemaker_registry import SageMakerRegistryMirror

    return SageMakerRegistryMirror(
        SageMakerHook(aws_conn_id=settings.aws.conn_id).get_conn(), s3_object_store(settings)
    )


def glue_catalog(settings: Settings) -> GlueCatalog:
    """The Glue Data Catalog: databases ``<aws.glue_database_prefix>_<dataset>``, on ``GlueCatalogHook``."""
    from airflow.providers.amazon.aws.hooks.glue_catalog import GlueCatalogHook

    from mlops_core.glue_catalog import GlueCatalog

    prefix = settings.aws.glue_database_prefix or f"mlops_{settings.env}"
    return GlueCatalog(GlueCatalogHook(aws_conn_id=settings.aws.conn_id).get_conn(), prefix)


def sagemaker_compute(settings: Settings, store: S3ObjectStore | None = None) -> SageMakerCompute:
    """SageMaker training jobs (``backends.compute: aws``), through ``SageMakerHook`` and ``AwsLogsHook``."""
    from airflow.providers.amazon.aws.hooks.logs import AwsLogsHook
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    from mlops_core.sagemaker_compute import SageMakerCompute, SageMakerTrainingSettings

    aws = settings.aws
    if aws.sagemaker_role_arn is None or aws.training_image is None:  # the settings check this already
        raise ValueError("aws.sagemaker_role_arn and aws.training_image are required for SageMaker training")
    training = SageMakerTrainingSettings(
        role_arn=aws.sagemaker_role_arn,
        image=aws.training_image,
        instance_type=aws.training_instance_type,
        instance_count=aws.training_instance_count,
        volume_size_gb=aws.training_volume_gb,
        spot=aws.training_spot,
        max_wait_seconds=aws.training_max_wait_minutes * 60 if aws.training_max_wait_minutes else None,
    )
    return SageMakerCompute(
        SageMakerHook(aws_conn_id=aws.conn_id).get_conn(),
        store or s3_object_store(settings),
        training,
        logs_client=AwsLogsHook(aws_conn_id=aws.conn_id).get_conn(),
    )


def sagemaker_serving(settings: Settings, store: S3ObjectStore | None = None) -> SageMakerServing:
    """The environment's SageMaker endpoint (``backends.serving: aws``), through ``SageMakerHook``."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    from mlops_core.capture import sagemaker_capture_uri
    from mlops_core.sagemaker_serving import SageMakerEndpointSettings, SageMakerServing, sagemaker_name

    aws = settings.aws
    if aws.sagemaker_role_arn is None or aws.inference_image is None:  # the settings check this already
        raise ValueError("aws.sagemaker_role_arn and aws.inference_image are required for a SageMaker endpoint")
    store = store or s3_object_store(settings)
    endpoint = SageMakerEndpointSettings(
        endpoint_name=aws.endpoint_name or sagemaker_name(settings.env, settings.training.model_name),
        role_arn=aws.sagemaker_role_arn,
        image=aws.inference_image,
        instance_type=aws.serving_instance_type,
        instance_count=aws.serving_instance_count,
        deployment_config=dict(aws.deployment_config),
        wait_seconds=aws.endpoint_wait_minutes * 60,
        capture_destination=(
            sagemaker_capture_uri(store, settings.training.model_name, settings.env)
            if settings.capture.enabled
            else None
        ),
        capture_sampling_percent=settings.capture.sampling_percent,
    )
    return SageMakerServing(
        SageMakerHook(aws_conn_id=aws.conn_id).get_conn(),
        AwsBaseHook(aws_conn_id=aws.conn_id, client_type="sagemaker-runtime").get_conn(),
        store,
        endpoint,
        settings.registry.tracking_uri,
    )
