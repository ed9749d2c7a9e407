"""Shared fixtures for the mlops_core tests: the demo contract, a tiny contract, CSV builders."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlops_core.contract import DatasetContract
from mlops_core.demo_data import COLUMNS
from mlops_core.serving import LocalModelServer
from mlops_core.storage import LocalObjectStore

REPO_ROOT = Path(__file__).resolve().parents[2]
CHURN_CONTRACT = REPO_ROOT / "include" / "contracts" / "churn.yaml"
INGESTED_AT = pd.Timestamp("2024-03-01T12:00:00Z")

CHURN_HEADER = list(COLUMNS)


def churn_row(customer: str = "c1", event_time: str = "2024-01-01T00:00:00Z", **overrides: str) -> dict[str, str]:
    """One valid churn row as text; keyword arguments replace single values."""
    row = {
        "customer_id": customer,
        "event_time": event_time,
        "tenure_months": "12",
        "monthly_charges": "49.5",
        "usage_hours": "100",
        "support_calls": "1",
        "plan": "basic",
        "region": "north",
        "autopay": "true",
        "last_payment_delay_days": "",
        "churned": "0",
    }
    row.update(overrides)
    return row


def to_csv(rows: list[dict[str, str]], header: list[str] | None = None) -> bytes:
    """Rows as CSV bytes, quoted where needed, one line end per row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = header or list(rows[0])
    writer.writerow(header)
    writer.writerows([r.get(h, "") for h in header] for r in rows)
    return buffer.getvalue().encode("utf-8")


@pytest.fixture(scope="session")
def churn() -> DatasetContract:
    return DatasetContract.from_yaml(CHURN_CONTRACT)


@pytest.fixture(scope="session")
def keyless() -> DatasetContract:
    """A contract without entity key and event time: row keys come from the row content."""
    return DatasetContract.from_dict(
        {
            "name": "keyless",
            "task": "regression",
            "target": "y",
            "unknown_columns": "drop",
            "columns": [
                {"name": "x", "type": "float"},
                {"name": "flag", "type": "bool", "nullable": True},
                {"name": "y", "type": "int", "min": 0},
            ],
        }
    )


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "store")


# ----------------------------------------------------------------------------- toy models
TOY_FEATURES = ["tenure", "charges", "plan"]


def toy_frame(n: int, seed: int) -> pd.DataFrame:
    """Three toy feature columns (int, float, category) for registry/serving tests."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "tenure": rng.integers(0, 100, n),
            "charges": rng.normal(50.0, 10.0, n),
            "plan": rng.choice(["basic", "standard", "premium"], n),
        }
    )


def toy_pipeline(X: pd.DataFrame, y, C: float = 1.0):
    """A fitted OneHotEncoder + StandardScaler + LogisticRegression pipeline over TOY_FEATURES."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"]), ("num", StandardScaler(), ["tenure", "charges"])]
    )
    return Pipeline([("pre", pre), ("clf", LogisticRegression(C=C))]).fit(X, y)


def register_toy_model(
    registry,
    model_name: str,
    data: pd.DataFrame,
    labels,
    *,
    run_name: str,
    dataset_name: str = "toy",
    dataset_digest: str | None = None,
) -> str:
    """Log :func:`toy_pipeline` fitted on ``data[TOY_FEATURES]`` and ``labels`` as the MLflow run
    ``run_name`` (no params, metrics or tags) and register it as ``model_name``: the new version."""
    run_id = registry.log_training_run(
        run_name=run_name,
        model=toy_pipeline(data[TOY_FEATURES], labels),
        input_example=data[TOY_FEATURES].head(3),
        params={},
        metrics={},
        tags={},
        dataset_df=data,
        dataset_name=dataset_name,
        dataset_digest=dataset_digest or run_name,
        dataset_source=f"/data/{dataset_name}",
    )
    return registry.register(run_id, model_name)


def capture_request(
    writer: Any,
    request_id: str,
    at: Any,
    rows: pd.DataFrame,
    predictions: list,
    *,
    version: str = "1",
    status: int = 200,
    latency: float = 12.0,
) -> None:
    """One scoring request as the capture proxy records it (the client sends no label, no event time):
    ``rows`` sent as ``dataframe_split``, answered with ``predictions``, added to ``writer``."""
    import json

    from mlops_core.capture import capture_record

    sent = rows.drop(columns=[c for c in ("event_time", "churned") if c in rows.columns])
    body = {"dataframe_split": json.loads(sent.to_json(orient="split", index=False))}
    writer.add(
        capture_record(
            request_id=request_id,
            captured_at=at,
            latency_ms=latency,
            status=status,
            target="local:dev",
            model_name="churn",
            model_version=version,
            entity_key="customer_id",
            request_body=json.dumps(body).encode(),
            request_content_type="application/json",
            response_body=json.dumps({"predictions": predictions}).encode(),
        )
    )


class StandInServer(LocalModelServer):
    """LocalModelServer whose process is a stand-in script (``script``) instead of `mlflow models serve`.

    The stand-in "serves" the URI itself: there is no registry behind these URIs, so the download
    and verification step (covered by the real-server tests and tests/core/test_model_integrity.py)
    hands the URI through unchanged.
    """

    script: Path

    def _fetch_verified(self, model_uri: str, model_version: str, expected_sha256: str | None) -> tuple[str, str]:
        return model_uri, ""

    def _command(self, model_uri: str, host: str, port: int) -> list[str]:
        return [
            sys.executable,
            str(self.script),
            "mlflow",
            "models",
            "serve",
            "-m",
            model_uri,
            "-h",
            host,
            "-p",
            str(port),
        ]
