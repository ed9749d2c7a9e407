"""The drift decision at production size: streamed against the reference profile, against Evidently and numpy PSI.

Cases (each measured run is a child process of its own, so its peak memory is its own: the child
resets its peak RSS (``/proc/self/clear_refs``) just before the measured work and reports
``VmHWM`` minus its RSS at that point; CPU seconds are user + system of the child):

* **Speed, 1M rows x 20 numeric columns** (``--quick``: 100k): the current rows are a Parquet
  file written in row groups of 262,144 rows (as the dataset store flushes partitions); the
  reference is 1M other rows of the same 20 columns.
  - ours: :func:`mlops_core.drift.detect_drift_streaming` against the reference profile (20
    quantile bins per column, made beforehand as at training time), reading the file in
    batches of ``monitoring.drift_batch_rows``, with the report sample of
    ``monitoring.report_sample_rows`` rows kept on the way, as the monitor does;
  - Evidently: ``Report([DataDriftPreset()])`` on the whole current file against the 20,000-row
    reference sample the monitor keeps (``monitoring.reference_rows``): what the monitor ran on
    every row before; goal: ours >= 20x faster (CPU seconds);
  - floor: numpy PSI over 10 quantile bins of the reference (edges computed beforehand):
    ``pyarrow.parquet.read_table`` of the 20 columns (single-threaded, as ours reads: reader
    threads only add CPU time on 2 cores), then ``searchsorted`` + ``bincount`` per column, all
    rows in memory; goal: ours <= 2x the floor (CPU seconds).
* **Memory flat in rows**: ours at 1M and at 10M rows (``--quick``: 100k and 1M); goal: peak
  memory delta < 300 MB at each size.
* **Verdict agreement with Evidently** on a scenario suite (12 numeric and 4 categorical
  columns, 50,000 reference and 50,000 current rows, ``--quick``: 10,000): no drift, small and
  large mean shift, variance change, category mix change, a new category, rising missing rate,
  drift in one column only, a mild shift, and shifts just under and over Evidently's threshold. Evidently's per-column
  verdicts come from :func:`mlops_core.drift.detect_drift` (its default methods: normed
  Wasserstein for numeric columns, Jensen-Shannon for categories and few-valued columns,
  threshold 0.1); ours from the profile of the same reference rows. Goal: >= 95% of the column
  verdicts agree; every disagreement is printed with its explanation.

    .venv/bin/python bench/bench_drift.py [--quick] [--only speed|memory|agreement] [--json rows.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import make_row
from bench_ingest import _cpu, _peak_bytes, _rss_bytes

BENCH = "drift"
COLUMNS = [f"x{i:02d}" for i in range(20)]
ROW_GROUP = 262_144
REFERENCE_SAMPLE = 20_000  # monitoring.reference_rows: what Evidently compares with in the monitor
MB = 1024 * 1024


# --------------------------------------------------------------------------- data
def _numeric_block(rng: Any, rows: int, drifted: bool) -> dict[str, Any]:
    """20 numeric columns of assorted shapes; ``drifted`` moves a quarter of them."""
    out = {}
    for i, name in enumerate(COLUMNS):
        kind = i % 4
        shift = 0.3 if drifted and i % 4 == 0 else 0.0
        if kind == 0:
            out[name] = rng.normal(10.0 * i + shift * 5.0, 5.0, rows)
        elif kind == 1:
            out[name] = rng.lognormal(1.0, 0.5, rows)
        elif kind == 2:
            out[name] = rng.gamma(2.0, 3.0, rows)
        else:
            out[name] = rng.uniform(-1.0, 1.0, rows) * (i + 1)
    return out


def write_numeric(path: Path, rows: int, seed: int, drifted: bool) -> Path:
    """``rows`` rows of the 20 numeric columns, written chunk by chunk (memory of one row group)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, pa.schema([(c, pa.float64()) for c in COLUMNS])) as writer:
        left = rows
        while left > 0:
            n = min(left, ROW_GROUP)
            writer.write_table(pa.table(_numeric_block(rng, n, drifted)))
            left -= n
    tmp.rename(path)
    return path


def numeric_contract() -> Any:
    from mlops_core.contract import DatasetContract

    return DatasetContract.from_dict(
        {
            "name": "bench_numeric",
            "task": "regression",
            "target": "y",
            "columns": [{"name": c, "type": "float"} for c in COLUMNS] + [{"name": "y", "type": "float"}],
        }
    )


