"""``make demo``: the whole ML lifecycle, end to end, through the real Airflow scheduler.

What happens (everything under ``.demo/`` of the repository, on loopback, nothing downloaded):

1. **setup**     generate three days of churn data (+ two bad files) into the drop zone
2. **airflow**   start scheduler, dag-processor, triggerer and api-server on an isolated home
3. **initial**   the ingest sensor fires -> dataset version -> features -> monitor (no champion
                 yet) -> train -> evaluate_register -> deploy: a champion is served
4. **no-drift**  one more normal day: ingested, monitored, *no* retraining
   **decay**     clients score rows whose outcomes changed through dev's endpoint (the capture
                 layer records each request with its ``customer_id``); their labels land later in
                 the label drop; the monitor joins them to the captured predictions, finds the
                 champion's live quality fell and requests retraining (``decay``)
5. **drift**     two days with covariate and concept drift: monitor requests retraining ->
                 a new challenger is trained, evaluated and (if better) deployed
6. **re-run**    the first ingest run is cleared and re-run, and a file is delivered twice:
                 no new version, no duplicate row
7. **promote**   dev -> staging (no approval), staging -> prod (approved through the HITL API)

Then it prints a summary and stops everything it started. Exit code 1 if any stage failed.

    python -m mlops_demo.run [--home .demo] [--rows 1000] [--no-promote] [--keep-running]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_core.environments import ENVIRONMENTS

if TYPE_CHECKING:
    from mlops_core.datasets import DatasetStore
    from mlops_core.settings import Settings
    from mlops_demo.airflow_stack.rest_client import AirflowClient
    from mlops_demo.airflow_stack.stack import AirflowStack

REPO = Path(__file__).resolve().parents[2]
LIFECYCLE_DAGS = ["watch_drop_zone", "ingest", "features", "monitor", "train", "evaluate_register", "deploy", "promote"]
ALL_DAGS = [*LIFECYCLE_DAGS, "ingest_sql"]
# How often the demo asks the REST API how the lifecycle is doing: one request for every DAG's
# runs per look (each request costs the api-server CPU the tasks need on a small machine).
POLL_SECONDS = 1.0
# The lifecycle settled: no run queued or running and no asset event waiting to schedule one, seen
# on this many seconds of looks (one look reads the runs, then the queued events: a run the
# scheduler creates from a queued event between the two reads shows up in the next look).
IDLE_SECONDS = 2.0
# The decay phase: a later day of rows whose outcomes follow a changed concept, scored in requests of
# this many rows; a tenth of them never get a label, the others within DECAY_LABEL_DELAY_S of scoring.
DECAY_DAY = 6
DECAY_BATCH_ROWS = 25
DECAY_MISSING_LABELS = 0.1
DECAY_LABEL_DELAY_S = 20.0


# The DAGs an asset event schedules (their queued events say a run is on its way).
def _lifecycle_dags() -> tuple[list[str], list[str]]:
    """The lifecycle's DAGs under this environment's settings: no ``watch_drop_zone`` when an
    AssetWatcher schedules ``ingest`` (``dataset.arrival.via: watcher``; its file defines no DAG)."""
    from mlops_airflow.arrival import uses_watcher
    from mlops_core.settings import load_settings

    if not uses_watcher(load_settings("dev")):
        return LIFECYCLE_DAGS, ALL_DAGS
    return [d for d in LIFECYCLE_DAGS if d != "watch_drop_zone"], [d for d in ALL_DAGS if d != "watch_drop_zone"]


ASSET_SCHEDULED_DAGS = ["ingest", "features", "monitor", "train", "evaluate_register", "deploy"]


@dataclass
class DemoOptions:
    home: Path = REPO / ".demo"
    rows: int = 1000
    seed: int = 7
    promote: bool = True
    keep_running: bool = False
    stop_when_done: bool = True  # False: the caller inspects the running stack, then calls stop()
    phase_timeout: float = 600.0
    start_timeout: float = 300.0  # Airflow's start (a Celery stack on a busy machine needs longer)
    port: int | None = None
    stop_after: str | None = None  # "initial": end after the first deployment (bench/bench_lifecycle.py)
    # More environment for this process and the stack, e.g. MLOPS_CONF_DIR of a conf folder whose backends
    # are aws and the AIRFLOW_CONN_<ID> they reach AWS through (tests/e2e/test_lifecycle_aws_e2e.py).
    extra_env: dict[str, str] = field(default_factory=dict)
    # Phases to leave out ("no-drift", "decay", "drift", "re-run"): a shorter lifecycle that still runs every stage.
    skip: frozenset[str] = frozenset()


@dataclass
class DemoResult:
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures


def log(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def lifecycle_stack(home: Path, *, port: int | None = None, extra_env: dict[str, str] | None = None) -> AirflowStack:
    """The Airflow stack the lifecycle runs on: this repository's DAGs and plugins, four task slots."""
    from mlops_demo.airflow_stack.stack import AirflowStack

    return AirflowStack(
        home, REPO / "dags", port=port, extra_env=extra_env, plugins_folder=REPO / "plugins", parallelism=4
    )


