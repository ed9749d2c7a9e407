"""Many arrival watches waiting at once: what waiting costs, AssetWatchers against deferrable sensors.

Two Airflow stacks (the project's own, ``mlops_demo.airflow_stack``: scheduler, dag-processor,
triggerer, api-server, LocalExecutor), one per way of waiting, each with ``N`` DAGs (50; 10 with
``--quick``) watching the same local drop zone, started paused so the same stack gives the
baseline:

* **watcher** (``dataset.arrival.via: watcher``): ``N`` DAGs scheduled on an asset whose
  ``AssetWatcher`` runs the project's ``DropZoneWatcher`` (each with its own poll interval, so
  Airflow keeps ``N`` triggers rather than one shared);
* **sensor** (``via: sensor``, the ``watch_drop_zone`` shape): ``N`` ``@continuous`` DAGs whose
  deferrable ``NewFilesSensor`` waits in the triggerer.

Once all ``N`` wait (triggers assigned to the triggerer; for sensors every task deferred) the
script reads, through the REST API and the stack's metadata database: DAG runs held open, task
instances holding a worker slot (running or queued), task instances deferred, the triggerer's
memory (RSS of the triggerer and its children) against the same stack before unpausing, and the
worker seconds the sensors spent before they deferred. For the watchers it then delivers one file
and times delivery -> the one ``asset_triggered`` run queued. Goal (issue 8): zero worker slots
held by waiting watchers.

    .venv/bin/python bench/bench_watchers.py [--quick] [--json rows.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from _common import make_row

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "include"))
BENCH = "watchers"

WATCHER_DAGS = """
from airflow.sdk import Asset, AssetWatcher, dag, task
from mlops_airflow.triggers.files import DropZoneWatcher

for i in range({n}):
    asset = Asset(
        name=f"bench_landed_{{i}}",
        uri=f"x-mlops://bench/landed/{{i}}",
        watchers=[
            AssetWatcher(name=f"bench_watch_{{i}}", trigger=DropZoneWatcher(env="dev", poll_interval=2 + i / 100))
        ],
    )

    @dag(dag_id=f"bench_watched_{{i}}", schedule=[asset], catchup=False, tags=["bench"])
    def watched():
        @task
        def take() -> None:
            pass

        take()

    watched()
"""

SENSOR_DAGS = """
from datetime import timedelta

import pendulum
from airflow.sdk import dag
from mlops_airflow.sensors.files import NewFilesSensor

START = pendulum.datetime(2026, 1, 1, tz="UTC")

for i in range({n}):

    @dag(
        dag_id=f"bench_sensor_{{i}}",
        schedule="@continuous",
        start_date=START,  # as watch_drop_zone: Airflow 3.3.2 never starts a second run of one without
        max_active_runs=1,
        catchup=False,
        tags=["bench"],
    )
    def sensed():
        NewFilesSensor(
            task_id="wait_for_files", timeout=86400, soft_fail=True, retries=3, retry_delay=timedelta(seconds=1)
        )

    sensed()
