"""Dataset versions in the Glue Data Catalog against a real moto server."""

from __future__ import annotations

import pytest

from mlops_core.glue_catalog import GlueCatalog, glue_name, glue_type
from tests.moto_server import unique_name

SCHEMA = {
    "event_time": "datetime64[ns, UTC]",
    "customer_id": "string",
    "tenure": "Int64",
    "monthly_charges": "float64",
    "churned": "boolean",
    "plan": "category",
    "_row_key": "string",
    "_source": "string",
}


def manifest(dataset: str, version_id: str, days: list[str], schema: dict[str, str] = SCHEMA) -> dict:
    return {
        "dataset": dataset,
        "version_id": version_id,
        "schema": schema,
        "partitions": {
            d: {"rows": 10, "key": f"datasets/{dataset}/versions/{version_id}/event_date={d}/part-0000.parquet"}
            for d in days
        },
    }


@pytest.fixture
def catalog(moto_server):
    return GlueCatalog(moto_server.code_client("glue"), f"mlops_{unique_name('dev').replace('-', '_')}")


def test_a_version_becomes_a_table_partitioned_by_version_and_day(catalog, moto_server):
    versions = "s3://bucket/mlops/dev/datasets/churn/versions/"
    added = catalog.register_version(manifest("churn", "v1", ["2026-01-01", "2026-01-02"]), versions)
    assert added == [["v1", "2026-01-01"], ["v1", "2026-01-02"]]
    glue, database = moto_server.client("glue"), catalog.database("churn")
    table = glue.get_table(DatabaseName=database, Name="churn")["Table"]
    assert [k["Name"] for k in table["PartitionKeys"]] == ["version_id", "event_date"]
    columns = {c["Name"]: c["Type"] for c in table["StorageDescriptor"]["Columns"]}
    assert columns == {
        "event_time": "timestamp",
        "customer_id": "string",
        "tenure": "bigint",
        "monthly_charges": "double",
        "churned": "boolean",
        "plan": "string",
        "_row_key": "string",
        "_source": "string",
    }
    assert table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"].endswith("ParquetHiveSerDe")
    parts = glue.get_partitions(DatabaseName=database, TableName="churn", Expression="version_id = 'v1'")["Partitions"]
    locations = sorted(p["StorageDescriptor"]["Location"] for p in parts)
    assert locations == [f"{versions}v1/event_date=2026-01-01/", f"{versions}v1/event_date=2026-01-02/"]


def test_registering_again_adds_nothing_and_a_new_version_adds_its_days(catalog, moto_server):
    versions = "s3://bucket/p/datasets/churn/versions"
    catalog.register_version(manifest("churn", "v1", ["2026-01-01"]), versions)
    assert catalog.register_version(manifest("churn", "v1", ["2026-01-01"]), versions) == []
    assert catalog.register_version(manifest("churn", "v2", ["2026-01-01", "2026-01-03"]), versions) == [
        ["v2", "2026-01-01"],
        ["v2", "2026-01-03"],
    ]
    parts = moto_server.client("glue").get_partitions(DatabaseName=catalog.database("churn"), TableName="churn")[
        "Partitions"
    ]
    assert sorted(tuple(p["Values"]) for p in parts) == [
        ("v1", "2026-01-01"),
        ("v2", "2026-01-01"),
        ("v2", "2026-01-03"),
    ]


def test_a_changed_schema_updates_the_table_and_keeps_the_old_definition(catalog, moto_server):
    versions = "s3://bucket/p/datasets/churn/versions/"
    catalog.register_version(manifest("churn", "v1", ["2026-01-01"]), versions)
    wider = {**SCHEMA, "support_calls": "Int64"}
    catalog.register_version(manifest("churn", "v2", ["2026-01-02"], wider), versions)
    glue, database = moto_server.client("glue"), catalog.database("churn")
    columns = [
        c["Name"] for c in glue.get_table(DatabaseName=database, Name="churn")["Table"]["StorageDescriptor"]["Columns"]
    ]
    assert columns[-1] == "support_calls"
    assert len(glue.get_table_versions(DatabaseName=database, TableName="churn")["TableVersions"]) == 2


def test_many_days_go_in_batches_of_a_hundred(catalog, moto_server):
    days = [f"2025-{m:02d}-{d:02d}" for m in range(1, 8) for d in range(1, 29)]  # 196 days
    added = catalog.register_version(manifest("big", "v1", days), "s3://bucket/p/datasets/big/versions/")
    assert len(added) == 196
    paginator = moto_server.client("glue").get_paginator("get_partitions")
    parts = [
        p
        for page in paginator.paginate(DatabaseName=catalog.database("big"), TableName="big")
        for p in page["Partitions"]
    ]
    assert len(parts) == 196


def test_names_and_types():
    assert glue_name("House-Prices v2") == "house_prices_v2"
    assert glue_type("Int64") == "bigint" and glue_type("float32") == "double"
    assert glue_type("datetime64[ns, UTC]") == "timestamp" and glue_type("object") == "string"
    with pytest.raises(ValueError, match="no Glue name"):
        glue_name("---")
