"""Build demo churn files in every delivered format, and look at what one ingest run left behind."""

from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_core.backends import object_store
from mlops_core.datasets import DatasetStore
from mlops_core.demo_data import generate_day
from mlops_core.settings import Settings, load_settings

FORMATS = ("csv", "csv.gz", "parquet")


def setup_drop_zone(mlops_home: Path) -> tuple[Settings, Path, DatasetStore]:
    """Dev settings on ``mlops_home`` (the churn contract), an empty drop zone and the dataset store."""
    settings = load_settings("dev")
    drop = settings.dataset.drop_zone
    drop.mkdir(parents=True)
    return settings, drop, DatasetStore(object_store(settings), "churn")


def churn_frame(rows: int, day: int = 0, seed: int = 1) -> pd.DataFrame:
    return generate_day(day, rows=rows, seed=seed)


def file_bytes(frame: pd.DataFrame, fmt: str) -> bytes:
    """``frame`` as a delivered file: CSV, gzip-compressed CSV or Parquet."""
    if fmt == "parquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False, engine="pyarrow")
        return buffer.getvalue()
    text = frame.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%S%z").encode("utf-8")
    return gzip.compress(text, mtime=0) if fmt == "csv.gz" else text


def write_file(drop: Path, name: str | bytes, data: bytes) -> Path:
    """Write ``data`` under ``name`` (bytes: any name Linux allows) in ``drop``; returns the path."""
    path = Path(drop) / (name if isinstance(name, str) else os.fsdecode(name))
    path.write_bytes(data)
    return path


def archived(drop: Path) -> list[Path]:
    """Every entry moved to the archive folders next to the drop zone (links included)."""
    root = drop.parent / f"{drop.name}.archive"
    return sorted(p for p in root.rglob("*") if p.is_symlink() or not p.is_dir()) if root.exists() else []


def store_snapshot(settings: Settings) -> dict[str, bytes]:
    store = object_store(settings)
    return {key: store.get_bytes(key) for key in store.list_keys()}


def committed_rows(ds: DatasetStore) -> pd.DataFrame:
    versions = [m["version_id"] for m in ds.list_versions()]
    return ds.read_versions(versions) if versions else pd.DataFrame()


def quarantine_by_source(ds: DatasetStore, run_id: str | None = None) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for record in ds.list_quarantine(run_id):
        out.setdefault(record["source"], []).append(record)
    return out


def json_safe(report: dict[str, Any]) -> dict[str, Any]:
    """The report as the asset event / XCom carries it: strict JSON, encodable as UTF-8."""
    text = json.dumps(report, ensure_ascii=False, allow_nan=False)
    text.encode("utf-8")
    return json.loads(text)


def comparable_files(files: list[dict]) -> str:
    """A report's ``files`` as JSON without what depends on where and when this attempt archived."""
    import json

    trimmed = [{k: v for k, v in f.items() if k not in ("archived_as", "archived_bytes")} for f in files]
    return json.dumps(trimmed, sort_keys=True)
