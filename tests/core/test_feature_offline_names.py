"""Partition folders never leak into the rows read back: a column named like a partition key is data.

The offline layout is ``<prefix>/event_date=YYYY-MM-DD/version=<id>.parquet`` and dataset versions
are ``.../event_date=YYYY-MM-DD/part-0000.parquet``. pyarrow reading a *path* infers Hive partitions
from its folders: it would add an ``event_date`` column (and ``version``) to every table read, and
refuse a file whose own ``event_date`` column has another type ("Unable to merge"). A contract with
a column called ``event_date`` is ordinary user data (found by the hostile-batch property test).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from mlops_core.feature_offline import OfflineLayout
from mlops_core.storage import LocalObjectStore


def _table() -> pa.Table:
    times = pa.array(
        [datetime(2026, 1, 1, 8, tzinfo=UTC), datetime(2026, 1, 2, 9, tzinfo=UTC)], pa.timestamp("ns", "UTC")
    )
    return pa.table(
        {
            "customer_id": ["a", "b"],
            "event_timestamp": times,
            "event_date": pa.array([20260101, 20260102], pa.int64()),  # the user's own column
            "version": ["v1", "v2"],
        }
    )


def test_offline_partitions_read_back_exactly_what_was_written(tmp_path):
    layout = OfflineLayout(LocalObjectStore(tmp_path / "store"), "features/churn", "customer_id", "event_timestamp")
    assert len(layout.write_version("0123456789abcdef", _table())) == 2
    files = layout.files(layout.days())
    got = pa.concat_tables([layout.read(f) for f in files]).sort_by("customer_id")
    assert got.column_names == ["customer_id", "event_timestamp", "event_date", "version"]  # nothing added
    assert got.column("event_date").to_pylist() == [20260101, 20260102]
    assert got.column("version").to_pylist() == ["v1", "v2"]
    some = layout.read(files[0], columns=["event_date"])
    assert some.column_names == ["event_date"] and some.column("event_date").type == pa.int64()
