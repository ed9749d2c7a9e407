"""Shared helpers of the ingest benchmarks: table rows, the Markdown table, side-by-side runs.

Imports nothing of the project (``bench_ingest.py`` re-runs itself as child processes that must
measure their own imports), nor anything heavy.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

RUNS = 3  # measured runs of each side; the median counts


def make_row(
    benchmark: str,
    case: str,
    value: float,
    unit: str,
    floor: float | None,
    goal: str | None,
    ok: bool | None,
    *,
    digits: int | None = None,
) -> dict[str, Any]:
    """One row of a benchmark's table (the keys ``run_all.py`` collects); ratio = value / floor.

    ``digits``: value and floor rounded to that many decimals (the ratio to 2), for tables that print them raw.
    """
    ratio = None if floor in (None, 0) else value / float(floor)  # type: ignore[arg-type]
    if digits is not None:
        value = round(value, digits)
        floor = None if floor is None else round(floor, digits)
        ratio = None if ratio is None else round(ratio, 2)
    return {
        "benchmark": benchmark,
        "case": case,
        "value": value,
        "unit": unit,
        "floor": floor,
        "ratio": ratio,
        "goal": goal,
        "ok": ok,
    }


def _num(v: Any) -> str:
    return "-" if v is None else (f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}")


def print_table(title: str, rows: list[dict[str, Any]], case_width: int = 70) -> None:
    """``rows`` as a Markdown table under ``## title``."""
    print(f"\n## {title}\n")
    print(f"| {'case':<{case_width}} | {'value':>12} | {'unit':<6} | {'floor':>12} | ", end="")
    print(f"{'ratio':>6} | {'goal':<18} | ok |")
    print(f"|{'-' * (case_width + 2)}|{'-' * 14}|{'-' * 8}|{'-' * 14}|{'-' * 8}|{'-' * 20}|----|")
    for r in rows:
        ok = {True: "ok", False: "MISSED", None: "-"}[r["ok"]]
        print(
            f"| {r['case']:<{case_width}} | {_num(r['value']):>12} | {r['unit']:<6} | {_num(r['floor']):>12} | "
            f"{_num(r['ratio']):>6} | {r['goal']:<18} | {ok} |"
        )


def side_by_side(sides: dict[str, Callable[[int], Any]], runs: int = RUNS) -> dict[str, list[Any]]:
    """Run every side ``runs`` times, alternating (side A run 0, side B run 0, side A run 1, ...), so
    that the load of a shared machine falls on all sides alike; each side gets the run's index."""
    results: dict[str, list[Any]] = {name: [] for name in sides}
    for i in range(runs):
        for name, fn in sides.items():
            results[name].append(fn(i))
    return results


def median_of(results: list[Any], key: str | None = None) -> float:
    """Median of ``results`` (numbers, or dicts read at ``key``)."""
    return float(statistics.median(results if key is None else [r[key] for r in results]))
