"""The ingest stage on the aws bundle: versions on S3, their partitions in Glue, object versions pinned.

Everything goes through the real stage (``mlops_core.stages.ingest.ingest_files``) with the bundle an
Airflow task builds (``mlops_airflow.backends.backends_for``: ``S3Hook`` and ``GlueCatalogHook`` on an
Airflow connection pointing at the session's moto server). The one fault injected is a Glue outage
(a client whose ``BatchCreatePartition`` fails once, as a throttled or unreachable Glue would); the
commit, the retry and everything they write are real.
"""

from __future__ import annotations

import dataclasses
import io

import pandas as pd
import pytest

from tests.moto_server import unique_name

AT = "2026-01-03T00:00:00+00:00"
ROLE = "arn:aws:iam::123456789012:role/mlops"


@pytest.fixture
def aws_env(mlops_home, moto_server, monkeypatch):
    """dev on S3 (a fresh bucket) with the Glue catalog on, through an Airflow connection to moto."""
    from mlops_core.settings import load_settings

    bucket = unique_name("ingest")
    moto_server.client("s3").create_bucket(Bucket=bucket)
    monkeypatch.setenv("AIRFLOW_CONN_MLOPS_AWS_INGEST", moto_server.connection_uri())
    settings = load_settings(
        "dev",
        {
            "backends": {"storage": "aws", "compute": "aws", "catalog": "glue"},
            "storage": {"root": f"s3://{bucket}/mlops/dev"},
            "aws": {
                "conn_id": "mlops_aws_ingest",
                "glue_database_prefix": unique_name("mlops").replace("-", "_"),
                "sagemaker_role_arn": ROLE,
                "training_image": "img:1",
            },
        },
    )
    settings.dataset.drop_zone.mkdir(parents=True)
    return settings, bucket


def _ingest(settings, days, backends=None, run_id="r1"):
    from mlops_airflow.backends import backends_for
    from mlops_core.demo_data import write_day_files
    from mlops_core.stages.ingest import ingest_files

    files = [str(p) for p in write_day_files(settings.dataset.drop_zone, days, rows=60)] if days else []
    return ingest_files(
        settings, files or _waiting(settings), backends or backends_for(settings), run_id=run_id, ingested_at=AT
    )


def _waiting(settings):
    return sorted(str(p) for p in settings.dataset.drop_zone.iterdir())


def _dataset(settings):
    from mlops_airflow.backends import store_for
    from mlops_core.datasets import DatasetStore

    return DatasetStore(store_for(settings), "churn")


def _partitions(moto_server, settings, version_id):
    glue = moto_server.client("glue")
    database = f"{settings.aws.glue_database_prefix}_churn"
    found = glue.get_partitions(DatabaseName=database, TableName="churn")["Partitions"]
    return {p["Values"][1]: p["StorageDescriptor"]["Location"] for p in found if p["Values"][0] == version_id}


def test_a_file_ingested_on_s3_is_a_version_there_and_a_glue_partition(aws_env, moto_server):
    settings, bucket = aws_env
    report = _ingest(settings, [0, 1])
    assert report["created"] and report["rows"] == 120 and report["rejected_rows"] == 0
    version = report["version_id"]

    keys = [o["Key"] for o in moto_server.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
    assert f"mlops/dev/datasets/churn/versions/{version}/manifest.json" in keys
    assert all(k.startswith("mlops/dev/") for k in keys), "nothing outside the store's prefix"
    dataset = _dataset(settings)
    manifest = dataset.get_manifest(version)
    assert all("object_version" not in p for p in manifest["partitions"].values()), "no versioning, no version ids"
    assert len(dataset.read_version(version)) == 120

    versions_uri = f"s3://{bucket}/mlops/dev/datasets/churn/versions/"
    assert _partitions(moto_server, settings, version) == {
        day: f"{versions_uri}{version}/event_date={day}/" for day in manifest["partitions"]
    }
    table = moto_server.client("glue").get_table(
        DatabaseName=f"{settings.aws.glue_database_prefix}_churn", Name="churn"
    )
    assert table["Table"]["StorageDescriptor"]["Location"] == versions_uri
    assert not settings.dataset.drop_zone.exists() or not any(settings.dataset.drop_zone.iterdir()), "archived"


def test_a_glue_failure_after_the_commit_is_repaired_by_the_retry_without_a_second_version(aws_env, moto_server):
    """Glue fails once right after the manifest is written: the task fails with the version committed
    and nothing recorded or archived; the retry of the run commits nothing new and registers it."""
    from botocore.exceptions import ClientError

    from mlops_airflow.backends import backends_for
    from mlops_airflow.hooks.aws import glue_catalog

    settings, _ = aws_env

    class GlueDownOnce:
        """The real Glue client, but the first BatchCreatePartition fails as a throttled Glue answers."""

        def __init__(self, client):
            self.client, self.failed = client, False

        def __getattr__(self, name):
            return getattr(self.client, name)

        def batch_create_partition(self, **kwargs):
            if not self.failed:
                self.failed = True
                raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "x")
            return self.client.batch_create_partition(**kwargs)

    real = glue_catalog(settings)
    flaky = dataclasses.replace(
        backends_for(settings), make_catalog=lambda: type(real)(GlueDownOnce(real.client), real.database_prefix)
    )
    with pytest.raises(ClientError, match="Rate exceeded"):
        _ingest(settings, [0, 1], flaky)
    dataset = _dataset(settings)
    (committed,) = dataset.list_versions()
    assert committed["row_count"] == 120
    assert len(_waiting(settings)) == 2, "no file archived: the retry reads them again"
    assert dataset.list_quarantine() == [] and _partitions(moto_server, settings, committed["version_id"]) == {}

    retried = _ingest(settings, [], run_id="r1")  # the same run, the same files, the real Glue
    assert retried["version_id"] == committed["version_id"] and retried["created"] is False
    assert retried["reason"] == "version already existed (re-run)" and retried["duplicate_rows"] == 0
    assert [v["version_id"] for v in dataset.list_versions()] == [committed["version_id"]]
    keys = dataset.committed_keys()
    assert len(keys) == 120 and keys["_row_key"].is_unique, "no row lost or counted twice"
    assert set(_partitions(moto_server, settings, committed["version_id"])) == set(committed["partitions"])
    assert _waiting(settings) == [] and [f["status"] for f in retried["files"]] == ["accepted", "accepted"]


