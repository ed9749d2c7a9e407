"""Training set for a fixed 30-day window, as the history before it grows (feature store, Feast).

For each history size H (days stored *before* the window; the window's own 30 days come on top),
the demo data (``mlops_core.demo_data``, 1,000 rows a day, one dataset version a day) is
materialized into a fresh feature repository with the project's default TTL (3,650 days, so the
TTL never prunes and the compacted snapshot does the work). Then the training set of the window's
rows (30,000 requests) is built with ``FeatureRepository.training_set`` (Feast
``get_historical_features`` on the partitioned offline store), median of N runs after one
warm-up call (process start-up: Feast registry, imports). The floor, measured side by side on the
same files: a pyarrow read of the window's partition files + pandas ``merge_asof`` (no look-back
before the window, so it is a lower bound, not an equivalent).

    .venv/bin/python bench/bench_training_set.py [--quick] [--runs 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when imported by bench/run_all.py

from _features_common import (
    accepted_day,
    make_repo,
    peak_rss_mb,
    print_table,
    row,
    write_json,
)

BENCH = "training_set"


def floor_join(offline: Path, window_days: list, requests, features: list[str]):
    """pyarrow read of the window's partition files + merge_asof (the floor)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = [
        p for day in window_days for p in sorted((offline / f"event_date={day.isoformat()}").glob("version=*.parquet"))
    ]
    table = pa.concat_tables([pq.read_table(p, columns=["_entity", "_event_time", *features]) for p in files])
    right = table.to_pandas().rename(columns={"_event_time": "_feature_time"}).sort_values("_feature_time")
    left = requests.sort_values("_event_time")
    return pd.merge_asof(
        left, right, left_on="_event_time", right_on="_feature_time", by="_entity", direction="backward"
    )


class Case:
    """One history size: a filled repository and the window's requests."""

    def __init__(self, root: Path, history: int, window: int, rows_per_day: int, cache: dict) -> None:
        import pandas as pd

        self.history = history
        total = history + window
        repo = make_repo(root)
        for day in range(total):
            if day not in cache:
                cache[day] = accepted_day(day, rows_per_day)
            repo.materialize_version(f"d{day:04d}", cache[day])
        window_rows = pd.concat([cache[d] for d in range(history, total)], ignore_index=True)
        self.entity_df = window_rows[["_entity", "_event_time", "_row_key", "churned"]]
        self.requests = window_rows[["_entity", "_event_time"]]
        self.window_days = sorted({t.date() for t in window_rows["_event_time"]})
        self.offline = root / "offline"
        self.repo = make_repo(root)  # a new object, as in a new task
        self.times: list[float] = []
        self.floors: list[float] = []

    def run(self) -> int:
        start = time.perf_counter()
        out = self.repo.training_set(self.entity_df)
        self.times.append(time.perf_counter() - start)
        start = time.perf_counter()
        floor_join(self.offline, self.window_days, self.requests, self.repo.feature_columns)
        self.floors.append(time.perf_counter() - start)
        return len(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="smaller sizes (histories 10/40, 10-day window, 500 rows a day)"
    )
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args(argv)
    histories, window, rows_per_day = ([10, 40], 10, 500) if args.quick else ([10, 40, 120], 30, 1000)
    cache: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-ts-") as tmp:
        cases = [Case(Path(tmp) / f"h{h}", h, window, rows_per_day, cache) for h in histories]
        for case in cases:  # warm-up: registry, imports
            case.run()
            case.times.clear()
            case.floors.clear()
        gc.collect()  # the set-up's garbage is not collected inside a timed run
        for _ in range(args.runs):  # every case and its floor once per round: the same machine load for all
            for case in cases:
                assert case.run() == len(case.entity_df)
    results = [
        {
            "history": c.history,
            "seconds": statistics.median(c.times),
            "floor": statistics.median(c.floors),
            "rows": len(c.entity_df),
        }
        for c in cases
    ]
    rows = []
    for r in results:
        case = f"{r['history']}d history + {window}d window ({r['rows']} rows)"
        rows.append(row(BENCH, case, r["seconds"], "s", r["floor"], "<= 3x floor", r["seconds"] <= 3 * r["floor"]))
    growth = results[-1]["seconds"] / results[0]["seconds"]
    rows.append(
        row(BENCH, f"ratio {histories[-1]}d / {histories[0]}d history", growth, "x", None, "<= 1.3", growth <= 1.3)
    )
    rows.append(row(BENCH, "peak RSS of the whole run", peak_rss_mb(), "MB", None, "-", None))
    print_table(f"Training set, fixed {window}-day window, growing history (median of {args.runs})", rows)
    write_json(args.json_path, rows)
    return 0 if all(r["ok"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
