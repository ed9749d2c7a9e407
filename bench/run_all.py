"""``make bench``: run every benchmark, then print one table of all their rows and the goals missed.

Each benchmark script runs in its own process with ``--json <file>`` (and ``--quick`` for
``make bench QUICK=1``); its own table goes to the terminal as it runs, its rows
(``{"benchmark", "case", "value", "unit", "floor", "ratio", "goal", "ok"}``) are collected. A script
that does not exist (yet) is listed as "not present"; a script that fails, or writes no rows, is a
failure. Exit code 1 when a goal is missed or a script failed, naming which.

    .venv/bin/python bench/run_all.py [--quick] [script.py ...]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
SCRIPTS = (
    "parse_times.py",
    "bench_lifecycle.py",
    "bench_ingest.py",
    "bench_training_set.py",
    "bench_materialize.py",
    "bench_s3_ingest.py",
    "bench_drift.py",
    "bench_watchers.py",
)
ROW_KEYS = ("benchmark", "case", "value", "unit", "floor", "ratio", "goal", "ok")


def run_script(script: Path, quick: bool) -> tuple[list[dict[str, Any]], str | None, float]:
    """Run one benchmark; return its rows, the reason it failed (None if it did not), and seconds."""
    with tempfile.TemporaryDirectory(prefix="bench-rows-") as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [sys.executable, str(script), "--json", str(out), *(["--quick"] if quick else [])]
        print(f"\n### {script.name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=BENCH.parent, check=False)
        seconds = time.monotonic() - t0
        if proc.returncode != 0:
            return [], f"exited with code {proc.returncode}", seconds
        if not out.exists():
            return [], "wrote no --json rows", seconds
        try:
            rows = json.loads(out.read_text())
        except ValueError as exc:
            return [], f"wrote rows that are not JSON ({exc})", seconds
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        return [], "wrote rows that are not a list of objects", seconds
    if not rows:
        return [], "wrote an empty list of rows", seconds
    bad = [r for r in rows if set(ROW_KEYS) - set(r)]
    if bad:
        return [], f"rows miss keys {sorted(set(ROW_KEYS) - set(bad[0]))}", seconds
    return rows, None, seconds


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"


def _ok(value: Any) -> str:
    return {True: "ok", False: "MISSED", None: "-"}.get(value, str(value))


def format_table(results: list[tuple[str, list[dict[str, Any]], str | None]]) -> list[str]:
    """One table of every row; a script not present or failed gets one line saying so."""
    header = ("benchmark", "case", "value", "unit", "floor", "ratio", "goal", "ok")
    lines: list[tuple[str, ...]] = []
    for name, rows, status in results:
        if status is not None:
            lines.append((name, status, "", "", "", "", "", "not present" if status == "not present" else "FAILED"))
            continue
        for r in rows:
            ratio = r.get("ratio")
            lines.append(
                (
                    str(r["benchmark"]),
                    str(r["case"]),
                    _number(r["value"]),
                    str(r.get("unit") or ""),
                    _number(r.get("floor")),
                    "-" if ratio is None else f"{_number(ratio)}x",
                    str(r.get("goal") or "-"),
                    _ok(r.get("ok")),
                )
            )
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    numeric = {2, 4, 5}
    out = []
    for line in (header, tuple("-" * w for w in widths), *lines):
        cells = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        out.append("  ".join(cells).rstrip())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="pass --quick to every benchmark (smaller sizes)")
    ap.add_argument("scripts", nargs="*", type=Path, help="benchmark scripts to run (default: all of bench/)")
    args = ap.parse_args(argv)
    scripts = args.scripts or [BENCH / name for name in SCRIPTS]
    results: list[tuple[str, list[dict[str, Any]], str | None]] = []
    failures: list[str] = []
    for script in scripts:
        name = script.stem
        if not script.is_file():
            results.append((name, [], "not present"))
            continue
        rows, failed, seconds = run_script(script, args.quick)
        print(f"### {script.name}: {'FAILED, ' + failed if failed else 'done'} in {seconds:.0f} s", flush=True)
        results.append((name, rows, failed))
        if failed:
            failures.append(f"{script.name} {failed}")
        failures += [f"{r['benchmark']}: {r['case']} missed its goal {r.get('goal')}" for r in rows if r["ok"] is False]
    print(f"\n== All benchmarks{' (quick)' if args.quick else ''} ==")
    print("\n".join(format_table(results)))
    if failures:
        print("\nGoals missed or benchmarks failed:")
        for failure in failures:
            print(f"  {failure}")
        return 1
    print("\nEvery goal met.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