def test_a_versioned_bucket_pins_each_part_to_its_object_version(aws_env, moto_server):
    from mlops_core.storage import ObjectNotFound

    settings, bucket = aws_env
    s3 = moto_server.client("s3")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    report = _ingest(settings, [0, 1])
    dataset = _dataset(settings)
    manifest = dataset.get_manifest(report["version_id"])
    parts = manifest["partitions"]
    for part in parts.values():
        head = s3.head_object(Bucket=bucket, Key=f"mlops/dev/{part['key']}")
        assert part["object_version"] == head["VersionId"] and part["object_version"] not in (None, "null")
    committed = dataset.read_version(report["version_id"])

    # A later write under a part's key (a stray job, a bad restore) does not change the version's rows.
    first = parts[min(parts)]
    intruder = io.BytesIO()
    committed.head(3).to_parquet(intruder, index=False)
    dataset.store.put_bytes(first["key"], intruder.getvalue())
    pd.testing.assert_frame_equal(dataset.read_version(report["version_id"]), committed)

    # The recorded version deleted: the read fails, naming it, instead of reading what is there now.
    s3.delete_object(Bucket=bucket, Key=f"mlops/dev/{first['key']}", VersionId=first["object_version"])
    with pytest.raises(ObjectNotFound, match=f"version '{first['object_version']}'"):
        dataset.read_version(report["version_id"])


def test_with_the_catalog_off_nothing_reaches_glue(aws_env, moto_server):
    from mlops_core.settings import with_overrides

    settings, _ = aws_env
    off = with_overrides(settings, backends={"catalog": "none"})
    report = _ingest(off, [0])
    assert report["created"] and _dataset(off).get_manifest(report["version_id"])
    databases = [d["Name"] for d in moto_server.client("glue").get_databases()["DatabaseList"]]
    assert f"{settings.aws.glue_database_prefix}_churn" not in databases


def test_the_local_backend_writes_the_same_version_and_no_catalog(aws_env, moto_server):
    """The same files on the local bundle: the same content address, no object versions, no catalog call."""
    from mlops_core.backends import backends_for, object_store
    from mlops_core.dataset_catalog import NoCatalog
    from mlops_core.datasets import DatasetStore
    from mlops_core.settings import load_settings

    on_s3, _ = aws_env
    local = load_settings("dev")  # the shipped dev: every backend local
    backends = backends_for(local)
    assert local.backends.catalog == "none" and isinstance(backends.catalog, NoCatalog)
    report = _ingest(local, [0, 1], backends)
    assert report["created"] and report["rows"] == 120
    manifest = DatasetStore(object_store(local), "churn").get_manifest(report["version_id"])
    assert all(set(p) == {"rows", "key"} for p in manifest["partitions"].values()), "the local manifest is unchanged"

    same_files_on_s3 = _ingest(on_s3, [0, 1])
    assert same_files_on_s3["version_id"] == report["version_id"], "content-addressed on any backend"


def test_the_glue_catalog_needs_an_s3_store_and_an_airflow_task(mlops_home):
    from mlops_core.backends import BackendNotAvailable, dataset_catalog
    from mlops_core.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match=r"backends\.catalog glue registers dataset versions stored on S3"):
        load_settings("dev", {"backends": {"catalog": "glue"}})
    on_s3 = load_settings(
        "dev",
        {
            "backends": {"storage": "aws", "compute": "aws", "catalog": "glue"},
            "storage": {"root": "s3://mlops-bucket/dev"},
            "aws": {"sagemaker_role_arn": ROLE, "training_image": "img:1"},
        },
    )
    with pytest.raises(BackendNotAvailable, match=r"mlops_airflow\.backends\.backends_for"):
        dataset_catalog(on_s3)  # mlops_core builds no Glue client: the Airflow layer does, on GlueCatalogHook
