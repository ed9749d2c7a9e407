"""The feature store on the aws backend: offline data on S3 (moto server), online in DynamoDB (moto
server) or Redis (the real server on 127.0.0.1:6379), against the same rows as the local store.

The online tests write an older version after a newer one: the newer online value must stay. Redis
tests use their own database number and Feast project and delete exactly their own keys.
"""

from __future__ import annotations

import csv
import io
import uuid
from pathlib import Path

import pandas as pd
import pytest

from mlops_core.contract import DatasetContract
from mlops_core.features import FeatureRepository, FeatureRepositoryError, OnlineStoreConfig, redis_connection_string
from mlops_core.s3_storage import ObjectCorrupted, S3ObjectStore
from mlops_core.validation import read_source, validate
from tests.moto_server import CODE_KEY, unique_name

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/13"  # a database of its own: nothing else in the suite uses 13


@pytest.fixture(scope="module")
def churn() -> DatasetContract:
    return DatasetContract.from_yaml(REPO / "include" / "contracts" / "churn.yaml")


def rows(contract: DatasetContract, spec: list[tuple[str, str, int]], source: str) -> pd.DataFrame:
    """Accepted churn rows of (customer, event time, tenure) as the features stage gets them."""
    header = ["customer_id", "event_time", "tenure_months", "monthly_charges", "usage_hours", "support_calls"]
    header += ["plan", "region", "autopay", "last_payment_delay_days", "churned"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for customer, when, tenure in spec:
        writer.writerow([customer, when, tenure, "49.5", "100", "1", "basic", "north", "true", "", "0"])
    result = validate(
        read_source(buffer.getvalue().encode(), source), contract, source, pd.Timestamp("2024-03-01T12:00:00Z")
    )
    assert result.rejected.empty, result.rejected.to_dict("records")
    return result.accepted


OLD = [("c1", "2024-01-01T00:00:00Z", 1), ("c2", "2024-01-02T00:00:00Z", 2)]
NEW = [("c1", "2024-01-05T00:00:00Z", 5), ("c3", "2024-01-06T00:00:00Z", 30)]
REQUESTS = pd.DataFrame(
    {
        "_entity": ["c1", "c1", "c2", "c3", "c3"],
        "_event_time": pd.to_datetime(["2024-01-03", "2024-01-07", "2024-01-07", "2024-01-05", "2024-01-06"], utc=True),
        "_row_key": ["c1-before-new", "c1-after-new", "c2", "c3-before-its-row", "c3-at-its-row"],
    }
)


@pytest.fixture
def s3_store(moto_server):
    bucket = unique_name("features")
    moto_server.client("s3").create_bucket(Bucket=bucket)
    return S3ObjectStore(moto_server.code_client("s3"), bucket, "mlops/dev")


@pytest.fixture
def code_credentials(moto_server, monkeypatch):
    """Feast builds its own DynamoDB client from boto3's chain: give it the code's identity."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CODE_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def test_offline_data_on_s3_answers_as_the_local_folder_and_is_checked_on_read(churn, s3_store, tmp_path):
    remote = FeatureRepository(
        churn, repo_dir=tmp_path / "s3repo", offline_store=s3_store, offline_prefix="features/churn", project="s3_t"
    )
    local = FeatureRepository(churn, repo_dir=tmp_path / "local", offline_dir=str(tmp_path / "off"), project="loc_t")
    for repo in (remote, local):
        repo.materialize_version("old", rows(churn, OLD, "old.csv"))
        repo.materialize_version("new", rows(churn, NEW, "new.csv"))
    keys = s3_store.list_keys("features/churn/")
    assert "features/churn/event_date=2024-01-05/version=new.parquet" in keys
    assert remote.offline_versions() == ["new", "old"]
    assert remote.offline_uri == f"s3://{s3_store.bucket}/mlops/dev/features/churn"

    got = remote.training_set(REQUESTS).set_index("_row_key")
    pd.testing.assert_frame_equal(got, local.training_set(REQUESTS).set_index("_row_key"))
    assert got.loc["c1-before-new", "tenure_months"] == 1 and got.loc["c1-after-new", "tenure_months"] == 5
    assert pd.isna(got.loc["c3-before-its-row", "tenure_months"]) and got.loc["c3-at-its-row", "tenure_months"] == 30

    # A fresh repository (another task) reads the same S3 data through its own registration.
    again = FeatureRepository(
        churn, repo_dir=tmp_path / "other", offline_store=s3_store, offline_prefix="features/churn", project="s3_t"
    )
    pd.testing.assert_frame_equal(again.training_set(REQUESTS).set_index("_row_key"), got)

    # A partition object changed behind the store's back is refused, not joined.
    key = "mlops/dev/features/churn/event_date=2024-01-05/version=new.parquet"
    body = s3_store.client.get_object(Bucket=s3_store.bucket, Key=key)
    tampered = body["Body"].read().replace(b"c1", b"c9")
    meta = body["Metadata"]
    client = s3_store.client
    client.put_object(Bucket=s3_store.bucket, Key=key, Body=tampered, Metadata=meta)
    with pytest.raises(ObjectCorrupted, match="expected sha256"):
        again.training_set(REQUESTS)


def test_dynamodb_online_store_keeps_the_newer_value(churn, s3_store, moto_server, code_credentials, tmp_path):
    online = OnlineStoreConfig(
        kind="dynamodb", dynamodb_region=moto_server.region, dynamodb_endpoint_url=moto_server.url
    )
    project = f"ddb_{uuid.uuid4().hex[:8]}"
    repo = FeatureRepository(
        churn,
        repo_dir=tmp_path,
        offline_store=s3_store,
        offline_prefix="features/churn",
        project=project,
        online=online,
    )
    first = repo.materialize_version("new", rows(churn, NEW, "new.csv"))
    late = repo.materialize_version("old", rows(churn, OLD, "old.csv"))  # c1's row is older than online
    assert (first["online_entities"], first["online_stale_skipped"]) == (2, 0)
    assert (late["online_entities"], late["online_stale_skipped"]) == (1, 1)
    tables = moto_server.client("dynamodb").list_tables()["TableNames"]
    assert f"{project}.churn_features" in tables
    got = repo.online_features(["c1", "c2", "c3", "nobody"]).set_index("_entity")
    assert got.loc["c1", "tenure_months"] == 5  # the newer value stayed
    assert got.loc["c2", "tenure_months"] == 2 and got.loc["c3", "tenure_months"] == 30
    assert got.loc["c1", "_event_time"] == pd.Timestamp("2024-01-05T00:00:00Z")
    assert pd.isna(got.loc["nobody", "tenure_months"]) and pd.isna(got.loc["nobody", "_event_time"])
    again = repo.materialize_version("new", rows(churn, NEW, "new.csv"))  # a retry changes nothing
    assert (again["online_entities"], again["online_stale_skipped"]) == (0, 2)
    # Another task (a fresh repository, the table exists) serves the same values.
    other = FeatureRepository(
        churn,
        repo_dir=tmp_path / "other",
        offline_store=s3_store,
        offline_prefix="features/churn",
        project=project,
        online=online,
    )
    pd.testing.assert_frame_equal(other.online_features(["c1", "c2", "c3", "nobody"]).set_index("_entity"), got)


@pytest.fixture
def redis_project():
    """A Feast project of its own in database 13; every key of it is deleted afterwards."""
    import redis

    project = f"redis_{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis server on 127.0.0.1:6379 (scripts/ensure_services.sh starts one)")
    yield project
    suffix = project.encode()
    doomed = [k for k in client.scan_iter(count=1000) if k.endswith(suffix)]
    if doomed:
        client.delete(*doomed)
    client.close()


def test_redis_online_store_keeps_the_newer_value(churn, redis_project, tmp_path):
    repo = FeatureRepository(
        churn,
        repo_dir=tmp_path,
        offline_dir=str(tmp_path / "offline"),
        project=redis_project,
        online=OnlineStoreConfig(kind="redis", redis_url=REDIS_URL),
    )
    first = repo.materialize_version("new", rows(churn, NEW, "new.csv"))
    late = repo.materialize_version("old", rows(churn, OLD, "old.csv"))
    assert (first["online_entities"], late["online_entities"], late["online_stale_skipped"]) == (2, 1, 1)
    got = repo.online_features(["c1", "c2", "c3", "nobody"]).set_index("_entity")
    assert got.loc["c1", "tenure_months"] == 5 and got.loc["c2", "tenure_months"] == 2
    assert got.loc["c3", "tenure_months"] == 30 and pd.isna(got.loc["nobody", "tenure_months"])
    assert got.loc["c1", "_event_time"] == pd.Timestamp("2024-01-05T00:00:00Z")
    assert not (tmp_path / "online.db").exists()  # nothing went to SQLite


def test_redis_connection_strings_and_secrets(churn, tmp_path):
    assert redis_connection_string("redis://127.0.0.1:6379/13") == "127.0.0.1:6379,db=13"
    assert redis_connection_string("rediss://user:p%40ss@cache:6380/2") == (
        'cache:6380,db=2,username="user",password="p@ss",ssl=true'
    )
    with pytest.raises(FeatureRepositoryError, match="database number"):
        redis_connection_string("redis://host:6379/zero")
    with pytest.raises(FeatureRepositoryError, match="redis:// or rediss://") as caught:
        redis_connection_string("http://user:hunter2@host:6379/0")
    assert "hunter2" not in str(caught.value)
    config = OnlineStoreConfig(kind="redis", redis_url="redis://:hunter2@127.0.0.1:6379/13")
    assert "hunter2" not in repr(config)
    with pytest.raises(FeatureRepositoryError, match=r"features\.redis_conn_id"):
        OnlineStoreConfig(kind="redis")
    with pytest.raises(FeatureRepositoryError, match="dynamodb_region"):
        OnlineStoreConfig(kind="dynamodb")
