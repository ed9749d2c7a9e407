"""Ingest onto S3 (moto) against raw boto3 uploads of the same files: throughput, validation included.

The same CSV files (demo days from ``mlops_core.demo_data``, every row valid) go to a moto S3 server
two ways, side by side in this script, alternating, three times each (the median counts):

* **raw**: ``boto3``'s ``upload_file`` of each file, one after the other, to a fresh bucket: the
  floor, what moving the bytes alone costs;
* **ingest**: ``mlops_core.stages.ingest.ingest_files`` with the bundle an Airflow task builds
  (``mlops_airflow.backends.backends_for``: ``S3Hook``, ``GlueCatalogHook``) on ``backends.storage:
  aws`` and ``backends.catalog: glue``: local copy and hash, parse, validate against the contract,
  de-duplicate, Parquet per event date, upload with a SHA-256 per object, manifest, Glue partitions,
  ledger, archive -- everything a task does, to a fresh bucket.

Throughput is the CSV bytes delivered per second; goal: ingest at least 0.8x raw. The moto server
runs in its own process (started by this script, with the S3 checksum check of
``tests/moto_server.py``), as S3 is another machine, so its work is not billed to either side.

    .venv/bin/python bench/bench_s3_ingest.py [--quick] [--json rows.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _common import make_row, median_of, print_table, side_by_side

REPO = Path(__file__).resolve().parents[1]
BENCH = "s3_ingest"
AT = "2026-06-01T00:00:00+00:00"
CONN_ID = "mlops_bench_s3"
GOAL = 0.8
MB = 1024 * 1024


# --------------------------------------------------------------------------- the moto server
def serve() -> None:
    """Child: a moto server on a free loopback port; prints its URL, runs until stdin closes."""
    sys.path.insert(0, str(REPO))
    from tests.moto_server import start_moto_server

    server, handle = start_moto_server()
    print(server.url, flush=True)
    sys.stdin.read()
    handle.stop()


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        proc.kill()
        raise RuntimeError(f"the moto server did not start (said {url!r})")
    return proc, url


# --------------------------------------------------------------------------- the two sides
def _client(url: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",  # noqa: S106 - moto accepts any key; nothing secret
    )


def _new_bucket(client: Any) -> str:
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return bucket


def raw_upload(url: str, files: list[Path]) -> float:
    """Seconds to upload ``files`` with boto3's managed transfer, one after the other."""
    client = _client(url)
    bucket = _new_bucket(client)
    t0 = time.perf_counter()
    for path in files:
        client.upload_file(str(path), bucket, f"raw/{path.name}")
    return time.perf_counter() - t0


def _local_settings(home: Path) -> Any:
    os.environ["MLOPS_HOME"] = str(home)
    os.environ["MLOPS_ENV"] = "dev"
    for name in ("MLOPS_DROP_ZONE", "MLOPS_CONTRACT", "MLOPS_CONF_DIR"):
        os.environ.pop(name, None)
    from mlops_core.settings import load_settings

    settings = load_settings("dev")
    settings.dataset.drop_zone.mkdir(parents=True, exist_ok=True)
    return settings


def _aws_settings(url: str, home: Path, bucket: str) -> Any:
    os.environ["MLOPS_HOME"] = str(home)
    os.environ["MLOPS_ENV"] = "dev"
    for name in ("MLOPS_DROP_ZONE", "MLOPS_CONTRACT", "MLOPS_CONF_DIR"):
        os.environ.pop(name, None)
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(
        {
            "conn_type": "aws",
            "login": "bench",
            "password": "bench",
            "extra": {"region_name": "us-east-1", "endpoint_url": url},
        }
    )
    from mlops_core.settings import load_settings

    settings = load_settings(
        "dev",
        {
            "backends": {"storage": "aws", "compute": "aws", "catalog": "glue"},
            "storage": {"root": f"s3://{bucket}/mlops/dev"},
            "aws": {
                "conn_id": CONN_ID,
                "glue_database_prefix": f"bench_{bucket.replace('-', '_')}",
                "sagemaker_role_arn": "arn:aws:iam::123456789012:role/bench",
                "training_image": "unused:1",
            },
        },
    )
    settings.dataset.drop_zone.mkdir(parents=True, exist_ok=True)
    return settings