"""


def _rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def _db(stack: Any, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{stack.db_path}?mode=ro", uri=True, timeout=30) as db:
        return db.execute(sql).fetchall()


def _wait(what: str, predicate: Any, timeout: float, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def measure(kind: str, n: int, work: Path) -> dict[str, float]:
    from mlops_demo.airflow_stack.stack import AirflowStack

    dags = work / f"dags-{kind}"
    dags.mkdir(parents=True)
    (dags / f"bench_{kind}.py").write_text((WATCHER_DAGS if kind == "watcher" else SENSOR_DAGS).format(n=n))
    home = work / f"mlops-{kind}"
    zone = home / "drop" / "churn"
    zone.mkdir(parents=True)
    prefix = "bench_watched_" if kind == "watcher" else "bench_sensor_"
    ids = [f"{prefix}{i}" for i in range(n)]
    stack = AirflowStack(
        work / f"airflow-{kind}",
        dags,
        parallelism=4,
        extra_env={
            "MLOPS_HOME": str(home),
            "MLOPS_DROP_ZONE": str(zone),
            "MLOPS_ARRIVAL_VIA": kind,  # watcher | sensor: what the settings say, as a deployment would
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        },
    )
    stack.start(timeout=240)
    try:
        client = stack.client
        client.wait_for_dags(ids, timeout=180)
        time.sleep(5)
        triggerer = stack.pids()["triggerer"]
        before = _rss_mb(triggerer)
        t0 = time.monotonic()
        for dag_id in ids:
            client.unpause(dag_id)
        assigned = "select count(*) from trigger where triggerer_id is not null"
        if kind == "watcher":
            _wait(f"{n} watcher triggers", lambda: _db(stack, assigned)[0][0] >= n, timeout=300)
        else:  # a task that dies while starting under load is retried
            deferred = "select count(*) from task_instance where state = 'deferred'"
            _wait(f"{n} deferred sensors", lambda: _db(stack, deferred)[0][0] >= n, timeout=900)
        waiting_after = time.monotonic() - t0
        time.sleep(10)  # a few polls of every trigger
        after = _rss_mb(triggerer)
        states = dict(_db(stack, "select state, count(*) from task_instance group by state"))
        runs = _db(stack, "select count(*) from dag_run where state in ('running', 'queued')")[0][0]
        busy = _db(
            stack,
            "select coalesce(sum((julianday(end_date) - julianday(start_date)) * 86400), 0) from task_instance "
            "where start_date is not null and end_date is not null",
        )[0][0]
        out = {
            "seconds_until_all_wait": waiting_after,
            "dag_runs_held": float(runs),
            "worker_slots_held": float(states.get("running", 0) + states.get("queued", 0)),
            "tasks_deferred": float(states.get("deferred", 0)),
            "triggerer_rss_before_mb": before,
            "triggerer_rss_mb": after,
            "worker_seconds_to_start_waiting": float(busy or 0.0),
        }
        if kind == "watcher":
            path = zone / "bench-day.csv"
            path.write_text("customer_id\nC1\n")
            past = time.time() - 120
            os.utime(path, (past, past))
            t1 = time.monotonic()
            queued = "select count(*) from dag_run where run_type = 'asset_triggered'"
            _wait("the watchers' runs", lambda: _db(stack, queued)[0][0] >= n, timeout=300, interval=0.2)
            out["seconds_file_to_all_runs_queued"] = time.monotonic() - t1
        return out
    finally:
        stack.stop()


def _row(case: str, value: float, unit: str, floor: float | None, goal: str, ok: bool | None) -> dict[str, Any]:
    return make_row(BENCH, case, value, unit, floor, goal, ok, digits=3)


def rows_of(n: int, watcher: dict[str, float], sensor: dict[str, float]) -> list[dict[str, Any]]:
    w_mem = watcher["triggerer_rss_mb"] - watcher["triggerer_rss_before_mb"]
    s_mem = sensor["triggerer_rss_mb"] - sensor["triggerer_rss_before_mb"]
    return [
        _row(
            f"{n} watchers waiting: worker slots held",
            watcher["worker_slots_held"],
            "",
            None,
            "0",
            watcher["worker_slots_held"] == 0,
        ),
        _row(
            f"{n} watchers waiting: DAG runs held open",
            watcher["dag_runs_held"],
            "",
            None,
            "0",
            watcher["dag_runs_held"] == 0,
        ),
        _row(f"{n} sensors waiting: worker slots held", sensor["worker_slots_held"], "", None, "-", None),
        _row(f"{n} sensors waiting: DAG runs held open (deferred tasks)", sensor["dag_runs_held"], "", None, "-", None),
        _row(f"{n} watchers: triggerer memory added (floor: {n} deferred sensors)", w_mem, "MB", s_mem, "-", None),
        _row(f"{n} watchers: triggerer RSS with all waiting", watcher["triggerer_rss_mb"], "MB", None, "-", None),
        _row(
            f"{n} sensors: worker seconds spent before deferring",
            sensor["worker_seconds_to_start_waiting"],
            "s",
            None,
            "-",
            None,
        ),
        _row(
            f"{n} watchers: seconds from unpause until all wait (floor: sensors)",
            watcher["seconds_until_all_wait"],
            "s",
            sensor["seconds_until_all_wait"],
            "-",
            None,
        ),
        _row(
            f"one file -> all {n} watchers' runs queued",
            watcher["seconds_file_to_all_runs_queued"],
            "s",
            None,
            "-",
            None,
        ),
    ]


def print_table(rows: list[dict[str, Any]]) -> None:
    print("\n## Arrival watches waiting at once (AssetWatchers vs deferrable sensors)\n")
    print("| case | value | unit | floor | ratio | goal | ok |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ok = {True: "ok", False: "MISSED", None: "-"}[r["ok"]]
        ratio = "-" if r["ratio"] is None else f"{r['ratio']}x"
        floor = "-" if r["floor"] is None else r["floor"]
        print(f"| {r['case']} | {r['value']} | {r['unit']} | {floor} | {ratio} | {r['goal']} | {ok} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 watches of each kind (default 50)")
    ap.add_argument("-n", type=int, default=None, help="number of watches of each kind")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    n = args.n or (10 if args.quick else 50)
    with tempfile.TemporaryDirectory(prefix="bench-watchers-") as tmp:
        watcher = measure("watcher", n, Path(tmp))
        print(f"watcher: {json.dumps(watcher)}", flush=True)
        sensor = measure("sensor", n, Path(tmp))
        print(f"sensor: {json.dumps(sensor)}", flush=True)
    rows = rows_of(n, watcher, sensor)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
