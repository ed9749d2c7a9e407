"""Ingest at production size: one big valid CSV against the pyarrow floor, memory by file size, cost by history.

Cases (every measured run is its own child process, so peak memory is that run's own: the child
resets its peak RSS (``/proc/self/clear_refs``) just before the measured work and reports
``VmHWM`` minus its RSS at that point):

* **1M valid rows** (``--quick``: 100k): ``ingest_files`` on one CSV of demo rows against the floor
  measured side by side, ``pyarrow.csv.read_csv`` + ``pyarrow.parquet.write_table`` of the same
  file: seconds, rows/s, peak memory delta. Goal: within 5x the floor's seconds.
* **10M vs 1M rows** (``--quick``: 1M vs 100k): peak memory delta of the bigger file over the
  smaller one (goal: the same memory, <= 1.2) and over one batch's data (goal: <= 3). One
  batch's data is the in-memory Arrow size of the first batch of parsed text the ingest reader
  gives for that file (about ``dataset.ingest_batch_mb``, default 64 MB: the text ingest holds while
  it validates that batch in row slices), measured in a child of its own. Peak
  memory is the whole process's: ``VmHWM`` over the RSS after imports and settings, nothing left
  out (``--batch-mb`` measures another batch size).
* **History**: ingest one 1,000-row day with 10 / 40 / 120 versions already stored
  (``--quick``: 5 / 10 / 30); median of seven new days at each point. Goal: last / first <= 1.3.

Data comes from ``mlops_core.demo_data`` (deterministic); a big file is whole demo days
concatenated, so every row is valid and every row key distinct.

    .venv/bin/python bench/bench_ingest.py [--quick] [--only big|history] [--json rows.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import make_row, median_of, print_table, side_by_side

BENCH = "ingest"
BATCH_MB_ENV = "BENCH_INGEST_BATCH_MB"  # --batch-mb: dataset.ingest_batch_mb of the measured runs
AT = "2026-06-01T00:00:00+00:00"


# --------------------------------------------------------------------------- data
def write_big_csv(path: Path, rows: int, rows_per_day: int = 1_000_000) -> Path:
    """``rows`` valid demo rows in one CSV: whole demo days (distinct dates, so distinct keys)."""
    from mlops_core.demo_data import write_day_files

    if path.exists():
        return path
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp, path.open("wb") as out:
        day, left = 0, rows
        while left > 0:
            n = min(left, rows_per_day)
            day_file = write_day_files(Path(tmp), [day], rows=n)[0]
            with day_file.open("rb") as src:
                header = src.readline()
                if day == 0:
                    out.write(header)
                shutil.copyfileobj(src, out, 1 << 20)
            day_file.unlink()
            day, left = day + 1, left - n
    return path


# --------------------------------------------------------------------------- children
def _rss_bytes() -> int:
    """RSS now; also resets the peak (VmHWM) so that :func:`_peak_bytes` is the peak from here on."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass  # no reset: the peak then also covers start-up (imports), a little more than the work's
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_bytes() -> int:
    """Peak RSS of this process (VmHWM: since exec or the last reset, unlike ru_maxrss, which keeps
    the parent's peak when the child was forked from it)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child_floor(csv_path: str, out_dir: str) -> dict[str, Any]:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    before = _rss_bytes()
    t0, c0 = time.perf_counter(), _cpu()
    table = pacsv.read_csv(csv_path)
    pq.write_table(table, os.path.join(out_dir, "floor.parquet"))
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    return {"seconds": seconds, "cpu": cpu, "rows": table.num_rows, "rss_before": before, "peak": _peak_bytes()}


def _cpu() -> float:
    """CPU seconds of this process so far (user + system, all threads): less noisy than wall time
    on a machine shared with other work."""
    times = os.times()
    return times.user + times.system


def _settings(home: Path) -> Any:
    os.environ["MLOPS_HOME"] = str(home)
    os.environ["MLOPS_ENV"] = "dev"
    for name in ("MLOPS_DROP_ZONE", "MLOPS_CONTRACT", "MLOPS_CONF_DIR"):
        os.environ.pop(name, None)
    from mlops_core.settings import load_settings

    settings = load_settings("dev")
    settings.dataset.drop_zone.mkdir(parents=True, exist_ok=True)
    return settings


def child_ingest(csv_path: str, home: str) -> dict[str, Any]:
    import pyarrow.csv
    import pyarrow.parquet  # noqa: F401

    import mlops_core.datasets
    import mlops_core.validation  # noqa: F401
    from mlops_core.backends import backends_for
    from mlops_core.stages.ingest import ingest_files

    settings = _settings(Path(home))
    if os.environ.get(BATCH_MB_ENV):
        from mlops_core.settings import with_overrides

        settings = with_overrides(settings, dataset={"ingest_batch_mb": int(os.environ[BATCH_MB_ENV])})
    target = settings.dataset.drop_zone / "churn_big.csv"
    os.link(csv_path, target) if Path(csv_path).stat().st_dev == target.parent.stat().st_dev else shutil.copy(
        csv_path, target
    )
    size = Path(csv_path).stat().st_size
    batch_bytes = settings.dataset.ingest_batch_mb * 1024 * 1024
    before = _rss_bytes()
    t0, c0 = time.perf_counter(), _cpu()
    report = ingest_files(
        settings, [str(target)], backends_for(settings), run_id="bench", ingested_at=AT, max_file_bytes=2 * size + 1
    )
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    if report["rejected_rows"] or report["files_quarantined"]:
        raise SystemExit(f"bench data was not all valid: {json.dumps(report)[:500]}")
    return {
        "seconds": seconds,
        "cpu": cpu,
        "rows": report["rows"],
        "rss_before": before,
        "peak": _peak_bytes(),
        "batch_bytes": batch_bytes,
    }


def child_batch(csv_path: str, batch_mb: str) -> dict[str, Any]:
    """One batch's data, in a process of its own (reading it must not pre-grow the measured run's heap)."""
    return {"batch_data_bytes": _first_batch_bytes(Path(csv_path), int(batch_mb) * 1024 * 1024)}


def _first_batch_bytes(path: Path, batch_bytes: int) -> int:
    """In-memory (Arrow) size of the first batch of parsed text that ingest reads from ``path``."""
    import pandas as pd
    import pyarrow as pa

    from mlops_core.validation import read_source

    frames = read_source(path, path.name, max_decoded_bytes=2 * path.stat().st_size + 1, batch_bytes=batch_bytes)
    frame = next(f for f in frames if isinstance(f, pd.DataFrame))
    total = pa.Table.from_pandas(frame, preserve_index=False).nbytes  # the text columns are Arrow already: no copy
    del frame, frames
    return int(total)


HISTORY_DAYS = 7  # new days timed at each history size (a day takes ~40 ms: a median of 3 was noisy)


def child_history(home: str, points: list[int], rows: int) -> dict[str, Any]:
    from mlops_core.backends import backends_for
    from mlops_core.demo_data import write_day_files
    from mlops_core.stages.ingest import ingest_files

    settings = _settings(Path(home))
    drop = settings.dataset.drop_zone
    timings: dict[str, list[float]] = {}
    day = 0

    def ingest_day(d: int) -> float:
        path = write_day_files(drop, [d], rows=rows)[0]
        t0 = time.perf_counter()
        report = ingest_files(settings, [str(path)], backends_for(settings), run_id=f"day-{d}", ingested_at=AT)
        seconds = time.perf_counter() - t0
        if not report["created"]:
            raise SystemExit(f"day {d} created no version: {report}")
        return seconds

    for point in points:
        while day < point:  # history up to `point` versions
            ingest_day(day)
            day += 1
        timings[str(point)] = []
        for _ in range(HISTORY_DAYS):  # new days with `point`, `point + 1`, ... versions stored
            timings[str(point)].append(ingest_day(day))
            day += 1
    return {"timings": timings}


def run_child(kind: str, *args: str) -> dict[str, Any]:
    """One measured run in its own process; its peak memory delta is ``VmHWM`` minus RSS before the work."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, *args]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} child failed with code {proc.returncode}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if "rss_before" in result:
        result["peak_delta"] = result["peak"] - result["rss_before"]
    return result