def ingest(url: str | None, files: list[Path], work: Path, tag: str) -> float:
    """Seconds for one ingest task of copies of ``files`` into a fresh bucket (``url`` None: the local backend)."""
    from mlops_airflow.backends import backends_for
    from mlops_core.stages.ingest import ingest_files

    home = work / f"home-{tag}"
    settings = _local_settings(home) if url is None else _aws_settings(url, home, _new_bucket(_client(url)))
    delivered = []
    for path in files:  # delivered into the drop zone before the clock starts
        target = settings.dataset.drop_zone / path.name
        shutil.copyfile(path, target)
        delivered.append(str(target))
    backends = backends_for(settings)  # built once per task, before the work, as a task does
    backends.catalog  # noqa: B018 - its client too (lazy otherwise): the raw side's client is made before its clock
    t0 = time.perf_counter()
    report = ingest_files(settings, delivered, backends, run_id=f"bench-{tag}", ingested_at=AT)
    seconds = time.perf_counter() - t0
    if not report["created"] or report["rejected_rows"] or report["files_quarantined"]:
        raise SystemExit(f"bench data did not make one clean version: {json.dumps(report, default=str)[:500]}")
    shutil.rmtree(home, ignore_errors=True)
    return seconds


# --------------------------------------------------------------------------- table
def _row(case: str, value: float, unit: str, floor: float | None, goal: str, ok: bool | None) -> dict[str, Any]:
    return make_row(BENCH, case, value, unit, floor, goal, ok)


def measure(quick: bool, work: Path) -> list[dict[str, Any]]:
    from mlops_core.demo_data import write_day_files

    n_files, rows = (4, 25_000) if quick else (8, 100_000)
    data = work / "files"
    data.mkdir(parents=True, exist_ok=True)
    files = write_day_files(data, range(n_files), rows=rows)
    total = sum(p.stat().st_size for p in files)
    proc, url = start_server()
    try:
        ingest(url, files[:1], work, "warmup")  # imports and first connections, not timed
        raw_upload(url, files[:1])
        ingest(None, files[:1], work, "warmup-local")
        runs = side_by_side(
            {
                "raw": lambda _i: raw_upload(url, files),
                "ours": lambda i: ingest(url, files, work, str(i)),
                "local": lambda i: ingest(None, files, work, f"local-{i}"),
            }
        )
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
    raw_s, ours_s, local_s = median_of(runs["raw"]), median_of(runs["ours"]), median_of(runs["local"])
    raw_mbs, ours_mbs = total / MB / raw_s, total / MB / ours_s
    label = f"{n_files} CSV files, {n_files * rows:,} rows, {total / MB:.0f} MB"
    return [
        _row(f"raw boto3 upload_file, {label}: seconds", raw_s, "s", None, "-", None),
        _row(f"ingest_files to S3 + Glue, {label}: seconds", ours_s, "s", raw_s, "-", None),
        _row(f"ingest_files on the local backend (no S3), {label}: seconds", local_s, "s", None, "-", None),
        _row("S3 + Glue share of the ingest seconds (1 - local / S3)", 1 - local_s / ours_s, "", None, "-", None),
        _row(
            f"ingest throughput vs raw upload ({label})",
            ours_mbs,
            "MB/s",
            raw_mbs,
            f">= {GOAL}x raw",
            ours_mbs >= GOAL * raw_mbs,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="4 files of 25k rows (default: 8 of 100k)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the moto server child
    args = ap.parse_args(argv)
    if args.serve:
        serve()
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-s3-ingest-") as tmp:
        rows = measure(args.quick, Path(tmp))
    print_table("S3 ingest benchmark (floor: raw boto3 uploads of the same files to the same moto server)", rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
