"""Dataset versions in the AWS Glue Data Catalog, so Athena (and Spark, Redshift Spectrum) query them directly.

Each dataset gets a database (``<prefix>_<dataset>``) holding one table (``<dataset>``): the
version files under ``datasets/<dataset>/versions/`` in the S3 store, Parquet, with two partition
keys, ``version_id`` and ``event_date``. Each committed version adds its partitions, one per
event date it holds (its files live in ``versions/<version_id>/event_date=<day>/``; a partition
on the whole version folder would also read its row-key file and manifest). A user reads one
version with ``WHERE version_id = '...'``, or the whole dataset, every row once (versions never
overlap), without a filter.

The table's columns come from the manifest's stored schema (pandas dtypes -> Glue types); a version
with a different schema (the contract changed) updates the table, and Glue keeps the table's
earlier definitions as table versions. Every call is idempotent: registering a version again adds
nothing. The boto3 Glue client is injected (``GlueCatalogHook(aws_conn_id).get_conn()`` in Airflow).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from mlops_core.aws_errors import aws_error

log = logging.getLogger(__name__)

PARTITION_KEYS = ({"Name": "version_id", "Type": "string"}, {"Name": "event_date", "Type": "string"})
PARQUET = {
    "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
    "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
    "SerdeInfo": {"SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"},
}
_NOT_GLUE = re.compile(r"[^a-z0-9_]+")
_BATCH = 100  # BatchCreatePartition takes at most 100 partitions per call


def glue_name(text: str) -> str:
    """``text`` as a Glue database/table name: lowercase letters, digits and underscores."""
    name = _NOT_GLUE.sub("_", text.lower()).strip("_")
    if not name:
        raise ValueError(f"no Glue name can be made from {text!r}")
    return name[:255]


def glue_type(dtype: str) -> str:
    """The Glue (Hive) type of a stored column, from its pandas dtype as the manifest records it."""
    dtype = dtype.lower()
    if dtype.startswith(("int", "uint")):
        return "bigint"
    if dtype.startswith("float"):
        return "double"
    if dtype in ("bool", "boolean"):
        return "boolean"
    if dtype.startswith("datetime64"):
        return "timestamp"
    return "string"  # string, object, category


class GlueCatalog:
    """The Glue tables of the datasets in one S3 store.

    :param client: a boto3 Glue client.
    :param database_prefix: databases are ``<prefix>_<dataset>`` (e.g. ``mlops_dev``).
    """

    def __init__(self, client: Any, database_prefix: str) -> None:
        self.client = client
        self.database_prefix = glue_name(database_prefix)

    def __repr__(self) -> str:
        return f"GlueCatalog(database_prefix={self.database_prefix!r})"

    def database(self, dataset: str) -> str:
        return glue_name(f"{self.database_prefix}_{dataset}")

    def _ensure_database(self, database: str, dataset: str) -> None:
        try:
            self.client.create_database(
                DatabaseInput={
                    "Name": database,
                    "Description": f"Dataset {dataset}: one table, a partition per version",
                }
            )
            log.info("Created Glue database %s", database)
        except Exception as exc:
            if aws_error(exc)[0] != "AlreadyExistsException":
                raise

    def _ensure_table(self, database: str, table: str, columns: list[dict[str, str]], location: str) -> None:
        table_input = {
            "Name": table,
            "TableType": "EXTERNAL_TABLE",
            "Parameters": {"classification": "parquet", "EXTERNAL": "TRUE"},
            "PartitionKeys": list(PARTITION_KEYS),
            "StorageDescriptor": {"Columns": columns, "Location": location, **PARQUET},
        }
        try:
            current = self.client.get_table(DatabaseName=database, Name=table)["Table"]
        except Exception as exc:
            if aws_error(exc)[0] != "EntityNotFoundException":
                raise
            self.client.create_table(DatabaseName=database, TableInput=table_input)
            log.info("Created Glue table %s.%s at %s", database, table, location)
            return
        if current.get("StorageDescriptor", {}).get("Columns") != columns:
            self.client.update_table(DatabaseName=database, TableInput=table_input)
            log.info(
                "Updated the columns of Glue table %s.%s (the earlier ones stay as a table version)", database, table
            )

    def register_version(self, manifest: Mapping[str, Any], versions_uri: str) -> list[list[str]]:
        """Make a committed version queryable: database, table and one partition per event date.

        :param manifest: the version's manifest (``dataset``, ``version_id``, ``schema``, ``partitions``).
        :param versions_uri: ``s3://.../datasets/<dataset>/versions/`` of the store holding it.
        :returns: the partition values added (``[version_id, day]``); empty when all existed.
        """
        dataset, version_id = str(manifest["dataset"]), str(manifest["version_id"])
        database, table = self.database(dataset), glue_name(dataset)
        base = versions_uri.rstrip("/") + "/"
        columns = [{"Name": str(name), "Type": glue_type(str(dtype))} for name, dtype in manifest["schema"].items()]
        self._ensure_database(database, dataset)
        self._ensure_table(database, table, columns, base)
        days = sorted(manifest.get("partitions", {}))
        wanted: list[dict[str, Any]] = [
            {
                "Values": [version_id, day],
                "StorageDescriptor": {
                    "Columns": columns,
                    "Location": f"{base}{version_id}/event_date={day}/",
                    **PARQUET,
                },
            }
            for day in days
        ]
        added: list[list[str]] = []
        for start in range(0, len(wanted), _BATCH):
            batch = wanted[start : start + _BATCH]
            answer = self.client.batch_create_partition(
                DatabaseName=database, TableName=table, PartitionInputList=batch
            )
            failed = {
                tuple(e["PartitionValues"]): e["ErrorDetail"]
                for e in answer.get("Errors", [])
                if e.get("ErrorDetail", {}).get("ErrorCode") != "AlreadyExistsException"
            }
            if failed:
                raise RuntimeError(f"Glue refused partitions of {database}.{table}: {failed}")
            existed = {tuple(e["PartitionValues"]) for e in answer.get("Errors", [])}
            added += [[version_id, str(p["Values"][1])] for p in batch if tuple(p["Values"]) not in existed]
        log.info(
            "Glue %s.%s: version %s has %d partition(s), %d new", database, table, version_id, len(wanted), len(added)
        )
        return added