def prepare(work: Path, rows: int) -> dict[str, str]:
    """The reference file, its profile, its 20k sample and PSI edges; the current file of ``rows`` rows."""
    import numpy as np
    import pyarrow.parquet as pq

    from mlops_core.drift_profile import build_profile

    reference = write_numeric(work / "reference.parquet", 1_000_000, seed=1, drifted=False)
    current = write_numeric(work / f"current-{rows}.parquet", rows, seed=2, drifted=True)
    profile_path, sample_path, edges_path = (
        work / "profile.json",
        work / "reference-sample.parquet",
        work / "edges.json",
    )
    if not profile_path.exists():
        table = pq.read_table(reference)
        profile_path.write_bytes(build_profile(table, "bench_numeric", COLUMNS, [], bins=20).to_json())
        rng = np.random.default_rng(0)
        pq.write_table(table.take(np.sort(rng.choice(table.num_rows, REFERENCE_SAMPLE, replace=False))), sample_path)
        edges = {c: np.quantile(table.column(c).to_numpy(), np.linspace(0, 1, 11)[1:-1]).tolist() for c in COLUMNS}
        shares = {}
        for c in COLUMNS:
            counts = np.bincount(np.searchsorted(edges[c], table.column(c).to_numpy()), minlength=10)
            shares[c] = (counts / counts.sum()).tolist()
        edges_path.write_text(json.dumps({"edges": edges, "shares": shares}))
    return {
        "reference": str(reference),
        "current": str(current),
        "profile": str(profile_path),
        "sample": str(sample_path),
        "edges": str(edges_path),
    }


# --------------------------------------------------------------------------- children
def child_ours(current: str, profile_path: str) -> dict[str, Any]:
    import numpy  # noqa: F401  (libraries loaded before the measurement, as in a worker that runs the task)
    import pandas  # noqa: F401
    import pyarrow.compute
    import pyarrow.parquet  # noqa: F401

    import mlops_core.drift_profile  # noqa: F401
    from mlops_core.datasets import parquet_batches
    from mlops_core.drift import detect_drift_streaming
    from mlops_core.drift_profile import ProfileThresholds, ReferenceProfile
    from mlops_core.settings import MonitoringSettings

    m = MonitoringSettings()
    contract = numeric_contract()
    before = _rss_bytes()
    t0, c0 = time.perf_counter(), _cpu()
    profile = ReferenceProfile.from_json(Path(profile_path).read_bytes())
    result, sample = detect_drift_streaming(
        profile,
        parquet_batches(current, COLUMNS, m.drift_batch_rows),  # what DatasetStore.iter_batches reads with
        contract,
        ProfileThresholds(),
        sample_rows=m.report_sample_rows,
    )
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    return {
        "seconds": seconds,
        "cpu": cpu,
        "peak": _peak_bytes() - before,
        "rows": result.current_rows,
        "drifted_columns": result.drifted_columns,
        "sample_rows": 0 if sample is None else len(sample),
    }


def child_evidently(current: str, sample: str) -> dict[str, Any]:
    import pyarrow.parquet as pq
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    before = _rss_bytes()
    t0, c0 = time.perf_counter(), _cpu()
    cur = pq.read_table(current).to_pandas()
    ref = pq.read_table(sample).to_pandas()
    definition = DataDefinition(numerical_columns=COLUMNS)
    snapshot = Report([DataDriftPreset(columns=COLUMNS)]).run(
        current_data=Dataset.from_pandas(cur, data_definition=definition),
        reference_data=Dataset.from_pandas(ref, data_definition=definition),
    )
    payload = json.loads(snapshot.json())
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    return {"seconds": seconds, "cpu": cpu, "peak": _peak_bytes() - before, "metrics": len(payload["metrics"])}


def child_floor(current: str, edges_path: str) -> dict[str, Any]:
    import numpy as np
    import pyarrow.parquet as pq

    given = json.loads(Path(edges_path).read_text())
    edges = {c: np.asarray(v) for c, v in given["edges"].items()}
    shares = {c: np.maximum(np.asarray(v), 1e-4) for c, v in given["shares"].items()}
    before = _rss_bytes()
    t0, c0 = time.perf_counter(), _cpu()
    table = pq.read_table(current, columns=COLUMNS, use_threads=False)  # its lowest CPU time, as ours reads
    psi = {}
    for c in COLUMNS:
        counts = np.bincount(np.searchsorted(edges[c], table.column(c).to_numpy()), minlength=10)
        cur = np.maximum(counts / counts.sum(), 1e-4)
        psi[c] = float(((cur - shares[c]) * np.log(cur / shares[c])).sum())
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    return {"seconds": seconds, "cpu": cpu, "peak": _peak_bytes() - before, "psi_max": max(psi.values())}


