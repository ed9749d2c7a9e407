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


class Case:
    """One history size: a filled base repository, copied afresh for every cold run."""

    def __init__(self, root: Path, history: int, version_rows: int, rows_per_day: int, cache: dict) -> None:
        self.root = root
        self.history = history
        repo = make_repo(root / "base")
        for day in range(history):
            if day not in cache:
                cache[day] = accepted_day(day, rows_per_day)
            repo.materialize_version(f"d{day:04d}", cache[day])
        self.big = accepted_day(history, version_rows)
        self.cold: list[float] = []
        self.warm: list[float] = []
        self.floors: list[float] = []
        self.entities = 0

    def run(self) -> None:
        out = self.root / "floor.parquet"
        start = time.perf_counter()
        self.big.to_parquet(out, index=False)
        self.floors.append(time.perf_counter() - start)
        copy = self.root / f"run{len(self.cold)}"
        shutil.copytree(self.root / "base", copy)
        target = make_repo(copy)
        target.apply()  # as the features stage does once per task
        start = time.perf_counter()
        first = target.materialize_version("big", self.big)
        self.cold.append(time.perf_counter() - start)
        start = time.perf_counter()
        again = target.materialize_version("big", self.big)
        self.warm.append(time.perf_counter() - start)
        assert first["offline_rows"] == again["offline_rows"] == len(self.big)
        assert again["online_stale_skipped"] == 0
        self.entities = first["online_entities"]
        shutil.rmtree(copy)


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
    with tempfile.TemporaryDirectory(prefix="bench-mat-") as tmp:
        cases = [Case(Path(tmp) / f"h{h}", h, version_rows, rows_per_day, cache) for h in histories]
        for case in cases:  # warm-up (imports, first Feast calls), not counted
            case.run()
            case.cold.clear()
            case.warm.clear()
            case.floors.clear()
        gc.collect()  # the set-up's garbage is not collected inside a timed run
        for _ in range(args.runs):  # every case and its floor once per round: the same machine load for all
            for case in cases:
                case.run()
    results = [
        {
            "history": c.history,
            "cold": statistics.median(c.cold),
            "warm": statistics.median(c.warm),
            "floor": statistics.median(c.floors),
        }
        for c in cases
    ]
    rows = []
    for r in results:
        for kind in ("cold", "warm"):
            case_name = f"{version_rows} rows, {kind}, after {r['history']} versions"
            value = r[kind]
            rows.append(row(BENCH, case_name, value, "s", r["floor"], "<= 3x floor", value <= 3 * r["floor"]))
    for kind in ("cold", "warm"):
        growth = results[-1][kind] / results[0][kind]
        case = f"ratio {kind}: after {histories[-1]} / after {histories[0]} versions"
        rows.append(row(BENCH, case, growth, "x", None, "<= 1.3", growth <= 1.3))
    print_table(f"Materialize one {version_rows}-row version (median of {args.runs})", rows)
    write_json(args.json_path, rows)
    return 0 if all(r["ok"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
