"""bench/run_all.py: runs each benchmark script in a real subprocess and tabulates its JSON rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUN_ALL = REPO / "bench" / "run_all.py"

FAKE_BENCH = """
import argparse, json, sys

ap = argparse.ArgumentParser()
ap.add_argument("--json")
ap.add_argument("--quick", action="store_true")
args = ap.parse_args()
print("== fake benchmark table ==")
rows = [
    {"benchmark": "fake", "case": "quick" if args.quick else "full", "value": 2.5, "unit": "s",
     "floor": 0.5, "ratio": 5.0, "goal": "<= 6x", "ok": True},
    {"benchmark": "fake", "case": "flat in history", "value": 1.9, "unit": "x",
     "floor": None, "ratio": None, "goal": "<= 1.3", "ok": OK_FLAT},
    {"benchmark": "fake", "case": "report only", "value": 12345.0, "unit": "rows/s",
     "floor": None, "ratio": None, "goal": None, "ok": None},
]
with open(args.json, "w") as fh:
    json.dump(rows, fh)
"""


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUN_ALL), *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def _table(stdout: str) -> list[str]:
    return stdout.split("== All benchmarks")[1].splitlines()


def test_rows_of_every_script_in_one_table_and_a_missed_goal_fails(tmp_path):
    fake = tmp_path / "bench_fake.py"
    fake.write_text(FAKE_BENCH.replace("OK_FLAT", "False"))
    missing = tmp_path / "bench_not_written_yet.py"

    proc = _run("--quick", fake, missing)

    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "== fake benchmark table ==" in proc.stdout  # the script's own table is shown as it runs
    table = _table(proc.stdout)
    header = next(line for line in table if line.startswith("benchmark"))
    assert header.split() == ["benchmark", "case", "value", "unit", "floor", "ratio", "goal", "ok"]
    quick = next(line for line in table if " quick " in line)  # --quick reached the script
    assert quick.split() == ["fake", "quick", "2.5", "s", "0.5", "5x", "<=", "6x", "ok"]
    flat = next(line for line in table if "flat in history" in line)
    assert flat.split()[-1] == "MISSED" and "<= 1.3" in flat
    report = next(line for line in table if "report only" in line)
    assert "12,345" in report and report.split()[-1] == "-"
    absent = next(line for line in table if line.startswith("bench_not_written_yet"))
    assert absent.split()[-2:] == ["not", "present"]
    missed = proc.stdout.split("Goals missed or benchmarks failed:")[1]
    assert "fake: flat in history missed its goal <= 1.3" in missed
    assert "not_written_yet" not in missed  # a script not written yet is no failure


def test_every_goal_met_exits_zero_and_a_crashing_script_fails(tmp_path):
    fake = tmp_path / "bench_fake.py"
    fake.write_text(FAKE_BENCH.replace("OK_FLAT", "True"))
    ok = _run(fake)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert any(" full " in line for line in _table(ok.stdout))  # no --quick without the flag
    assert "Every goal met." in ok.stdout

    crash = tmp_path / "bench_crash.py"
    crash.write_text("raise SystemExit(3)\n")
    failed = _run(fake, crash)
    assert failed.returncode == 1
    line = next(line for line in _table(failed.stdout) if line.startswith("bench_crash"))
    assert line.split()[-1] == "FAILED"
    assert "bench_crash.py exited with code 3" in failed.stdout.split("Goals missed or benchmarks failed:")[1]