class LifecycleDemo:
    """One pass of the lifecycle on a fresh ``MLOPS_HOME``.

    On its own Airflow stack (under ``<home>/airflow``, stopped by :meth:`stop`), or on a ``stack``
    shared with other passes one after the other (the end-to-end tests: one stack per session): the
    demo then gives it its environment (:meth:`AirflowStack.switch_env`, starting it if it is not
    running), leaves it running in :meth:`stop`, and its :attr:`client` sees only the runs and asset
    events of its own pass (:meth:`AirflowClient.scoped`).
    """

    def __init__(self, options: DemoOptions, stack: AirflowStack | None = None) -> None:
        from mlops_core.ports import free_port

        self.o = options
        self.home = options.home.resolve()
        self.mlops_home = self.home / "mlops"
        self.drop_zone = self.mlops_home / "drop" / "churn"
        self.ports = {env: free_port() for env in ENVIRONMENTS}
        self.env = {
            "MLOPS_HOME": str(self.mlops_home),
            "MLOPS_ENV": "dev",
            "MLOPS_DROP_ZONE": str(self.drop_zone),
            **{f"MLOPS_SERVING_PORT_{e.upper()}": str(p) for e, p in self.ports.items()},
            **options.extra_env,
        }
        self.result = DemoResult()
        self._stack: AirflowStack | None = stack
        self._owns_stack = stack is None
        self._client: AirflowClient | None = None
        self.since: datetime | None = None  # when run() began: what this pass's client sees
        self.dags, self.all_dags = LIFECYCLE_DAGS, ALL_DAGS  # without watch_drop_zone under via: watcher

    @property
    def stack(self) -> AirflowStack:
        if self._stack is None:
            raise RuntimeError("the demo's Airflow is not started yet")
        return self._stack

    @property
    def client(self) -> AirflowClient:
        if self._client is None:
            self._client = self.stack.client.scoped(self.since) if self.since is not None else self.stack.client
        return self._client

    # ------------------------------------------------------------------ orchestration
    def run(self) -> DemoResult:
        t0 = time.monotonic()
        self.since = datetime.now(UTC)
        self._client = None
        self._setup()
        if self._owns_stack:
            self._stack = lifecycle_stack(self.home / "airflow", port=self.o.port, extra_env=self.env)
        try:
            with self._phase("airflow"):
                if self.stack.running:  # a shared stack: its components start again with this pass's environment
                    self.stack.switch_env(self.env, timeout=self.o.start_timeout)
                else:
                    self.stack.switch_env(self.env).start(timeout=self.o.start_timeout)
                # DAGs start unpaused (ingest_sql, which needs a configured SQL source, paused).
                self.client.wait_for_dags(self.all_dags, timeout=300)
                log(
                    f"Airflow UI {self.stack.ui_url} (user {self.stack.username}, password in "
                    f"{self.stack.passwords_file})"
                )
            with self._phase("initial"):
                self._wait_for(lambda: self._succeeded("deploy") >= 1, "first deployment")
                if self.o.stop_after != "initial":
                    self._wait_idle()
            if self.o.stop_after == "initial":
                self.result.summary = self._summary(time.monotonic() - t0)
                return self.result
            if "no-drift" not in self.o.skip:
                with self._phase("no-drift"):
                    trains = self._count("train")
                    self._drop_days([3])
                    self._wait_for(lambda: self._consumed(), "day 3 to be ingested")
                    self._wait_idle()
                    self.result.phases["no-drift"]["retrained"] = self._count("train") > trains
            if "decay" not in self.o.skip:
                with self._phase("decay"):
                    self._decay()
            if "drift" not in self.o.skip:
                with self._phase("drift"):
                    trains = self._count("train")
                    self._drop_days([4, 5], drift=True)
                    self._wait_for(lambda: self._consumed(), "drifted days to be ingested")
                    self._wait_for(lambda: self._succeeded("train") > trains, "retraining after drift")
                    self._wait_idle()
                    self.result.phases["drift"]["retrained"] = self._count("train") > trains
            if "re-run" not in self.o.skip:
                with self._phase("re-run"):
                    self._rerun_checks()
            if self.o.promote:
                with self._phase("promote"):
                    self._promote("dev", approve=False)
                    self._promote("staging", approve=True)
            self.result.summary = self._summary(time.monotonic() - t0)
        except Exception as exc:
            import traceback

            log(traceback.format_exc())
            self.result.failures.append(f"{type(exc).__name__}: {exc}")
            try:
                self.result.summary = self._summary(time.monotonic() - t0)
            except Exception as inner:
                self.result.failures.append(f"summary: {inner}")
        finally:
            if self.o.keep_running:
                log("--keep-running: leaving Airflow and the model servers up; Ctrl-C to stop")
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    pass
            if self.o.stop_when_done or self.o.keep_running:
                self.stop()
        return self.result

    def stop(self) -> None:
        from mlops_core.compute import LocalJobCompute
        from mlops_core.serving import LocalModelServer

        LocalJobCompute.stop_all(self.mlops_home / "jobs")
        LocalModelServer.stop_all(self.mlops_home / "serving")
        if self._stack is not None and self._owns_stack:
            self._stack.stop()

    # ------------------------------------------------------------------ phases
    def _setup(self) -> None:
        from mlops_core.demo_data import write_bad_files, write_day_files
        from mlops_demo.airflow_stack.stack_home import make_private_folder

        with self._phase("setup"):
            if self.home.exists():
                shutil.rmtree(self.home)
            make_private_folder(self.home)  # owner-only: the data, models and secrets below it
            self.drop_zone.mkdir(parents=True)
            os.environ.update(self.env)  # this process reads the same store and registry
            self.dags, self.all_dags = _lifecycle_dags()
            files = write_day_files(self.drop_zone, range(3), rows=self.o.rows, seed=self.o.seed)
            bad = write_bad_files(self.drop_zone, 2, seed=self.o.seed)
            self.result.phases["setup"]["files"] = [p.name for p in files] + sorted(bad)
            log(f"Wrote {len(files)} day files and {len(bad)} bad files into {self.drop_zone}")

    def _drop_days(self, days: list[int], drift: bool = False) -> None:
        """Write into a hidden staging folder first, then move in: the sensor sees whole batches."""
        from mlops_core.demo_data import DriftSpec, write_day_files

        staging = self.drop_zone.parent / ".staging"
        spec = DriftSpec(kind="both", start_day=min(days)) if drift else DriftSpec()
        files = write_day_files(staging, days, rows=self.o.rows, seed=self.o.seed, drift=spec)
        for f in files:
            os.replace(f, self.drop_zone / f.name)
        log(f"Dropped {[f.name for f in files]}" + (" (with covariate + concept drift)" if drift else ""))

    def _decay(self) -> None:
        """Scored rows whose outcomes changed (concept drift), labelled later: the monitor sees decay."""
        import math

        from mlops_airflow.backends import store_for
        from mlops_core.demo_data import DriftSpec, generate_day, write_label_file
        from mlops_core.settings import load_settings

        settings = load_settings("dev")
        phase = self.result.phases["decay"]
        if settings.backends.serving != "local" or not settings.capture.enabled:
            phase["skipped"] = "dev does not serve locally with capture on"
            return
        m = settings.monitoring
        # enough requests for a serving-health verdict and enough labelled pairs for a decay verdict
        rows = max(math.ceil(m.min_labelled_pairs / (1 - DECAY_MISSING_LABELS) * 1.3), 20 * DECAY_BATCH_ROWS)
        day = DECAY_DAY
        frame = generate_day(day, rows=rows, seed=self.o.seed + 1, drift=DriftSpec(kind="concept", start_day=day))
        labels = self._score_and_label(settings, frame)
        name = f"demo-labels-{self.since:%Y%m%dT%H%M%S}"
        key = f"{labels_key(settings)}{name}.csv"
        with tempfile.TemporaryDirectory() as tmp:  # the label drop is the store's, on any backend
            store_for(settings).put_file(key, write_label_file(Path(tmp), name, labels))
        log(f"Scored {rows} rows through {self._endpoint(settings)}; {len(labels)} delayed labels dropped into {key}")
        # the labels' times and the captures' last flush must be in the past when the monitor looks
        due = max(labels["event_time"]).to_pydatetime()
        wait = max((due - datetime.now(UTC)).total_seconds(), settings.capture.flush_seconds) + 1
        log(f"Waiting {wait:.0f} s for the last label to be due and the captures to be flushed")
        time.sleep(wait)
        trains = self._count("train")
        run_id = self.client.trigger("monitor", conf={"env": "dev"})
        self.client.wait_for_run("monitor", run_id, timeout=self.o.phase_timeout)
        verdict = self.client.xcom("monitor", run_id, "check_drift") or {}
        decay = (verdict.get("live") or {}).get("decay") or {}
        phase.update(
            scored_rows=rows,
            labels=len(labels),
            reason=verdict.get("reason"),
            live_decay={k: decay.get(k) for k in ("metric", "baseline", "live", "drop", "pairs", "decayed", "why")},
        )
        if verdict.get("retrain"):
            self._wait_for(lambda: self._succeeded("train") > trains, "retraining after decay")
        self._wait_idle()

    def _score_and_label(self, settings: Settings, frame: Any) -> Any:
        """Send ``frame`` to dev's endpoint in small requests, as clients would; return the labels
        that land later for what was scored (:func:`mlops_core.demo_data.delayed_labels`)."""
        import pandas as pd
        import requests

        from mlops_core.demo_data import delayed_labels
        from mlops_core.training.model import prepare_features

        contract = settings.load_contract()
        url = self._endpoint(settings)
        labels = []
        for batch, start in enumerate(range(0, len(frame), DECAY_BATCH_ROWS)):
            part = frame.iloc[start : start + DECAY_BATCH_ROWS]
            features = prepare_features(part, contract)
            # the entity key rides along: the capture layer records it, the model ignores it
            features.insert(0, contract.entity_key, part[contract.entity_key].astype(str).to_numpy())
            payload = {"dataframe_split": json.loads(features.to_json(orient="split", index=False))}
            scored_at = datetime.now(UTC)
            requests.post(url, json=payload, timeout=30).raise_for_status()
            labels.append(
                delayed_labels(
                    part,
                    scored_at,
                    seed=self.o.seed,
                    batch=batch,
                    missing_share=DECAY_MISSING_LABELS,
                    min_delay_minutes=0.05,
                    max_delay_hours=DECAY_LABEL_DELAY_S / 3600,
                )
            )
        return pd.concat(labels, ignore_index=True)

    def _rerun_checks(self) -> None:
        store = self.dataset_store()
        before = [(m["version_id"], m["row_count"]) for m in store.list_versions()]
        first = next(
            r
            for r in self.client.runs("ingest")
            if self._task_state("ingest", r["dag_run_id"], "ingest_files") == "success"
        )
        tries = self.client.task_instance("ingest", first["dag_run_id"], "ingest_files")["try_number"]
        log(f"Clearing ingest_files of {first['dag_run_id']} (re-run of an already ingested batch)")
        self.client.clear_task("ingest", first["dag_run_id"], ["ingest_files"])

        def rerun_finished() -> bool:
            ti = self.client.task_instance("ingest", first["dag_run_id"], "ingest_files")
            return ti["try_number"] > tries and ti["state"] in ("success", "skipped", "failed")

        self._wait_for(rerun_finished, "the cleared ingest task")
        rerun_state = self._task_state("ingest", first["dag_run_id"], "ingest_files")
        # A byte-identical copy of day 0 under a new name: a duplicate delivery.
        archived = sorted((self.drop_zone.parent).glob("churn.archive/*/churn_2026-01-01.csv"))
        dup = self.drop_zone / "churn_2026-01-01_resent.csv"
        shutil.copyfile(archived[0], dup.parent / f".{dup.name}")
        os.replace(dup.parent / f".{dup.name}", dup)
        self._wait_for(lambda: self._consumed(), "the duplicate delivery to be consumed")
        self._wait_idle()
        after = [(m["version_id"], m["row_count"]) for m in store.list_versions()]
        dup_records = [q for q in store.list_quarantine() if "duplicate_file" in json.dumps(q)]
        self.result.phases["re-run"].update(
            versions_before=before,
            versions_after=after,
            cleared_task_state=rerun_state,
            duplicate_file_quarantined=bool(dup_records),
        )
        if before != after:
            raise AssertionError(f"re-running ingest changed the dataset versions: {before} -> {after}")

    def _promote(self, from_env: str, approve: bool) -> None:
        deploys = self._count("deploy")
        run_id = self.client.trigger("promote", conf={"from_env": from_env})
        log(f"Promoting the {from_env} champion (run {run_id})")
        if approve:
            state = self.answer_approval("promote", run_id, "approve_promotion", approve=True)
        else:
            state = self.client.wait_for_run("promote", run_id, timeout=self.o.phase_timeout)
        self._wait_for(lambda: self._succeeded("deploy") > deploys, f"deployment after promoting {from_env}")
        self.result.phases["promote"][f"from_{from_env}"] = state

    def answer_approval(self, dag_id: str, run_id: str, task_id: str, *, approve: bool) -> str:
        """Answer a run's approval request like a person would; return the run's final state.

        A person answers seconds after the request appears, not within milliseconds: Airflow 3.3.2
        can lose a response that arrives before the scheduler has processed the task's own pause
        (the task is then retried and asks again, which this answers too).
        """
        self.client.wait_until(
            lambda: self._task_state(dag_id, run_id, task_id) == "awaiting_input",
            timeout=self.o.phase_timeout,
            interval=2,
            message=f"the approval request of {dag_id}/{run_id}",
        )
        answer = "approving" if approve else "rejecting"
        deadline = time.monotonic() + self.o.phase_timeout
        while self.client.run(dag_id, run_id)["state"] not in ("success", "failed"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id} run {run_id} did not finish after the approval")
            if self._task_state(dag_id, run_id, task_id) == "awaiting_input" and self.client.pending_approvals(
                dag_id, run_id
            ):
                time.sleep(5)
                log(f"Approval requested in the UI (Required actions); {answer} through the REST API")
                self.client.respond_approval(dag_id, run_id, task_id, approve)
            time.sleep(2)
        return self.client.wait_for_run(dag_id, run_id, timeout=self.o.phase_timeout, raise_on_failure=False)

    # ------------------------------------------------------------------ waiting
    def _phase(self, name: str):
        demo = self

        class _Phase:
            def __enter__(self):
                log(f"--- {name}")
                self.start = time.monotonic()
                demo.result.phases.setdefault(name, {})
                return self

            def __exit__(self, exc_type, exc, tb):
                seconds = round(time.monotonic() - self.start, 1)
                demo.result.phases[name]["seconds"] = seconds
                demo.result.phases[name]["ok"] = exc is None
                log(f"--- {name}: {'ok' if exc is None else 'FAILED'} in {seconds}s")
                return False

        return _Phase()

    def _wait_for(self, predicate, what: str, settle: float = 0.0) -> None:
        deadline = time.monotonic() + self.o.phase_timeout
        while time.monotonic() < deadline:
            self._raise_on_failed_runs()
            if predicate():
                time.sleep(settle)
                return
            time.sleep(POLL_SECONDS)
        raise TimeoutError(f"timed out after {self.o.phase_timeout:.0f}s waiting for {what}")

    def _wait_idle(self, stable: float = IDLE_SECONDS) -> None:
        """No run queued or running (besides the watch waiting for files) and no asset event queued
        for a run, on every look for ``stable`` seconds."""
        quiet_since = None
        deadline = time.monotonic() + self.o.phase_timeout
        while time.monotonic() < deadline:
            self._raise_on_failed_runs()
            if self._busy() or self._queued_events():
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= stable:
                return
            time.sleep(POLL_SECONDS)
        raise TimeoutError("the lifecycle did not settle")

    def _busy(self) -> list[str]:
        """The lifecycle DAGs with a queued or running run (one request for all of them)."""
        busy = []
        for r in self.client.runs_of(self.dags, states=["queued", "running"]):
            dag_id = r["dag_id"]
            if dag_id == "watch_drop_zone":  # its run waiting for the next files is idle
                states = {ti["task_id"]: ti["state"] for ti in self.client.task_instances(dag_id, r["dag_run_id"])}
                if states.get("announce") in (None, "none", "scheduled") and not self._ready_files():
                    continue
            busy.append(dag_id)
        return busy

    def _queued_events(self) -> list[str]:
        """The DAGs an asset event is queued for (asked only while no run is busy: one request per DAG)."""
        return [dag_id for dag_id in ASSET_SCHEDULED_DAGS if self.client.queued_asset_events(dag_id)]

    def _raise_on_failed_runs(self) -> None:
        for r in self.client.runs_of(self.dags, states=["failed"])[:1]:
            dag_id = r["dag_id"]
            tis = self.client.task_instances(dag_id, r["dag_run_id"])
            failed = [t["task_id"] for t in tis if t["state"] in ("failed", "upstream_failed")]
            detail = ""
            if failed:
                detail = self.client.task_log(dag_id, r["dag_run_id"], failed[0])[-3000:]
            raise RuntimeError(f"DAG run {dag_id}/{r['dag_run_id']} failed (tasks {failed}):\n{detail}")

    def _ready_files(self) -> list[Path]:
        return [p for p in self.drop_zone.iterdir() if p.is_file() and not p.name.startswith(".")]

    def _consumed(self) -> bool:
        return not self._ready_files()

    def _count(self, dag_id: str) -> int:
        return len(self.client.runs(dag_id))

    def _succeeded(self, dag_id: str) -> int:
        return len(self.client.runs(dag_id, state=["success"]))

    def _task_state(self, dag_id: str, run_id: str, task_id: str) -> str | None:
        for ti in self.client.task_instances(dag_id, run_id):
            if ti["task_id"] == task_id:
                return ti["state"]
        return None

    # ------------------------------------------------------------------ summary
    def _summary(self, wall: float) -> dict[str, Any]:
        from mlops_core.backends import model_registry
        from mlops_core.settings import load_settings

        out: dict[str, Any] = {"wall_seconds": round(wall, 1), "phases": self.result.phases}
        dev = load_settings("dev")
        store = self.dataset_store()
        out["dataset_versions"] = [
            {
                "version_id": m["version_id"],
                "rows": m["row_count"],
                "sources": [s["key"] for s in m["sources"]],
                "event_days": sorted(m["partitions"]),
            }
            for m in store.list_versions()
        ]
        out["quarantine"] = store.list_quarantine()
        if self._stack is None or not self._stack.running or not out["dataset_versions"]:
            return out
        out["stage_seconds"] = self._stage_seconds()
        out["drift_verdicts"] = [
            self.client.xcom("monitor", r["dag_run_id"], "check_drift")
            for r in self.client.runs("monitor", state=["success"])
        ]
        out["training_runs"] = [
            self.client.xcom("train", r["dag_run_id"], "log_to_mlflow")
            for r in self.client.runs("train", state=["success"])
        ]
        out["evaluations"] = [
            self.client.xcom("evaluate_register", r["dag_run_id"], "evaluate")
            for r in self.client.runs("evaluate_register", state=["success"])
        ]
        out["champions"] = {}
        for env in ENVIRONMENTS:
            settings = load_settings(env)
            champ = model_registry(settings).champion(settings.registered_model_name)
            if champ is not None:
                out["champions"][env] = {
                    "model": settings.registered_model_name,
                    "version": champ.version,
                    "dataset_versions": champ.tags.get("mlops.dataset_versions"),
                    "url": self._endpoint(settings),
                }
        out["sample_prediction"] = self._sample_prediction(dev)
        return out

    def dataset_store(self, env: str = "dev") -> DatasetStore:
        """The environment's dataset store, on whatever object store its backends name."""
        from mlops_airflow.backends import store_for
        from mlops_core.datasets import DatasetStore
        from mlops_core.settings import load_settings

        settings = load_settings(env)
        return DatasetStore(store_for(settings), settings.load_contract().name)

    @staticmethod
    def _endpoint(settings: Settings) -> str:
        if settings.backends.serving == "local":
            return f"http://{settings.serving.host}:{settings.serving.port}/invocations"
        from mlops_airflow.backends import backends_for

        live = backends_for(settings).serving.live()
        return live.endpoint if live is not None else "(nothing live)"

    def _stage_seconds(self) -> dict[str, dict[str, float]]:
        stats: dict[str, dict[str, float]] = {}
        for dag_id in self.dags:
            durations = []
            for r in self.client.runs(dag_id, state=["success"]):
                if r.get("start_date") and r.get("end_date"):
                    start = datetime.fromisoformat(r["start_date"].replace("Z", "+00:00"))
                    end = datetime.fromisoformat(r["end_date"].replace("Z", "+00:00"))
                    durations.append((end - start).total_seconds())
            if dag_id == "watch_drop_zone":  # its runs are mostly waiting for files
                continue
            if durations:
                stats[dag_id] = {
                    "runs": len(durations),
                    "mean_s": round(sum(durations) / len(durations), 1),
                    "max_s": round(max(durations), 1),
                }
        return stats

    def _sample_prediction(self, settings: Settings) -> dict[str, Any] | None:
        import requests

        from mlops_core.demo_data import generate_day
        from mlops_core.training.model import prepare_features

        rows = prepare_features(generate_day(9, rows=3, seed=99), settings.load_contract())
        if settings.backends.serving != "local":  # a cloud endpoint: through the serving target's own client
            from mlops_airflow.backends import backends_for

            smoke = backends_for(settings).serving.smoke_test(rows)
            return {"url": smoke.endpoint, "input": rows.iloc[0].tolist(), "response": smoke.predictions}
        url = f"http://{settings.serving.host}:{settings.serving.port}/invocations"
        payload = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
        try:
            resp = requests.post(url, json=payload, timeout=30)
        except requests.RequestException as exc:
            return {"url": url, "error": str(exc)}
        return {
            "url": url,
            "status": resp.status_code,
            "input": payload["dataframe_split"]["data"][0],
            "response": resp.json() if resp.ok else resp.text[:500],
        }


