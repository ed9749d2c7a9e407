"""Stack start time and task throughput: two Celery workers against the LocalExecutor, side by side.

    python bench/bench_distributed.py [--tasks 40] [--sleep 2] [--quick]

For each executor it starts the real stack on a fresh home (Celery: PostgreSQL database, Redis
database number and MLflow tracking server first, timed on their own line), lets one DAG of
``--tasks`` independent tasks (each sleeps ``--sleep`` seconds, so the task slots, not this
machine's CPU, bound the ideal rate) run once, and reports tasks per minute from Airflow's own run
start and end. Both sides have four task slots: LocalExecutor parallelism 4, Celery 2 workers x 2.
The ideal rate is ``slots * 60 / sleep``; what is missing is the executor's overhead per task
(process start, Execution API calls, queueing).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "include"))

DAG_ID = "bench_fanout"
DAG_TEMPLATE = """
from datetime import datetime
import time

from airflow.sdk import dag, task


@dag(dag_id="{dag_id}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, max_active_tasks={tasks})
def fanout():
    @task
    def sleep_a_bit(i: int) -> int:
        time.sleep({sleep})
        return i

    for i in range({tasks}):
        sleep_a_bit.override(task_id=f"t{{i:03d}}")(i)


fanout()
"""


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _throughput(stack, tasks: int) -> tuple[float, float, dict[str, int]]:
    """(seconds from the run's start to its end, tasks per minute, tasks per host)."""
    client = stack.client
    client.wait_for_dags([DAG_ID], timeout=300)
    run_id = client.trigger(DAG_ID)
    client.wait_for_run(DAG_ID, run_id, timeout=1800)
    run = client.run(DAG_ID, run_id)
    seconds = _ts(run["end_date"]) - _ts(run["start_date"])
    hosts: dict[str, int] = {}
    for ti in client.task_instances(DAG_ID, run_id):
        hosts[ti.get("hostname") or "?"] = hosts.get(ti.get("hostname") or "?", 0) + 1
    return seconds, tasks * 60 / seconds, hosts


def measure(executor: str, root: Path, dags: Path, tasks: int) -> dict:
    from mlops_demo.airflow_stack.stack import AirflowStack

    row: dict = {"executor": executor}
    if executor == "LocalExecutor":
        stack = AirflowStack(root / "local", dags, parallelism=4)
        services = None
    else:
        from mlops_demo.airflow_stack.distributed import DistributedServices, celery_stack

        t0 = time.monotonic()
        services = DistributedServices.create(root / "mlflow" / "artifacts", timeout=600)
        row["services_s"] = time.monotonic() - t0
        stack = celery_stack(root / "celery", dags, services, workers=2, concurrency=2)
    try:
        stack.start(timeout=900)
        row["start_s"] = stack.startup_seconds
        row["run_s"], row["tasks_per_min"], row["hosts"] = _throughput(stack, tasks)
    finally:
        stack.stop()
        if services is not None:
            services.close()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--sleep", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="20 tasks")
    args = parser.parse_args(argv)
    tasks = 20 if args.quick else args.tasks
    root = Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    try:
        dags = root / "dags"
        dags.mkdir()
        (dags / f"{DAG_ID}.py").write_text(DAG_TEMPLATE.format(dag_id=DAG_ID, tasks=tasks, sleep=args.sleep))
        rows = [measure(e, root, dags, tasks) for e in ("LocalExecutor", "CeleryExecutor")]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ideal = 4 * 60 / args.sleep
    print(f"\n{tasks} tasks of {args.sleep:g}s sleep, 4 task slots each (ideal {ideal:.0f} tasks/min)", end="")
    print(f"; {os.cpu_count()} CPUs")
    print("| executor | services start (s) | stack start (s) | run (s) | tasks/min | tasks per host |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        services = f"{r['services_s']:.1f}" if "services_s" in r else "-"
        hosts = ", ".join(f"{h}: {n}" for h, n in sorted(r["hosts"].items()))
        print(
            f"| {r['executor']} | {services} | {r['start_s']:.1f} | {r['run_s']:.1f} | "
            f"{r['tasks_per_min']:.1f} | {hosts} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
