"""Incremental SQL ingestion through the common-sql hook, on SQLite and on real PostgreSQL.

The Airflow connection comes from the environment (``AIRFLOW_CONN_<ID>``) as in production.
PostgreSQL: the server on 127.0.0.1:5432 (``MLOPS_TEST_PG_URL`` to use another); the test
creates its own database and drops it afterwards. In CI (``CI=true``) a missing server fails
the test instead of skipping it (``make test`` starts one: scripts/ensure_services.sh).
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

PG_URL = os.environ.get("MLOPS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _rows(n_days=2, rows=150):
    import pandas as pd

    from mlops_core.demo_data import generate_day

    df = pd.concat([generate_day(d, rows=rows, seed=3) for d in range(n_days)], ignore_index=True)
    return df.sort_values("event_time", kind="mergesort").reset_index(drop=True)


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'source.db'}"


@pytest.fixture
def postgres_url():
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"mlops_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {PG_URL} is required in CI: {exc}")
        pytest.skip(f"no PostgreSQL at {PG_URL} (run scripts/ensure_services.sh): {exc}")
    url = PG_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _load_table(url: str, df, as_text_times: bool):
    from sqlalchemy import create_engine

    engine = create_engine(url)
    out = df.copy()
    if as_text_times:
        out["event_time"] = out["event_time"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    out.to_sql("churn_events", engine, index=False, if_exists="replace")
    engine.dispose()


def _ingest_until_done(url: str, mlops_home, monkeypatch, batch_size: int):
    from mlops_airflow.hooks.sql_table import SqlTableHook
    from mlops_core.backends import backends_for, object_store
    from mlops_core.datasets import DatasetStore
    from mlops_core.settings import load_settings
    from mlops_core.stages.ingest import ingest_sql

    monkeypatch.setenv("AIRFLOW_CONN_CHURN_DB", json.dumps({"conn_type": "generic", "extra": {"sqlalchemy_url": url}}))
    settings = load_settings(
        "dev",
        overrides={
            "dataset": {
                "sql_source": {
                    "conn_id": "churn_db",
                    "table": "churn_events",
                    "watermark_column": "event_time",
                    "batch_size": batch_size,
                }
            }
        },
    )
    hook = SqlTableHook(sql_conn_id="churn_db")
    reports = []
    for i in range(20):
        report = ingest_sql(
            settings,
            hook.read_after_watermark,
            backends_for(settings),
            run_id=f"sql-{i}",
            ingested_at="2026-02-01T00:00:00Z",
        )
        reports.append(report)
        if report["rows"] == 0 and report.get("reason") == "no new rows":
            break
    store = DatasetStore(object_store(settings), "churn")
    return reports, store


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_incremental_sql_ingest_reads_every_row_once(backend, request, mlops_home, monkeypatch):
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "postgres_url")
    df = _rows()
    _load_table(url, df, as_text_times=backend == "sqlite")
    reports, store = _ingest_until_done(url, mlops_home, monkeypatch, batch_size=120)

    versions = store.list_versions()
    assert len(versions) >= 3, "several batches: the watermark advanced between runs"
    assert sum(m["row_count"] for m in versions) == len(df)
    keys = store.read_versions([m["version_id"] for m in versions], columns=["_row_key"])["_row_key"]
    assert keys.is_unique and len(keys) == len(df)
    assert reports[-1]["reason"] == "no new rows"

    # New rows appended to the table are picked up by the next run, and only they.
    from mlops_core.demo_data import generate_day

    extra = generate_day(5, rows=40, seed=3)
    _load_table(url, __import__("pandas").concat([df, extra], ignore_index=True), as_text_times=backend == "sqlite")
    _, store = _ingest_until_done(url, mlops_home, monkeypatch, batch_size=120)
    assert sum(m["row_count"] for m in store.list_versions()) == len(df) + len(extra)


def test_bad_rows_from_sql_are_quarantined(sqlite_url, mlops_home, monkeypatch):
    df = _rows(n_days=1, rows=60)
    df.loc[3, "tenure_months"] = 999  # above the contract's max
    _load_table(sqlite_url, df, as_text_times=True)
    reports, store = _ingest_until_done(sqlite_url, mlops_home, monkeypatch, batch_size=1000)
    assert reports[0]["rejected_rows"] == 1
    assert sum(m["row_count"] for m in store.list_versions()) == len(df) - 1
    assert any("tenure_months" in json.dumps(q) for q in store.list_quarantine())


def test_unsafe_identifiers_are_refused(sqlite_url, monkeypatch):
    from mlops_airflow.hooks.sql_table import SqlTableHook

    monkeypatch.setenv("AIRFLOW_CONN_X", json.dumps({"conn_type": "generic", "extra": {"sqlalchemy_url": sqlite_url}}))
    with pytest.raises(ValueError, match="plain SQL identifier"):
        SqlTableHook(sql_conn_id="x").read_after_watermark("t; DROP TABLE x", "event_time", None, 10)
