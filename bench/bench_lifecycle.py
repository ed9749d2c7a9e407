"""The demo's first lifecycle pass through Airflow, against the same stage chain without Airflow.

Floor: the stage functions of ``mlops_core.stages`` chained in one fresh process per stage
(ingest -> features -> monitor -> train -> evaluate_register -> deploy), on the demo's data
(three 1,000-row days and two bad files, seed 7), each process timed from spawn to exit, so it pays
its own interpreter start and imports once per stage.

Measured: the demo's ``initial`` phase (``mlops_demo.run.LifecycleDemo``, real scheduler,
dag-processor, triggerer and api-server on a temporary home), the same files and stages. Per stage,
read back from the REST API: the DAG run's wall time (queued to end), the time its tasks ran
(task instance start to end, overlapping tasks counted once), the rest of the run (task start
overhead: queueing, process start, the hops between tasks), and the idle gap between the upstream
run's asset event and this run being queued. The stack's CPU while nothing is scheduled is sampled
afterwards (a shorter scheduler loop must not become a busy loop on 2 cores).

    .venv/bin/python bench/bench_lifecycle.py [--runs 1] [--quick] [--json rows.json]
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
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "features", "monitor", "train", "evaluate_register", "deploy")
BENCHMARK = "lifecycle"
# The goal: what Airflow adds on top of the stage chain is no more than this many times the chain.
GOAL_RATIO = 1.5
# Task processes repeat no work of the in-process chain (imports, settings, contract): their CPU
# stays within this factor of the chain's. And the stack idles without a busy loop.
GOAL_TASK_CPU_RATIO = 1.25
GOAL_IDLE_CPU_PERCENT = 15.0


# ---------------------------------------------------------------------------- one stage (child)
def _run_stage(stage: str, state_file: Path) -> None:
    """One stage of the chain, as the stage's DAG tasks call it (child process mode)."""
    from mlops_core.settings import load_settings

    state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.exists() else {}
    settings = load_settings("dev")
    from mlops_core.backends import backends_for

    backends = backends_for(settings)  # built once, as a task does
    stamp = datetime.now(UTC).isoformat()
    if stage == "ingest":
        from mlops_core.dropzone import scan_drop_zone
        from mlops_core.stages.ingest import ingest_files

        ready = [f.path for f in scan_drop_zone(settings.dataset.drop_zone, settings.dataset.file_patterns)]
        report = ingest_files(settings, ready, backends, run_id="bench-ingest", ingested_at=stamp)
        state["version_id"] = report["version_id"]
    elif stage == "features":
        from mlops_core.stages.features import materialize_versions

        materialize_versions(settings, [state["version_id"]], backends)
    elif stage == "monitor":
        from mlops_core.stages.monitor import check_for_retraining

        verdict = check_for_retraining(settings, [state["version_id"]], backends, run_key="monitor-bench")
        if not verdict["retrain"]:
            raise SystemExit(f"monitor did not request the first training: {verdict}")
    elif stage == "train":
        from mlops_core.stages.train import build_training_set, log_candidate, run_training_job

        training_set = build_training_set(settings, "ts-bench", backends)
        job = run_training_job(settings, training_set, "train-bench", backends)
        state["candidate"] = log_candidate(settings, training_set, job, "train-bench", backends)
    elif stage == "evaluate_register":
        from mlops_core.stages.evaluate import evaluate_candidate, promote_to_champion

        evaluation = evaluate_candidate(settings, state["candidate"], backends)
        if not evaluation["promote"]:
            raise SystemExit(f"the first model was not promoted: {evaluation['reasons']}")
        state["champion"] = promote_to_champion(settings, evaluation, backends)
    elif stage == "deploy":
        from mlops_core.stages.deploy import deploy_champion

        deploy_champion(settings, state["champion"]["version"], backends)
    else:
        raise SystemExit(f"unknown stage {stage!r}")
    state_file.write_text(json.dumps(state, default=str))


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def in_process_chain(home: Path, rows: int, seed: int) -> dict[str, float]:
    """Seconds per stage, each stage in a fresh process (spawn to exit)."""
    from mlops_core.demo_data import write_bad_files, write_day_files
    from mlops_core.ports import free_port
    from mlops_core.serving import LocalModelServer

    mlops_home = home / "mlops"
    drop = mlops_home / "drop" / "churn"
    drop.mkdir(parents=True)
    write_day_files(drop, range(3), rows=rows, seed=seed)
    write_bad_files(drop, 2, seed=seed)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLOPS_", "MLFLOW_", "AIRFLOW")) or k == "MLFLOW_CONFIGURE_LOGGING"
    }
    env.update(
        MLOPS_HOME=str(mlops_home),
        MLOPS_ENV="dev",
        MLOPS_DROP_ZONE=str(drop),
        **{f"MLOPS_SERVING_PORT_{e}": str(free_port()) for e in ("DEV", "STAGING", "PROD")},
    )
    time.sleep(2.5)  # scan_drop_zone's minimum age; the demo's files are as old when the watch sees them
    state = home / "state.json"
    seconds: dict[str, float] = {}
    try:
        cpu0 = _children_cpu()
        for stage in STAGES:
            t0 = time.monotonic()
            proc = subprocess.run(
                [sys.executable, __file__, "--stage", stage, "--state", str(state)],
                env=env,
                cwd=REPO,
                capture_output=True,
                text=True,
            )
            seconds[stage] = time.monotonic() - t0
            if proc.returncode != 0:
                raise RuntimeError(f"stage {stage} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        seconds["_cpu"] = _children_cpu() - cpu0
    finally:
        LocalModelServer.stop_all(mlops_home / "serving")
    return seconds


# ---------------------------------------------------------------------------- through Airflow
def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _union_seconds(intervals: list[tuple[datetime, datetime]]) -> float:
    total, end = 0.0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += (b - a).total_seconds()
            end = b
        elif b > end:
            total += (b - end).total_seconds()
            end = b
    return total


def airflow_timeline(client: Any) -> dict[str, dict[str, Any]]:
    """Per stage of the first lifecycle pass: wall, task time, task start overhead, gap before."""
    watch = client.runs("watch_drop_zone")[0]
    tis = client.task_instances("watch_drop_zone", watch["dag_run_id"])
    announce = next(t for t in tis if t["task_id"] == "announce")
    previous_end = _time(announce["end_date"])
    out: dict[str, dict[str, Any]] = {
        "watch": {
            "wall": (previous_end - _time(watch["queued_at"])).total_seconds(),  # type: ignore[operator]
            "tasks": None,
            "overhead": None,
            "gap": None,
            "task_count": 2,
        }
    }
    for stage in STAGES:
        run = client.runs(stage)[0]
        queued, end = _time(run["queued_at"]), _time(run["end_date"])
        tis = client.task_instances(stage, run["dag_run_id"])
        spans = [(_time(t["start_date"]), _time(t["end_date"])) for t in tis if t["start_date"] and t["end_date"]]
        ran = [s for s in spans if s[0] and s[1]]
        wall = (end - queued).total_seconds()  # type: ignore[operator]
        tasks = _union_seconds(ran)  # type: ignore[arg-type]
        out[stage] = {
            "wall": wall,
            "tasks": tasks,
            "overhead": wall - tasks,
            "gap": (queued - previous_end).total_seconds(),  # type: ignore[operator]
            "task_count": len([t for t in tis if t["state"] == "success"]),
        }
        previous_end = end
    out["_chain"] = {
        "from_announce": (previous_end - _time(announce["end_date"])).total_seconds(),  # type: ignore[operator]
        "announced_at": _time(announce["end_date"]),
        "deployed_at": previous_end,
    }
    return out


def _split_cpu(pids: set[int]) -> tuple[float, float]:
    """(components, tasks): CPU seconds of the stack's processes so far.

    Tasks: the task processes that ended (the reaped children of the LocalExecutor workers, with
    whatever they waited for, e.g. the training subprocess). Components: every other process of
    the stack (scheduler, dag-processor and its parse processes, triggerer, api-server, log
    servers, the workers themselves), running task processes and their children left out.
    """
    import psutil

    procs = {}
    for pid in pids:
        try:
            procs[pid] = psutil.Process(pid)
        except psutil.Error:
            continue
    workers, in_tasks = set(), set()
    for pid, proc in procs.items():
        try:
            if "LocalExecutor" in " ".join(proc.cmdline()):
                workers.add(pid)
                in_tasks |= {c.pid for c in proc.children(recursive=True)}
        except psutil.Error:
            continue
    components = tasks = 0.0
    for pid, proc in procs.items():
        if pid in in_tasks:
            continue
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        if pid in workers:
            components += t.user + t.system
            tasks += t.children_user + t.children_system
        else:
            components += t.user + t.system + t.children_user + t.children_system
    return components, tasks


class CpuSampler(threading.Thread):
    """Samples the stack's CPU every ``interval`` seconds: (UTC time, components, ended tasks)."""

    def __init__(self, demo: Any, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.demo = demo
        self.interval = interval
        self.samples: list[tuple[datetime, float, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            stack = self.demo._stack
            if stack is None or not stack.running:
                continue
            try:
                components, tasks = _split_cpu(stack.all_pids())
            except (OSError, RuntimeError):  # the stack is stopping
                continue
            self.samples.append((datetime.now(UTC), components, tasks))

    def components_between(self, start: datetime, end: datetime) -> float:
        """Component CPU seconds between two instants (nearest samples)."""

        def at(when: datetime) -> float:
            return min(self.samples, key=lambda s: abs((s[0] - when).total_seconds()))[1]

        return at(end) - at(start) if self.samples else float("nan")


def _wait_until_idle(demo: Any, timeout: float = 120) -> None:
    """Until nothing is queued or running and the next watch run waits for files in the triggerer."""
    from mlops_demo.run import LIFECYCLE_DAGS

    client = demo.client

    def idle() -> bool:
        others = [d for d in LIFECYCLE_DAGS if d != "watch_drop_zone"]
        if any(client.runs(d, state=["queued", "running"]) for d in others):
            return False
        latest = client.runs("watch_drop_zone")[-1]
        states = {t["task_id"]: t["state"] for t in client.task_instances("watch_drop_zone", latest["dag_run_id"])}
        return states.get("wait_for_files") == "deferred"

    client.wait_until(idle, timeout=timeout, interval=1.0, message="the stack to idle")
    time.sleep(3)  # the last REST calls and task-process exits settle


def airflow_chain(home: Path, rows: int, seed: int, idle_seconds: float) -> dict[str, Any]:
    from mlops_demo.run import DemoOptions, LifecycleDemo

    saved = dict(os.environ)  # the demo points this process at its home: undo that afterwards
    demo = LifecycleDemo(
        DemoOptions(home=home / "demo", rows=rows, seed=seed, promote=False, stop_when_done=False, stop_after="initial")
    )
    sampler = CpuSampler(demo)
    sampler.start()
    try:
        result = demo.run()
        if not result.ok:
            raise RuntimeError(f"the demo failed: {result.failures}")
        timeline = airflow_timeline(demo.client)
        chain = timeline["_chain"]
        chain["phase"] = result.phases["initial"]["seconds"]
        chain["startup"] = result.phases["airflow"]["seconds"]
        chain["stack_cpu"] = sampler.components_between(chain["announced_at"], chain["deployed_at"])
        pids = demo.stack.all_pids()
        chain["task_cpu"] = _split_cpu(pids)[1]
        # idle: nothing queued (the watch waits in the triggerer); what does the stack burn?
        _wait_until_idle(demo)
        before, t0 = sum(_split_cpu(pids)), time.monotonic()
        time.sleep(idle_seconds)
        chain["idle_cpu"] = (sum(_split_cpu(pids)) - before) / (time.monotonic() - t0)
        return timeline
    finally:
        sampler.done.set()
        demo.stop()
        os.environ.clear()
        os.environ.update(saved)


# ---------------------------------------------------------------------------- table
def _fmt(value: float | None, width: int = 9) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.1f}"


def summarize(inproc: list[dict[str, float]], flows: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    def med(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return statistics.median(kept) if kept else None

    lines = [
        f"{'stage':<18} {'tasks':>5} {'airflow s':>9} {'task run':>9} {'start ovh':>9} {'idle gap':>9} {'in-proc s':>9}"
    ]
    totals = {"wall": 0.0, "tasks": 0.0, "overhead": 0.0, "gap": 0.0, "inproc": 0.0}
    for stage in ("watch", *STAGES):
        wall = med([f[stage]["wall"] for f in flows])
        tasks = med([f[stage]["tasks"] for f in flows])
        overhead = med([f[stage]["overhead"] for f in flows])
        gap = med([f[stage]["gap"] for f in flows])
        ip = med([r[stage] for r in inproc]) if stage in STAGES else None
        count = flows[0][stage]["task_count"]
        lines.append(f"{stage:<18} {count:>5} {_fmt(wall)} {_fmt(tasks)} {_fmt(overhead)} {_fmt(gap)} {_fmt(ip)}")
        if stage in STAGES:
            for key, value in (("wall", wall), ("tasks", tasks), ("overhead", overhead), ("gap", gap), ("inproc", ip)):
                totals[key] += value or 0.0
    chain = med([f["_chain"]["from_announce"] for f in flows]) or 0.0
    lines.append(
        f"{'total (no watch)':<18} {'':>5} {_fmt(totals['wall'])} {_fmt(totals['tasks'])} "
        f"{_fmt(totals['overhead'])} {_fmt(totals['gap'])} {_fmt(totals['inproc'])}"
    )
    phase = med([f["_chain"]["phase"] for f in flows]) or 0.0
    idle_cpu = med([f["_chain"]["idle_cpu"] for f in flows]) or 0.0
    task_cpu = med([f["_chain"]["task_cpu"] for f in flows]) or 0.0
    stack_cpu = med([f["_chain"]["stack_cpu"] for f in flows]) or 0.0
    inproc_cpu = med([r["_cpu"] for r in inproc]) or 0.0
    startup = med([f["_chain"]["startup"] for f in flows]) or 0.0
    ratio = chain / totals["inproc"] if totals["inproc"] else float("nan")
    lines += [
        "",
        (
            f"airflow chain, announce -> deployed: {chain:.1f} s; in-process chain: {totals['inproc']:.1f} s; "
            f"ratio {ratio:.2f}x (goal <= {GOAL_RATIO}x)"
        ),
        f"demo 'initial' phase (as make demo prints it, incl. the watch): {phase:.1f} s; stack start {startup:.1f} s",
        (
            f"CPU: Airflow task processes {task_cpu:.1f} s (watch included) against {inproc_cpu:.1f} s "
            f"in-process; Airflow components {stack_cpu:.1f} s from announce to deployed"
        ),
        f"stack CPU while idle: {idle_cpu * 100:.1f}% of one core",
    ]
    task_cpu_ratio = task_cpu / inproc_cpu if inproc_cpu else float("nan")
    rows = [
        _row("in-process chain", totals["inproc"], "s", None, None, None),
        _row("airflow chain (announce -> deployed)", chain, "s", totals["inproc"], ratio, f"<= {GOAL_RATIO}x"),
        _row("airflow task run time", totals["tasks"], "s", totals["inproc"], None, None),
        _row("airflow task start overhead", totals["overhead"], "s", None, None, None),
        _row("airflow idle gaps between runs", totals["gap"], "s", None, None, None),
        _row("demo initial phase", phase, "s", None, None, None),
        _row("airflow task CPU", task_cpu, "s", inproc_cpu, task_cpu_ratio, f"<= {GOAL_TASK_CPU_RATIO}x"),
        _row("airflow components CPU (announce -> deployed)", stack_cpu, "s", None, None, None),
        _row("stack CPU while idle", idle_cpu * 100, "% core", None, None, f"<= {GOAL_IDLE_CPU_PERCENT}"),
    ]
    rows[1]["ok"] = ratio <= GOAL_RATIO
    rows[6]["ok"] = task_cpu_ratio <= GOAL_TASK_CPU_RATIO
    rows[8]["ok"] = idle_cpu * 100 <= GOAL_IDLE_CPU_PERCENT
    return lines, rows


def _row(
    case: str, value: float, unit: str, floor: float | None, ratio: float | None, goal: str | None
) -> dict[str, Any]:
    return {
        "benchmark": BENCHMARK,
        "case": case,
        "value": round(value, 3),
        "unit": unit,
        "floor": None if floor is None else round(floor, 3),
        "ratio": None if ratio is None else round(ratio, 3),
        "goal": goal,
        "ok": None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1, help="alternating in-process / Airflow runs (medians)")
    ap.add_argument("--rows", type=int, default=None, help="rows per day (default 1000; --quick 300)")
    ap.add_argument("--quick", action="store_true", help="smaller days, shorter idle sample")
    ap.add_argument("--json", type=Path, help="write the result rows here")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--stage", help=argparse.SUPPRESS)  # child mode: run one stage
    ap.add_argument("--state", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.stage:
        _run_stage(args.stage, args.state)
        return 0
    rows = args.rows or (300 if args.quick else 1000)
    idle = 5.0 if args.quick else 15.0
    inproc: list[dict[str, float]] = []
    flows: list[dict[str, Any]] = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-lifecycle-") as tmp:
            inproc.append(in_process_chain(Path(tmp) / "inproc", rows, args.seed))
            print(f"run {i + 1}: in-process {sum(inproc[-1][s] for s in STAGES):.1f} s", flush=True)
            flows.append(airflow_chain(Path(tmp) / "airflow", rows, args.seed, idle))
            print(f"run {i + 1}: airflow chain {flows[-1]['_chain']['from_announce']:.1f} s", flush=True)
            shutil.rmtree(tmp, ignore_errors=True)
    lines, result_rows = summarize(inproc, flows)
    print(f"\n== Lifecycle: Airflow vs one process per stage ({rows} rows/day, medians of {args.runs} run(s)) ==")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(result_rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