def labels_key(settings: Settings) -> str:
    """Where the environment's delayed labels are dropped in its store (``monitoring.labels_prefix``)."""
    from mlops_core.labels import labels_prefix

    return labels_prefix(settings.monitoring.labels_prefix, settings.load_contract().name)


def print_summary(result: DemoResult) -> None:
    s = result.summary
    line = "=" * 78
    print(
        f"\n{line}\nMLOps lifecycle demo: {'SUCCESS' if result.ok else 'FAILED'} "
        f"in {s.get('wall_seconds', '?')} s\n{line}"
    )
    print("\nPhases:")
    for name, p in result.phases.items():
        shown_below = ("seconds", "ok", "versions_before", "versions_after", "files", "live_decay")
        extra = {k: v for k, v in p.items() if k not in shown_below}
        print(f"  {name:<10} {'ok' if p.get('ok') else 'FAILED':<7} {p.get('seconds', '?'):>7} s  {extra or ''}")
    print("\nDataset versions:")
    for v in s.get("dataset_versions", []):
        print(
            f"  {v['version_id']}  {v['rows']:>6} rows  days {','.join(v['event_days'])}  "
            f"from {', '.join(v['sources'])}"
        )
    print("\nQuarantine:")
    for q in s.get("quarantine", []):
        print(f"  {q.get('source', '?')}: {q.get('reason', q)}")
    print("\nDrift verdicts (monitor runs):")
    for d in s.get("drift_verdicts", []):
        if d:
            print(f"  retrain={d.get('retrain')!s:<5} reason={d.get('reason'):<12} {d.get('summary', '')}")
    decay = result.phases.get("decay", {}).get("live_decay")
    if decay:
        print("\nLive decay on delayed labels (decay phase: captured predictions joined to labels that came later):")
        print(
            f"  {decay['metric']}: live {decay['live']} on {decay['pairs']} pairs vs {decay['baseline']} at evaluation "
            f"(drop {decay['drop']}) -> decayed={decay['decayed']}  {decay.get('why') or ''}"
        )
    print("\nMLflow training runs:")
    for t in s.get("training_runs", []):
        if t:
            metrics = ", ".join(f"{k}={v:.3f}" for k, v in sorted(t["metrics"].items()) if isinstance(v, (int, float)))
            print(f"  run {t['mlflow_run_id']}  versions {','.join(t['dataset_versions'])}  {metrics}")
    print("\nEvaluations (challenger vs champion on the same held-out rows):")
    for e in s.get("evaluations", []):
        if e:
            print(
                f"  {e['model_name']} v{e['version']}: {'PROMOTED' if e['promote'] else 'kept champion'}; "
                + " ".join(e["reasons"])
            )
    print("\nChampions:")
    for env, c in s.get("champions", {}).items():
        print(f"  {env:<8} {c['model']} v{c['version']}  (data {c['dataset_versions']})  {c['url']}")
    sp = s.get("sample_prediction")
    if sp:
        print(
            f"\nSample prediction from {sp['url']}:\n  input {sp.get('input')}\n"
            f"  -> {sp.get('response', sp.get('error'))}"
        )
    print("\nWall time per stage (successful DAG runs, start to end):")
    for dag_id, st in s.get("stage_seconds", {}).items():
        print(f"  {dag_id:<18} runs={st['runs']:<3} mean={st['mean_s']:>6} s  max={st['max_s']:>6} s")
    if result.failures:
        print("\nFailures:")
        for f in result.failures:
            print("  " + f.replace("\n", "\n    "))
    print(line)