# --------------------------------------------------------------------------- table
def _row(case: str, value: float, unit: str, floor: float | None, goal: str, ok: bool | None) -> dict[str, Any]:
    return make_row(BENCH, case, value, unit, floor, goal, ok)


def measure(quick: bool, work: Path, big_rows: int | None = None, only: str | None = None) -> list[dict[str, Any]]:
    small_n, big_n = (100_000, 1_000_000) if quick else (1_000_000, 10_000_000)
    big_n = big_rows or big_n
    points = [5, 10, 30] if quick else [10, 40, 120]
    if only == "history":
        return measure_history(work, points)
    mb = 1024 * 1024
    small = write_big_csv(work / f"rows-{small_n}.csv", small_n)
    label = f"{small_n // 1000}k" if small_n < 1_000_000 else f"{small_n // 1_000_000}M"
    rows: list[dict[str, Any]] = []

    def ours_run(i: int) -> dict[str, Any]:
        home = work / f"home-small-{i}"
        try:
            return run_child("ingest", str(small), str(home))
        finally:
            shutil.rmtree(home, ignore_errors=True)

    runs = side_by_side({"floor": lambda _i: run_child("floor", str(small), str(work)), "ours": ours_run})
    floors, ours = runs["floor"], runs["ours"]
    floor_s, ours_s = median_of(floors, "seconds"), median_of(ours, "seconds")
    floor_mem, ours_mem = median_of(floors, "peak_delta") / mb, median_of(ours, "peak_delta") / mb
    rows.append(
        _row(
            f"ingest {label} valid rows ({small.stat().st_size / mb:.0f} MB CSV): seconds",
            ours_s,
            "s",
            floor_s,
            "<= 5x floor",
            ours_s <= 5 * floor_s,
        )
    )
    rows.append(_row(f"ingest {label} valid rows: rows/s", small_n / ours_s, "rows/s", small_n / floor_s, "-", None))
    floor_cpu, ours_cpu = median_of(floors, "cpu"), median_of(ours, "cpu")
    rows.append(_row(f"ingest {label} valid rows: CPU seconds (all threads)", ours_cpu, "s", floor_cpu, "-", None))
    rows.append(_row(f"ingest {label} valid rows: peak memory delta", ours_mem, "MB", floor_mem, "-", None))
    if only == "big":
        return rows

    big = write_big_csv(work / f"rows-{big_n}.csv", big_n)
    big_label = f"{big_n / 1_000_000:g}M"
    home = work / "home-big"
    big_run = run_child("ingest", str(big), str(home))
    shutil.rmtree(home, ignore_errors=True)
    big_mem = big_run["peak_delta"] / mb
    batch_mb = run_child("batch", str(big), str(big_run["batch_bytes"] // mb))["batch_data_bytes"] / mb
    rows.append(
        _row(
            f"ingest {big_label} rows ({big.stat().st_size / mb:.0f} MB): peak memory delta vs {label}",
            big_mem,
            "MB",
            ours_mem,
            "<= 1.2x",
            big_mem <= 1.2 * ours_mem,
        )
    )
    rows.append(
        _row(
            f"ingest {big_label} rows: peak memory delta vs one batch's data ({batch_mb:.0f} MB, Arrow)",
            big_mem,
            "MB",
            batch_mb,
            "<= 3x",
            big_mem <= 3 * batch_mb,
        )
    )
    rows.append(_row(f"ingest {big_label} rows: seconds", big_run["seconds"], "s", None, "-", None))
    return rows + measure_history(work, points)


def measure_history(work: Path, points: list[int]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    shutil.rmtree(work / "home-history", ignore_errors=True)  # a fresh store (a kept --work folder)
    history = run_child("history", str(work / "home-history"), ",".join(map(str, points)), "1000")["timings"]
    medians = {int(k): statistics.median(v) for k, v in history.items()}
    first = medians[points[0]]
    for point in points:
        last = point == points[-1]
        rows.append(
            _row(
                f"ingest one 1,000-row day with {point} versions stored",
                medians[point],
                "s",
                first,
                f"{points[-1]}/{points[0]} <= 1.3" if last else "-",
                (medians[point] <= 1.3 * first) if last else None,
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="sizes scaled down: 100k / 1M rows, 5 / 10 / 30 versions")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    ap.add_argument("--work", type=Path, help="folder for the generated files (kept; default: a temporary one)")
    ap.add_argument("--big-rows", type=int, help="rows of the big file (default 10M, --quick 1M)")
    ap.add_argument(
        "--only",
        choices=["big", "history"],
        help="run only this case (big: the 1M-row file (--quick: 100k) against the floor; history: cost by "
        "versions stored)",
    )
    ap.add_argument(
        "--batch-mb", type=int, help="dataset.ingest_batch_mb of the measured ingest runs (default: the settings')"
    )
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        if kind == "floor":
            result = child_floor(*rest)
        elif kind == "ingest":
            result = child_ingest(*rest)
        elif kind == "batch":
            result = child_batch(*rest)
        else:
            result = child_history(rest[0], [int(p) for p in rest[1].split(",")], int(rest[2]))
        print(json.dumps(result))
        return 0
    if args.batch_mb:
        os.environ[BATCH_MB_ENV] = str(args.batch_mb)  # the children inherit it
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        rows = measure(args.quick, args.work, args.big_rows, args.only)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
            rows = measure(args.quick, Path(tmp), args.big_rows, args.only)
    print_table("Ingest benchmark (floor: pyarrow read_csv + write_table; history: the first point)", rows, 78)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
