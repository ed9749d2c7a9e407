"""DAG parse cost, the way Airflow 3's dag-processor pays it, against a trivial DAG file.

Each DAG file is parsed in N fresh interpreters (``mlops_demo.parse_probe``): the dag-processor's
own modules and the file's ``airflow.*`` imports are loaded first, then the file is executed and
timed. The baseline is a trivial DAG file (one ``@task``) measured the same way in the same run,
so the ratio column is meaningful on a noisy shared machine.

    .venv/bin/python bench/parse_times.py [--runs 3] [--quick] [--json rows.json]

Goal per file (the parse guard's limits): under 0.5 s and no heavy library imported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PARSE_LIMIT_SECONDS = 0.5  # tests/dags/test_parse_guard.py
TRIVIAL = """
import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"))
def trivial():
    @task
    def hello():
        return 1

    hello()


trivial()
"""


def probe(path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "mlops_demo.parse_probe", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=None, help="fresh interpreters per file (default 3; --quick 1)")
    ap.add_argument("--quick", action="store_true", help="one run per file")
    ap.add_argument("--json", type=Path, help="write the result rows here")
    args = ap.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory() as tmp:
        trivial = Path(tmp) / "trivial.py"
        trivial.write_text(TRIVIAL)
        files = [trivial, *sorted((REPO / "dags").glob("*.py"))]
        rows = []
        for path in files:
            results = [probe(path) for _ in range(runs)]
            median = statistics.median(r["parse_seconds"] for r in results)
            rows.append((path.name, median, results[0]["modules_imported_per_parse"], results[0]["heavy_modules"]))
    base = rows[0][1]
    print(f"== DAG parse time against a trivial DAG file (median of {runs}) ==")
    print(f"{'DAG file':<24} {'parse s (median)':>17} {'x trivial':>10} {'modules/parse':>14}  heavy")
    for name, median, mods, heavy in rows:
        print(f"{name:<24} {median:>17.4f} {median / base:>10.1f} {mods:>14}  {','.join(heavy) or '-'}")
    if args.json:
        out: list[dict[str, Any]] = [
            {
                "benchmark": "dag_parse",
                "case": name,
                "value": round(median, 4),
                "unit": "s",
                "floor": round(base, 4),
                "ratio": round(median / base, 2) if base else None,
                "goal": f"< {PARSE_LIMIT_SECONDS} s, no heavy import",
                "ok": median < PARSE_LIMIT_SECONDS and not heavy,
            }
            for name, median, _mods, heavy in rows[1:]
        ]
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