def main(argv: list[str] | None = None) -> int:
    os.umask(0o077)  # everything the demo writes is owner-only, as in the stack's components
    ap = argparse.ArgumentParser(description="Run the whole ML lifecycle end to end on the local defaults.")
    ap.add_argument("--home", type=Path, default=DemoOptions.home, help="where everything is written (wiped first)")
    ap.add_argument("--rows", type=int, default=DemoOptions.rows, help="rows per generated day")
    ap.add_argument("--seed", type=int, default=DemoOptions.seed)
    ap.add_argument("--port", type=int, default=None, help="Airflow api-server port (default: a free one)")
    ap.add_argument("--no-promote", action="store_true", help="skip dev -> staging -> prod")
    ap.add_argument("--keep-running", action="store_true", help="leave everything up at the end until Ctrl-C")
    ap.add_argument("--json", type=Path, help="also write the summary as JSON here")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `finally` stops what we started
    demo = LifecycleDemo(
        DemoOptions(
            home=args.home,
            rows=args.rows,
            seed=args.seed,
            promote=not args.no_promote,
            keep_running=args.keep_running,
            port=args.port,
        )
    )
    result = demo.run()
    print_summary(result)
    if args.json:
        args.json.write_text(
            json.dumps({"ok": result.ok, "failures": result.failures, **result.summary}, indent=2, default=str)
        )
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
