"""Shared set-up of the feature-store benchmarks: demo days as accepted rows, a repository, timing."""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "include"))

import pandas as pd  # noqa: E402
from _common import make_row  # noqa: E402

from mlops_core.contract import DatasetContract  # noqa: E402
from mlops_core.demo_data import generate_day  # noqa: E402
from mlops_core.features import FeatureRepository  # noqa: E402
from mlops_core.validation import validate  # noqa: E402

CONTRACT = DatasetContract.from_yaml(REPO / "include" / "contracts" / "churn.yaml")
INGESTED_AT = pd.Timestamp("2027-01-01T00:00:00Z")


def accepted_day(day: int, rows: int = 1000) -> pd.DataFrame:
    """The accepted rows of demo day ``day`` (what the features stage gets from one dataset version)."""
    frame = generate_day(day, rows=rows)
    result = validate(frame, CONTRACT, f"churn_day{day}.csv", INGESTED_AT)
    if not result.rejected.empty:
        raise RuntimeError(f"demo day {day}: {len(result.rejected)} rows rejected")
    return result.accepted


def make_repo(root: Path, ttl_days: int = 3650) -> FeatureRepository:
    """A repository with the project's default TTL (``features.ttl_days`` = 3650)."""
    return FeatureRepository(
        CONTRACT, repo_dir=root / "feast", offline_dir=str(root / "offline"), project="bench", ttl_days=ttl_days
    )


def median_seconds(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def row(benchmark: str, case: str, value: float, unit: str, floor: float | None, goal: str, ok: bool | None) -> dict:
    return make_row(benchmark, case, value, unit, floor, goal, ok, digits=4)


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(f"{'case':<44} {'value':>10} {'unit':<5} {'floor':>9} {'ratio':>7}  {'goal':<24} ok")
    for r in rows:
        floor = "-" if r["floor"] is None else f"{r['floor']:.4f}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        ok = "-" if r["ok"] is None else ("yes" if r["ok"] else "NO")
        print(f"{r['case']:<44} {r['value']:>10.4f} {r['unit']:<5} {floor:>9} {ratio:>7}  {r['goal']:<24} {ok}")


def write_json(path: str | None, rows: list[dict]) -> None:
    if path:
        Path(path).write_text(json.dumps(rows, indent=2))