def child_agreement(rows: str) -> dict[str, Any]:
    return {"scenarios": agreement_suite(int(rows))}


def run_child(kind: str, *args: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", kind, *args]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} child failed with code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- agreement suite
SUITE_NUMERIC = [f"n{i:02d}" for i in range(12)]
SUITE_CATEGORICAL = ["c_plan", "c_region", "c_device", "c_channel"]
CATEGORY_VALUES = {
    "c_plan": (["basic", "standard", "premium"], [0.5, 0.35, 0.15]),
    "c_region": (["north", "south", "east", "west", "central"], [0.3, 0.25, 0.2, 0.15, 0.1]),
    "c_device": (["ios", "android", "web"], [0.4, 0.4, 0.2]),
    "c_channel": (["organic", "paid", "referral", "partner"], [0.55, 0.25, 0.15, 0.05]),
}
SCENARIOS: dict[str, dict[str, Any]] = {
    "no drift": {},
    "small mean shift (0.03 sd, every numeric)": {"shift": 0.03},
    "large mean shift (0.5 sd, every numeric)": {"shift": 0.5},
    "variance change (x1.5, every numeric)": {"scale": 1.5},
    "category mix change (every categorical)": {"mix": True},
    "a new category (25% of c_region)": {"new_category": 0.25},
    "rising missing rate (0% -> 30% in n00..n03)": {"missing": 0.3},
    "drift in one column only (n06 +1 sd)": {"one": "n06"},
    "mild mean shift (0.2 sd, every numeric)": {"shift": 0.2},
    "mean shift just under the threshold (0.08 sd)": {"shift": 0.08},
    "mean shift just over the threshold (0.12 sd)": {"shift": 0.12},
}


def suite_frame(rows: int, seed: int, change: dict[str, Any]) -> Any:
    """12 numeric columns (normal, log-normal, gamma, uniform, counts, a flag) and 4 categorical ones."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    shift, scale = change.get("shift", 0.0), change.get("scale", 1.0)
    out: dict[str, Any] = {}
    for i, name in enumerate(SUITE_NUMERIC):
        kind = i % 6
        s = shift + (1.0 if change.get("one") == name else 0.0)
        if kind == 0:
            values = rng.normal(100.0 + 15.0 * s, 15.0 * scale, rows)
        elif kind == 1:
            base = rng.lognormal(2.0, 0.5, rows)
            values = (base - base.mean()) * scale + base.mean() + s * 3.7  # sd of lognormal(2, .5) ~ 3.7
        elif kind == 2:
            base = rng.gamma(2.0, 2.0, rows)
            values = (base - 4.0) * scale + 4.0 + s * 2.83
        elif kind == 3:
            values = rng.uniform(0.0, 10.0, rows) * scale + s * 2.89
        elif kind == 4:
            values = rng.poisson(5.0 + s * 2.24, rows).astype(float)
            values = np.round((values - 5.0) * scale + 5.0)
        else:
            values = (rng.random(rows) < 0.3 + 0.1 * s).astype(float)
        if change.get("missing") and i < 4:
            values[rng.random(rows) < change["missing"]] = np.nan
        out[name] = values
    for name in SUITE_CATEGORICAL:
        values, shares = CATEGORY_VALUES[name]
        p = np.asarray(shares[::-1] if change.get("mix") else shares)
        column = rng.choice(values, rows, p=p / p.sum()).astype(object)
        if change.get("new_category") and name == "c_region":
            column[rng.random(rows) < change["new_category"]] = "overseas"
        out[name] = column
    return pd.DataFrame(out)


def suite_contract() -> Any:
    from mlops_core.contract import DatasetContract

    columns = [{"name": c, "type": "float"} for c in SUITE_NUMERIC]
    columns += [{"name": c, "type": "category"} for c in SUITE_CATEGORICAL]
    return DatasetContract.from_dict(
        {
            "name": "bench_suite",
            "task": "regression",
            "target": "y",
            "columns": [*columns, {"name": "y", "type": "float"}],
        }
    )


def agreement_suite(rows: int) -> list[dict[str, Any]]:
    import pyarrow as pa

    from mlops_core.drift import DriftThresholds, detect_drift, detect_drift_streaming
    from mlops_core.drift_profile import ProfileThresholds, build_profile

    contract = suite_contract()
    reference = suite_frame(rows, seed=11, change={})
    profile = build_profile(reference, "bench_suite", SUITE_NUMERIC, SUITE_CATEGORICAL, bins=20, top_k=20)
    thresholds = ProfileThresholds()
    out = []
    for number, (name, change) in enumerate(SCENARIOS.items()):
        current = suite_frame(rows, seed=100 + number, change=change)
        table = pa.Table.from_pandas(current, preserve_index=False)
        ours, _ = detect_drift_streaming(profile, table.to_batches(8192), contract, thresholds)
        theirs, _ = detect_drift(reference, current, contract, DriftThresholds())
        columns = []
        for column in SUITE_NUMERIC + SUITE_CATEGORICAL:
            stats = ours.column_stats.get(column, {})
            columns.append(
                {
                    "column": column,
                    "ours": column in ours.drifted_columns,
                    "evidently": column in theirs.drifted_columns,
                    "our_method": ours.column_methods.get(column),
                    "our_score": ours.column_scores.get(column),
                    "their_method": theirs.column_methods.get(column),
                    "their_score": theirs.column_scores.get(column),
                    "missing_reference": stats.get("missing_rate_reference"),
                    "missing_current": stats.get("missing_rate_current"),
                }
            )
        out.append(
            {"scenario": name, "ours_drifted": ours.drifted, "evidently_drifted": theirs.drifted, "columns": columns}
        )
    return out


def explain(c: dict[str, Any], threshold: float = 0.1, missing_change: float = 0.1) -> str:
    """Why our verdict and Evidently's differ on one column."""
    ref_missing, cur_missing = c["missing_reference"] or 0.0, c["missing_current"] or 0.0
    if c["ours"] and abs(cur_missing - ref_missing) >= missing_change:
        return (
            f"missing rate {ref_missing:.0%} -> {cur_missing:.0%}: ours counts a change of >= {missing_change:.0%} "
            "as drift; Evidently drops missing values before its test, so the values left look the same to it"
        )
    ours, theirs = c["our_score"], c["their_score"]
    if ours is not None and theirs is not None and abs(ours - threshold) < 0.02 and abs(theirs - threshold) < 0.02:
        return (
            f"both near the threshold {threshold}: ours {c['our_method']} {ours:.4f} (binned, against the "
            f"profile), Evidently {c['their_method']} {theirs:.4f} (exact on the rows; its JS on numbers uses "
            "Sturges bins of both sides)"
        )
    return (
        f"ours {c['our_method']} {ours}, Evidently {c['their_method']} {theirs}: "
        "a different statistic or binning gives a different side of the threshold"
    )


# --------------------------------------------------------------------------- measuring
def _row(case: str, value: float, unit: str, floor: float | None, goal: str, ok: bool | None) -> dict[str, Any]:
    return make_row(BENCH, case, value, unit, floor, goal, ok, digits=4)


def measure_speed(work: Path, rows: int) -> list[dict[str, Any]]:
    files = prepare(work, rows)
    ours = run_child("ours", files["current"], files["profile"])
    floor = run_child("floor", files["current"], files["edges"])
    print(f"ours: {ours}\nfloor: {floor}", flush=True)
    evidently = run_child("evidently", files["current"], files["sample"])
    print(f"evidently: {evidently}", flush=True)
    size = f"{rows / 1e6:g}M rows x 20 numeric"
    return [
        _row(
            f"{size}: drift decision, CPU seconds (floor: numpy PSI, 10 bins)",
            ours["cpu"],
            "s",
            floor["cpu"],
            "<= 2x",
            ours["cpu"] <= 2 * floor["cpu"],
        ),
        _row(
            f"{size}: drift decision, wall seconds (floor: numpy PSI)",
            ours["seconds"],
            "s",
            floor["seconds"],
            None,
            None,
        ),
        _row(f"{size}: Evidently DataDriftPreset, CPU seconds", evidently["cpu"], "s", None, None, None),
        _row(
            f"{size}: Evidently CPU / ours",
            evidently["cpu"] / ours["cpu"],
            "x",
            None,
            ">= 20x",
            evidently["cpu"] >= 20 * ours["cpu"],
        ),
        _row(f"{size}: Evidently peak memory delta", evidently["peak"] / MB, "MB", None, None, None),
        _row(f"{size}: numpy PSI peak memory delta", floor["peak"] / MB, "MB", None, None, None),
    ]


def measure_memory(work: Path, sizes: list[int]) -> list[dict[str, Any]]:
    rows_out, peaks = [], []
    for rows in sizes:
        files = prepare(work, rows)
        ours = run_child("ours", files["current"], files["profile"])
        peaks.append(ours["peak"])
        print(f"ours at {rows:,} rows: {ours}", flush=True)
        rows_out.append(
            _row(
                f"{rows / 1e6:g}M rows x 20 numeric: drift decision peak memory delta",
                ours["peak"] / MB,
                "MB",
                None,
                "< 300 MB",
                ours["peak"] < 300 * MB,
            )
        )
        rows_out.append(
            _row(f"{rows / 1e6:g}M rows x 20 numeric: drift decision CPU seconds", ours["cpu"], "s", None, None, None)
        )
    rows_out.append(
        _row(
            f"peak memory {sizes[-1] / 1e6:g}M / {sizes[0] / 1e6:g}M rows",
            peaks[-1] / max(peaks[0], 1),
            "x",
            None,
            None,
            None,
        )
    )
    return rows_out


def measure_agreement(rows: int) -> list[dict[str, Any]]:
    scenarios = run_child("agreement", str(rows))["scenarios"]
    total = agree = 0
    print(f"\n## Verdict agreement with Evidently ({rows:,} reference and {rows:,} current rows per scenario)\n")
    print(f"| {'scenario':<46} | ours drifted | Evidently drifted | columns agreeing |")
    print(f"|{'-' * 48}|--------------|-------------------|------------------|")
    disagreements = []
    for s in scenarios:
        same = sum(c["ours"] == c["evidently"] for c in s["columns"])
        total += len(s["columns"])
        agree += same
        ours = sorted(c["column"] for c in s["columns"] if c["ours"])
        theirs = sorted(c["column"] for c in s["columns"] if c["evidently"])
        print(f"| {s['scenario']:<46} | {len(ours):>12} | {len(theirs):>17} | {same:>7} of {len(s['columns']):<6} |")
        disagreements += [(s["scenario"], c) for c in s["columns"] if c["ours"] != c["evidently"]]
    print(f"\n{len(disagreements)} disagreement(s):" if disagreements else "\nNo disagreement.")
    for scenario, c in disagreements:
        side = "ours drifted, Evidently not" if c["ours"] else "Evidently drifted, ours not"
        print(f"- {scenario} / {c['column']}: {side}: {explain(c)}")
    share = agree / total
    return [
        _row(
            f"verdict agreement with Evidently, {len(scenarios)} scenarios x 16 columns",
            share * 100,
            "%",
            None,
            ">= 95%",
            share >= 0.95,
        )
    ]


def print_table(rows: list[dict[str, Any]]) -> None:
    print("\n## Drift benchmark (floor: numpy PSI over 10 quantile bins, reading the same Parquet file)\n")
    print(f"| {'case':<72} | {'value':>10} | {'unit':<4} | {'floor':>8} | {'ratio':>6} | {'goal':<9} | ok |")
    print(f"|{'-' * 74}|{'-' * 12}|{'-' * 6}|{'-' * 10}|{'-' * 8}|{'-' * 11}|----|")

    def num(v: Any) -> str:
        return "-" if v is None else (f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}")

    for r in rows:
        ok = {True: "ok", False: "MISSED", None: "-"}[r["ok"]]
        print(
            f"| {r['case']:<72} | {num(r['value']):>10} | {r['unit']:<4} | {num(r['floor']):>8} | "
            f"{num(r['ratio']):>6} | {r['goal'] or '-':<9} | {ok} |"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument(
        "--quick", action="store_true", help="sizes scaled down: 100k rows (speed), 100k / 1M (memory), 10k (agreement)"
    )
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    ap.add_argument("--work", type=Path, help="folder for the generated files (kept; default: a temporary one)")
    ap.add_argument("--only", choices=["speed", "memory", "agreement"], help="run only this case")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        children = {
            "ours": child_ours,
            "evidently": child_evidently,
            "floor": child_floor,
            "agreement": child_agreement,
        }
        print(json.dumps(children[kind](*rest)))
        return 0
    speed_rows = 100_000 if args.quick else 1_000_000
    memory_sizes = [100_000, 1_000_000] if args.quick else [1_000_000, 10_000_000]
    suite_rows = 10_000 if args.quick else 50_000

    def run(work: Path) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        if args.only in (None, "speed"):
            rows += measure_speed(work, speed_rows)
        if args.only in (None, "memory"):
            rows += measure_memory(work, memory_sizes)
        if args.only in (None, "agreement"):
            rows += measure_agreement(suite_rows)
        return rows

    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        rows = run(args.work)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
            rows = run(Path(tmp))
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
