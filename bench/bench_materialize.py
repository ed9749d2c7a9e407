"""Materialize one 100k-row dataset version (offline partitions + online push), against a raw write.

A feature repository is filled with H days of demo data (1,000 rows a day, one version a day,
project default TTL), then one 100,000-row version of the next day is materialized with
``FeatureRepository.materialize_version``: offline Parquet partitions, compacted-snapshot upkeep
and the guarded upsert of the newest row per entity into Feast's SQLite online store. Cold = the
first materialization of that version (on a fresh copy of the repository each run), warm = the
same version again (rewrite, online rows all equal: no newer value is overwritten). The
repository is applied (Feast registry) before timing, as the features stage does once per task.
Floor, side by side: ``DataFrame.to_parquet`` of the same accepted rows.

    .venv/bin/python bench/bench_materialize.py [--quick] [--runs 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when imported by bench/run_all.py

from _features_common import accepted_day, make_repo, print_table, row, write_json

BENCH = "materialize"


def measure(history: int, version_rows: int, rows_per_day: int, runs: int, cache: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-mat-") as tmp:
        base = Path(tmp) / "base"
        repo = make_repo(base)
        for day in range(history):
            if day not in cache:
                cache[day] = accepted_day(day, rows_per_day)
            repo.materialize_version(f"d{day:04d}", cache[day])
        big = accepted_day(history, version_rows)
        out = Path(tmp) / "floor.parquet"
        big.to_parquet(out, index=False)  # warm-up
        gc.collect()  # the set-up's garbage is not collected inside a timed run
        cold, warm, floors = [], [], []
        for i in range(runs):  # floor, cold and warm interleaved: the same machine load for all three
            start = time.perf_counter()
            big.to_parquet(out, index=False)
            floors.append(time.perf_counter() - start)
            copy = Path(tmp) / f"run{i}"
            shutil.copytree(base, copy)
            target = make_repo(copy)
            target.apply()
            start = time.perf_counter()
            first = target.materialize_version("big", big)
            cold.append(time.perf_counter() - start)
            start = time.perf_counter()
            again = target.materialize_version("big", big)
            warm.append(time.perf_counter() - start)
            assert first["offline_rows"] == again["offline_rows"] == len(big)
            assert again["online_stale_skipped"] == 0
        floor = statistics.median(floors)
        cold.sort()
        warm.sort()
        return {
            "history": history,
            "cold": cold[len(cold) // 2],
            "warm": warm[len(warm) // 2],
            "floor": floor,
            "entities": first["online_entities"],
        }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help=(
            "smaller history (5/20 versions of 300 rows); the version stays 100k rows: the online push is "
            "per entity (5,000), so a smaller version would weigh it against a smaller floor write"
        ),
    )
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args(argv)
    histories, version_rows, rows_per_day = ([5, 20], 100_000, 300) if args.quick else ([10, 120], 100_000, 1000)
    cache: dict = {}
    results = [measure(h, version_rows, rows_per_day, args.runs, cache) for h in histories]
    rows = []
    for r in results:
        for kind in ("cold", "warm"):
            case = f"{version_rows} rows, {kind}, after {r['history']} versions"
            value = r[kind]
            rows.append(row(BENCH, case, value, "s", r["floor"], "<= 3x floor", value <= 3 * r["floor"]))
    for kind in ("cold", "warm"):
        growth = results[-1][kind] / results[0][kind]
        case = f"ratio {kind}: after {histories[-1]} / after {histories[0]} versions"
        rows.append(row(BENCH, case, growth, "x", None, "<= 1.3", growth <= 1.3))
    print_table(f"Materialize one {version_rows}-row version (median of {args.runs})", rows)
    write_json(args.json_path, rows)
    return 0 if all(r["ok"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
