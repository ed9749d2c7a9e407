"""End to end: the real Airflow 3.3 scheduler, dag-processor, triggerer and api-server on a tmp home.

One stack is started for the whole module (the slow part: 20-60 s on 2 CPUs) with the tiny DAGs in
``tests/airflow_stack/dags``; every test drives it through the public REST API v2 only. The tests
run in file order: the last ones restart the stack, kill a component and stop it.

The stack is started the way a user starts it: umask 022 (group- and world-readable files by
default), a connection exported in the environment, an ``MLOPS_HOME`` that does not exist yet.
Measured durations are printed (run with ``-s`` to see them) and collected in ``TIMINGS``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest
import requests

from mlops_demo.airflow_stack.component_env import JWT_SECRET_VARIABLE
from mlops_demo.airflow_stack.rest_client import RunFailedError
from mlops_demo.airflow_stack.stack import AirflowStack, StackError

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

DAGS = Path(__file__).parent / "dags"
DAG_IDS = [
    "stack_write_file",
    "stack_fail",
    "stack_sleep",
    "stack_producer",
    "stack_consumer",
    "stack_pair_producer",
    "stack_pair_consumer",
    "stack_approval",
    "stack_log_while_running",
    "stack_log_while_deferred",
    "stack_read_connection",
    "stack_mlflow_logging",
    "stack_watched",
]
ASSET_NAME = "stack_test_dataset"
TIMINGS: dict[str, float] = {}
# A connection the "user" exports before starting the stack, as the README's SQL-source setup does.
EXPORTED_CONN_ID = "stack_exported_db"
EXPORTED_PASSWORD = f"exported-pw-{uuid.uuid4().hex}"
EXPORTED_CONN = {"conn_type": "generic", "host": "db.example", "login": "app", "password": EXPORTED_PASSWORD}


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _record(name: str, seconds: float) -> None:
    TIMINGS[name] = round(seconds, 2)
    print(f"\n[timing] {name}: {seconds:.2f}s")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _argv(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:  # exited meanwhile
        return ""


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> AirflowStack:
    base = tmp_path_factory.mktemp("stack")
    mlops_home = base / "mlops"  # does not exist yet: the stack creates it
    old_umask = os.umask(0o022)  # a usual login umask: files readable by everyone unless we say otherwise
    with pytest.MonkeyPatch.context() as env:
        env.setenv(f"AIRFLOW_CONN_{EXPORTED_CONN_ID.upper()}", json.dumps(EXPORTED_CONN))
        env_vars = {"MLOPS_HOME": str(mlops_home), "MLOPS_ARRIVAL_VIA": "watcher"}  # stack_watched's watcher
        s = AirflowStack(base / "airflow", DAGS, parallelism=4, extra_env=env_vars)
        t0 = time.monotonic()
        try:
            s.start(timeout=240)
            _record("start", time.monotonic() - t0)
            t1 = time.monotonic()
            s.client.wait_for_dags(DAG_IDS, timeout=120)
            _record("dags_parsed_after_start", time.monotonic() - t1)
            yield s
        finally:
            s.stop()
            os.umask(old_umask)
            print(f"\n[timings] {json.dumps(TIMINGS)}")


@pytest.fixture(scope="module")
def client(stack):
    return stack.client


def test_manual_trigger_runs_task_and_writes_file(stack, client, tmp_path):
    out = tmp_path / "written.txt"
    t0 = time.monotonic()
    run_id = client.trigger("stack_write_file", conf={"path": str(out)})
    state = client.wait_for_run("stack_write_file", run_id, timeout=120, interval=0.25)
    _record("trigger_to_success_one_task", time.monotonic() - t0)

    assert state == "success"
    assert out.read_text() == f"{run_id} try=1\n"
    assert client.xcom("stack_write_file", run_id, "write_file") == {"path": str(out), "try_number": 1}
    [ti] = client.task_instances("stack_write_file", run_id)
    assert (ti["task_id"], ti["state"], ti["try_number"]) == ("write_file", "success", 1)
    assert "Done. Returned value was" in client.task_log("stack_write_file", run_id, "write_file", 1)
    assert run_id in [r["dag_run_id"] for r in client.runs("stack_write_file", state=["success"])]
    assert run_id not in [r["dag_run_id"] for r in client.runs("stack_write_file", state=["failed"])]


def test_failed_run_raises_with_task_id_and_log_tail(client):
    run_id = client.trigger("stack_fail")
    with pytest.raises(RunFailedError) as err:
        client.wait_for_run("stack_fail", run_id, timeout=120, interval=0.25)
    assert err.value.state == "failed"
    assert list(err.value.failed_tasks) == ["explode"]
    assert "boom-from-stack-fail" in err.value.failed_tasks["explode"]
    assert client.wait_for_run("stack_fail", run_id, raise_on_failure=False) == "failed"


def test_runs_of_several_dags_in_one_request(client, tmp_path):
    ok_run = client.trigger("stack_write_file", conf={"path": str(tmp_path / "runs_of.txt")})
    failed_run = client.trigger("stack_fail")
    assert client.wait_for_run("stack_write_file", ok_run, timeout=120, interval=0.25) == "success"
    assert client.wait_for_run("stack_fail", failed_run, timeout=120, raise_on_failure=False) == "failed"

    both = {(r["dag_id"], r["dag_run_id"]): r["state"] for r in client.runs_of(["stack_write_file", "stack_fail"])}
    assert both[("stack_write_file", ok_run)] == "success"
    assert both[("stack_fail", failed_run)] == "failed"
    assert {dag_id for dag_id, _ in both} == {"stack_write_file", "stack_fail"}  # no other DAG's runs
    failed = {(r["dag_id"], r["dag_run_id"]) for r in client.runs_of(["stack_write_file", "stack_fail"], ["failed"])}
    assert ("stack_fail", failed_run) in failed
    assert ("stack_write_file", ok_run) not in failed


def test_trigger_whose_answer_is_lost_creates_one_run(client, tmp_path, monkeypatch):
    """The POST reaches the real server and creates the run, but its answer is lost (as when SQLite
    makes a write wait out the busy timeout): the repeat finds the run (409) and returns its id,
    and there is exactly one run."""
    real_send = client._send
    lost = []

    def send_then_lose_the_answer(method, url, params, json_body):
        resp = real_send(method, url, params, json_body)
        if method == "POST" and url.endswith("/dagRuns") and not lost:
            lost.append(resp.status_code)
            raise requests.Timeout("answer lost (injected by the test)")
        return resp

    monkeypatch.setattr(client, "_send", send_then_lose_the_answer)
    before = {r["dag_run_id"] for r in client.runs("stack_write_file")}
    run_id = client.trigger("stack_write_file", conf={"path": str(tmp_path / "lost.txt")})
    assert lost == [200]  # the first attempt did create the run
    new_runs = [r["dag_run_id"] for r in client.runs("stack_write_file") if r["dag_run_id"] not in before]
    assert new_runs == [run_id]
    assert client.wait_for_run("stack_write_file", run_id, timeout=120, interval=0.25) == "success"


def test_asset_event_schedules_consumer_with_metadata(client):
    version = f"v-{uuid.uuid4().hex[:8]}"
    before = {r["dag_run_id"] for r in client.runs("stack_consumer")}
    producer_run = client.trigger("stack_producer", conf={"version": version})
    assert client.wait_for_run("stack_producer", producer_run, timeout=120, interval=0.25) == "success"

    # the asset event, with the metadata the producer attached, is visible through the API
    [event] = client.asset_events(ASSET_NAME, source_dag_id="stack_producer", source_run_id=producer_run)
    assert event["extra"] == {"version": version, "rows": 3}
    assert event["name"] == ASSET_NAME
    assert event["uri"] == "file:///tmp/airflow-stack-test/dataset"

    # ... and it schedules the consumer, which receives exactly that event
    new_runs = client.wait_until(
        lambda: [r for r in client.runs("stack_consumer") if r["dag_run_id"] not in before],
        timeout=90,
        interval=0.25,
        message="an asset-triggered stack_consumer run",
    )
    [consumer] = new_runs
    assert consumer["run_type"] == "asset_triggered"
    consumer_run = consumer["dag_run_id"]
    assert client.wait_for_run("stack_consumer", consumer_run, timeout=120, interval=0.25) == "success"
    assert client.xcom("stack_consumer", consumer_run, "consume") == [{"version": version, "rows": 3}]
    [event] = client.asset_events(ASSET_NAME, source_run_id=producer_run)
    assert [r["run_id"] for r in event["created_dagruns"]] == [consumer["dag_run_id"]]

    produced = client.task_instance("stack_producer", producer_run, "produce")
    consumer = client.run("stack_consumer", consumer["dag_run_id"])
    _record(
        "asset_consumer_queued_after_producer_task_success",
        (_ts(consumer["queued_at"]) - _ts(produced["end_date"])).total_seconds(),
    )
    _record(
        "asset_consumer_started_after_producer_task_success",
        (_ts(consumer["start_date"]) - _ts(produced["end_date"])).total_seconds(),
    )
    _record(
        "asset_consumer_success_after_producer_task_success",
        (_ts(consumer["end_date"]) - _ts(produced["end_date"])).total_seconds(),
    )


def test_an_asset_event_waits_in_the_queue_until_its_run_is_created(client):
    """The pair consumer needs both assets: the producer's event stays queued for it, then schedules its run."""
    asset_ids = {a["name"]: a["id"] for a in client.assets()}
    producer_run = client.trigger("stack_producer", conf={"version": "pair"})
    assert client.wait_for_run("stack_producer", producer_run, timeout=120, interval=0.25) == "success"
    queued = client.queued_asset_events("stack_pair_consumer")
    assert [(q["dag_id"], q["asset_id"]) for q in queued] == [("stack_pair_consumer", asset_ids[ASSET_NAME])]
    assert client.runs("stack_pair_consumer") == []

    pair_run = client.trigger("stack_pair_producer")
    assert client.wait_for_run("stack_pair_producer", pair_run, timeout=120, interval=0.25) == "success"
    [consumer] = client.wait_until(
        lambda: client.runs("stack_pair_consumer"), timeout=90, interval=0.25, message="the pair consumer's run"
    )
    assert consumer["run_type"] == "asset_triggered"
    assert client.queued_asset_events("stack_pair_consumer") == []


def test_approval_waits_for_human_then_proceeds(client):
    run_id = client.trigger("stack_approval")
    [request] = client.wait_until(
        lambda: client.pending_approvals("stack_approval", run_id),
        timeout=120,
        interval=0.25,
        message="the approval request",
    )
    assert request["subject"] == "Promote the stack test model?"
    assert request["options"] == ["Approve", "Reject"]
    ti = request["task_instance"]
    assert (ti["dag_id"], ti["dag_run_id"], ti["task_id"]) == ("stack_approval", run_id, "approve")
    everywhere = client.pending_approvals()  # across all DAGs and runs
    assert run_id in [r["task_instance"]["dag_run_id"] for r in everywhere]

    # nothing moves while nobody answers
    time.sleep(3)
    states = {t["task_id"]: t["state"] for t in client.task_instances("stack_approval", run_id)}
    assert states["approve"] == "awaiting_input"
    assert states["after_approval"] in (None, "none", "scheduled")  # not run
    assert client.run("stack_approval", run_id)["state"] == "running"

    t0 = time.monotonic()
    response = client.respond_approval("stack_approval", run_id, "approve", True)
    assert response["chosen_options"] == ["Approve"]
    assert response["responded_by"]["name"] == "admin"
    assert client.wait_for_run("stack_approval", run_id, timeout=120, interval=0.25) == "success"
    _record("approval_response_to_run_success", time.monotonic() - t0)

    states = {t["task_id"]: t["state"] for t in client.task_instances("stack_approval", run_id)}
    assert states == {"approve": "success", "after_approval": "success"}
    assert client.xcom("stack_approval", run_id, "after_approval") == "promoted"
    detail = client.hitl_detail("stack_approval", run_id, "approve")
    assert detail["response_received"] is True
    assert detail["chosen_options"] == ["Approve"]
    assert client.pending_approvals("stack_approval", run_id) == []


def test_clear_task_reruns_it(client, tmp_path):
    out = tmp_path / "cleared.txt"
    run_id = client.trigger("stack_write_file", conf={"path": str(out)})
    assert client.wait_for_run("stack_write_file", run_id, timeout=120, interval=0.25) == "success"

    cleared = client.clear_task("stack_write_file", run_id, ["write_file"])
    assert [t["task_id"] for t in cleared] == ["write_file"]
    assert client.wait_for_run("stack_write_file", run_id, timeout=120, interval=0.25) == "success"

    assert out.read_text().splitlines() == [f"{run_id} try=1", f"{run_id} try=2"]
    ti = client.task_instance("stack_write_file", run_id, "write_file")
    assert (ti["state"], ti["try_number"]) == ("success", 2)
    assert client.xcom("stack_write_file", run_id, "write_file")["try_number"] == 2
    # both tries keep their own log
    assert "try_number': 1" in client.task_log("stack_write_file", run_id, "write_file", 1)
    assert "try_number': 2" in client.task_log("stack_write_file", run_id, "write_file", 2)


def _log_with_sources(client, dag_id: str, run_id: str, task_id: str) -> tuple[list[str], str]:
    """(the "Log message source details" of the latest try, the log as text)."""
    data = client.request(
        "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/1", params={"full_content": "true"}
    )
    content = data["content"]
    sources, in_group = [], False
    for msg in content:
        event = str(msg.get("event", ""))
        if event == "::group::Log message source details":
            in_group = True
        elif event == "::endgroup::":
            in_group = False
        elif in_group:
            sources.append(event)
    return sources, "\n".join(str(m.get("event", "")) for m in content)


def test_logs_of_running_and_deferred_tasks_are_served_by_this_stack(stack, client):
    """The api-server reads the log of an unfinished task from the log server of the component that
    runs it: the scheduler's (running) and the triggerer's (deferred), on this stack's own ports."""
    running = client.trigger("stack_log_while_running", conf={"seconds": 30})
    deferred = client.trigger("stack_log_while_deferred")

    def state(dag_id: str, run_id: str, task_id: str) -> str | None:
        return client.task_instance(dag_id, run_id, task_id)["state"]

    def readable(dag_id: str, run_id: str, task_id: str, wanted_state: str, marker: str):
        if state(dag_id, run_id, task_id) != wanted_state:
            return None
        sources, text = _log_with_sources(client, dag_id, run_id, task_id)
        return (sources, text) if marker in text else None

    sources, _ = client.wait_until(
        lambda: readable("stack_log_while_running", running, "talk_then_sleep", "running", "marker-logged-before"),
        timeout=120,
        interval=0.5,
        message="the running task's log with its marker",
    )
    assert state("stack_log_while_running", running, "talk_then_sleep") == "running"  # still running
    served = [s for s in sources if s.startswith("http")]
    assert [s for s in sources if "Could not read served logs" in s] == [], sources
    assert len(served) == 1 and f":{stack.worker_log_port}/log/" in served[0], sources

    sources, _ = client.wait_until(
        lambda: readable("stack_log_while_deferred", deferred, "wait_deferred", "deferred", "trigger starting"),
        timeout=120,
        interval=0.5,
        message="the deferred task's trigger log",
    )
    served = [s for s in sources if s.startswith("http")]
    assert [s for s in sources if "Could not read served logs" in s] == [], sources
    assert len(served) == 1 and f":{stack.trigger_log_port}/log/" in served[0], sources
    assert served[0].endswith(".log") and ".trigger." in served[0]
    # nothing in the api-server's log about failing to read them either
    assert "Could not read served logs" not in stack.log_path("api-server").read_text(errors="replace")


def test_mlflow_log_records_keep_their_level_in_task_logs(client):
    """MLflow's INFO lines are info, not errors (Airflow logs a task's stderr at ERROR level)."""
    run_id = client.trigger("stack_mlflow_logging")
    assert client.wait_for_run("stack_mlflow_logging", run_id, timeout=180, interval=0.5) == "success"
    data = client.request(
        "GET",
        f"/dags/stack_mlflow_logging/dagRuns/{run_id}/taskInstances/log_through_mlflow/logs/1",
        params={"full_content": "true"},
    )
    levels = {
        marker: [m.get("level") for m in data["content"] if marker in str(m.get("event", ""))]
        for marker in ("mlflow-info-marker", "mlflow-warning-marker")
    }
    assert levels == {"mlflow-info-marker": ["info"], "mlflow-warning-marker": ["warning"]}


def test_exported_connection_reaches_tasks_but_no_command_line(stack, client):
    run_id = client.trigger("stack_read_connection", conf={"conn_id": EXPORTED_CONN_ID})
    assert client.wait_for_run("stack_read_connection", run_id, timeout=120, interval=0.25) == "success"
    assert client.xcom("stack_read_connection", run_id, "read_connection") == {
        "conn_type": "generic",
        "host": "db.example",
        "login": "app",
        "password_sha256": _sha256(EXPORTED_PASSWORD),
    }
    pids = stack.all_pids()
    assert len(pids) > len(stack.pids())  # components + executor workers + log servers
    secrets = [EXPORTED_PASSWORD, stack.environment()[JWT_SECRET_VARIABLE], stack.password]
    assert [pid for pid in pids if any(secret in _argv(pid) for secret in secrets)] == []


def test_state_files_are_owner_only(stack, client):
    """Everything under the Airflow home and the MLOPS_HOME is private, whatever the caller's umask."""
    assert os.umask(0o022) == 0o022  # the fixture's: a usual umask (group/world-readable)
    written = stack.mlops_home / "outputs" / "written.txt"
    run_id = client.trigger("stack_write_file", conf={"path": str(written)})
    assert client.wait_for_run("stack_write_file", run_id, timeout=120, interval=0.25) == "success"
    assert written.exists()

    homes = [stack.home, stack.mlops_home]
    paths = [p for home in homes for p in [home, *home.rglob("*")] if not p.is_symlink()]
    assert {p.name for p in paths} >= {"airflow.db", "logs", "scheduler.log", "attempt=1.log", "written.txt"}
    shared = [f"{oct(stat.S_IMODE(p.stat().st_mode))} {p}" for p in paths if stat.S_IMODE(p.stat().st_mode) & 0o077]
    assert shared == []


def test_secrets_are_private_and_never_logged(stack):
    for path in (stack.secrets_file, stack.passwords_file, stack.home / "airflow.cfg"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    env = stack.environment()
    # only the Fernet key is stored; the JWT secret and the API secret key live for one start
    assert json.loads(stack.secrets_file.read_text()) == {"fernet_key": env["AIRFLOW__CORE__FERNET_KEY"]}
    secrets = {
        "jwt": env[JWT_SECRET_VARIABLE],
        "api_key": env["AIRFLOW__API__SECRET_KEY"],
        "fernet": env["AIRFLOW__CORE__FERNET_KEY"],
        "password": stack.password,
        "exported connection": EXPORTED_PASSWORD,
    }
    logs = [p for p in stack.log_dir.rglob("*") if p.is_file()]
    assert len(logs) >= 5  # the component logs and task logs exist ...
    leaked = [(name, p) for p in logs for name, value in secrets.items() if value in p.read_text(errors="replace")]
    assert leaked == []  # ... but contain none of the secrets


def test_a_scoped_client_sees_the_runs_and_events_from_its_start_on(client, tmp_path):
    """What each lifecycle of a shared stack sees: runs still going at ``since`` or later, events from then on."""
    earlier = client.trigger("stack_producer", conf={"version": "earlier"})
    assert client.wait_for_run("stack_producer", earlier, timeout=120, interval=0.25) == "success"
    going = client.trigger("stack_sleep", conf={"seconds": 8})
    client.wait_until(
        lambda: client.task_instance("stack_sleep", going, "sleep_long")["state"] == "running",
        timeout=120,
        interval=0.25,
        message="sleep_long running",
    )
    since = datetime.now(UTC)
    scoped = client.scoped(since)
    later = scoped.trigger("stack_producer", conf={"version": "later"})
    assert scoped.wait_for_run("stack_producer", later, timeout=120, interval=0.25) == "success"
    assert client.wait_for_run("stack_sleep", going, timeout=120, interval=0.25) == "success"

    assert earlier in [r["dag_run_id"] for r in client.runs("stack_producer")]  # the client itself sees all
    assert [r["dag_run_id"] for r in scoped.runs("stack_producer")] == [later]
    assert [r["dag_run_id"] for r in scoped.runs("stack_sleep")] == [going]  # still going at `since`
    assert {(r["dag_id"], r["dag_run_id"]) for r in scoped.runs_of(["stack_producer", "stack_sleep"])} == {
        ("stack_producer", later),
        ("stack_sleep", going),
    }
    assert [e["extra"]["version"] for e in scoped.asset_events(ASSET_NAME)] == ["later"]
    assert "earlier" in [e["extra"]["version"] for e in client.asset_events(ASSET_NAME)]
    with pytest.raises(ValueError, match="timezone-aware"):
        client.scoped(datetime.now())  # a naive datetime


def test_switch_env_restarts_all_but_the_api_server_with_the_new_environment(stack, client):
    """The scheduler, dag-processor and triggerer start again with the new environment (a connection only
    it names reaches the tasks); the api-server, the database and the client's login stay."""
    conn_id = "stack_switched_db"
    password = f"switched-pw-{uuid.uuid4().hex}"
    before = stack.pids()
    logins = client.logins
    missing = client.trigger("stack_read_connection", conf={"conn_id": conn_id})
    assert client.wait_for_run("stack_read_connection", missing, timeout=120, raise_on_failure=False) == "failed"

    conn = {"conn_type": "generic", "host": "switched.example", "password": password}
    t0 = time.monotonic()
    stack.switch_env({**stack.extra_env, f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn)})
    _record("switch_env", time.monotonic() - t0)

    after = stack.pids()
    assert after["api-server"] == before["api-server"]
    assert all(after[c] != before[c] for c in ("scheduler", "dag-processor", "triggerer"))
    assert not any(psutil.pid_exists(before[c]) for c in ("scheduler", "dag-processor", "triggerer"))
    run_id = client.trigger("stack_read_connection", conf={"conn_id": conn_id})
    assert client.wait_for_run("stack_read_connection", run_id, timeout=120, interval=0.25) == "success"
    assert client.xcom("stack_read_connection", run_id, "read_connection")["host"] == "switched.example"
    assert client.logins == logins  # the same JWT secret: no new login
    secrets = [password]
    assert [pid for pid in stack.all_pids() if any(secret in _argv(pid) for secret in secrets)] == []


def _stack_drop_zone(stack: AirflowStack) -> Path:
    """The drop zone the stack's components see (dev settings under the stack's MLOPS_HOME)."""
    from mlops_core.settings import load_settings

    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLOPS_HOME", str(stack.mlops_home))
        for name in ("MLOPS_DROP_ZONE", "MLOPS_CONF_DIR", "MLOPS_CONTRACT"):
            env.delenv(name, raising=False)
        zone = Path(load_settings("dev").dataset.drop_zone)
    zone.mkdir(parents=True, exist_ok=True)
    return zone


def _deliver_old(path: Path) -> Path:
    path.write_text("customer_id\nC1\n")
    past = time.time() - 120  # older than the arrival rule's min_age_seconds
    os.utime(path, (past, past))
    return path


def _watched_runs(client) -> list[dict]:
    return sorted(client.runs("stack_watched"), key=lambda r: r["queued_at"] or "")


def test_an_asset_watcher_schedules_a_run_for_a_new_file_with_no_task_waiting(stack, client):
    """The triggerer runs the DropZoneWatcher; no DAG run and no task instance exists while it waits."""
    zone = _stack_drop_zone(stack)
    time.sleep(3)  # several polls of an empty drop zone
    assert _watched_runs(client) == []  # waiting costs no DAG run, hence no worker slot
    t0 = time.monotonic()
    first = _deliver_old(zone / f"watched-{uuid.uuid4().hex[:6]}.csv")
    [run] = client.wait_until(
        lambda: _watched_runs(client), timeout=90, interval=0.25, message="a run scheduled by the watcher"
    )
    _record("watcher_file_to_run_queued", time.monotonic() - t0)
    assert run["run_type"] == "asset_triggered"
    assert client.wait_for_run("stack_watched", run["dag_run_id"], timeout=120, interval=0.25) == "success"
    got = client.xcom("stack_watched", run["dag_run_id"], "received")
    assert got == {"paths": [str(first)], "from_trigger": [True]}
    time.sleep(3)  # six more polls: the file is still there, and is not announced again
    assert len(_watched_runs(client)) == 1


def test_restart_rotates_the_jwt_secret_and_keeps_the_fernet_key(stack, client):
    """A new JWT secret per start (old tokens stop working); the same Fernet key, so a connection
    stored (encrypted) in the database before the restart is still readable after it."""
    stored_password = f"stored-pw-{uuid.uuid4().hex}"
    client.request(
        "POST",
        "/connections",
        json_body={"connection_id": "stack_stored_db", "conn_type": "generic", "password": stored_password},
        ok=(201,),
    )
    before = stack.environment()
    token = requests.post(
        f"{stack.base_url}/auth/token", json={"username": stack.username, "password": stack.password}, timeout=30
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{stack.base_url}/api/v2/dags", headers=headers, timeout=30).status_code == 200

    stack.stop()
    t0 = time.monotonic()
    stack.start(timeout=240)
    _record("restart", time.monotonic() - t0)
    after = stack.environment()

    assert after[JWT_SECRET_VARIABLE] != before[JWT_SECRET_VARIABLE]
    assert after["AIRFLOW__API__SECRET_KEY"] != before["AIRFLOW__API__SECRET_KEY"]
    assert after["AIRFLOW__CORE__FERNET_KEY"] == before["AIRFLOW__CORE__FERNET_KEY"]
    # a token signed with the previous start's secret is refused (Airflow answers 403 to a bad signature)
    assert requests.get(f"{stack.base_url}/api/v2/dags", headers=headers, timeout=30).status_code == 403
    files = [p for p in stack.home.rglob("*") if p.is_file()]
    for secret in (before[JWT_SECRET_VARIABLE], after[JWT_SECRET_VARIABLE]):
        assert [p for p in files if secret.encode() in p.read_bytes()] == []

    client.wait_for_dags(["stack_read_connection"], timeout=120)
    run_id = client.trigger("stack_read_connection", conf={"conn_id": "stack_stored_db"})  # logs in again
    assert client.wait_for_run("stack_read_connection", run_id, timeout=120, interval=0.25) == "success"
    assert client.xcom("stack_read_connection", run_id, "read_connection")["password_sha256"] == _sha256(
        stored_password
    )


def test_after_a_restart_the_asset_watcher_announces_only_new_files(stack, client):
    """The watcher's memory lives in Airflow's asset state store: the restarted triggerer does
    not announce the file of the first watcher test again, only the one delivered now."""
    zone = _stack_drop_zone(stack)
    client.wait_for_dags(["stack_watched"], timeout=120)
    time.sleep(3)
    assert len(_watched_runs(client)) == 1
    second = _deliver_old(zone / f"watched-{uuid.uuid4().hex[:6]}.csv")
    runs = client.wait_until(
        lambda: _watched_runs(client)[1:], timeout=90, interval=0.25, message="a second watcher run"
    )
    [run] = runs
    assert client.wait_for_run("stack_watched", run["dag_run_id"], timeout=120, interval=0.25) == "success"
    assert client.xcom("stack_watched", run["dag_run_id"], "received")["paths"] == [str(second)]


def test_check_reports_a_dead_component_with_its_log(stack, client):
    """A component that dies is reported by check() with its exit code and the tail of its log.

    (start() polls the same check(), and stops everything before raising.) The triggerer is the
    victim: nothing left in this module needs it (HITL waits without a trigger on Airflow 3.3).
    """
    stack.check()  # all alive
    triggerer = stack.pids()["triggerer"]
    os.killpg(triggerer, signal.SIGKILL)
    with pytest.raises(StackError) as err:
        client.wait_until(lambda: stack.check(), timeout=30, interval=0.2, message="check() to notice")
    message = str(err.value)
    assert f"triggerer (pid {triggerer}) exited with code -9" in message
    assert "triggerer.log" in message
    assert "Starting the triggerer" in message  # the tail of its log


def test_stop_leaves_no_process_behind(stack, client):
    """Runs last: stops the module's stack while a task is running."""
    run_id = client.trigger("stack_sleep", conf={"seconds": 600})
    client.wait_until(
        lambda: client.task_instance("stack_sleep", run_id, "sleep_long")["state"] == "running",
        timeout=120,
        interval=0.25,
        message="sleep_long running",
    )
    ti = client.task_instance("stack_sleep", run_id, "sleep_long")
    task_pid = ti["pid"]
    components = stack.pids()
    pids = stack.all_pids()
    assert {pid for c, pid in components.items() if c != "triggerer"} <= pids  # triggerer: killed above
    assert task_pid in pids  # the task process (own process group, same session) is tracked
    assert os.getpgid(task_pid) != components["scheduler"]  # ... although killpg(scheduler) misses it
    assert len(pids) > len(components)  # + LocalExecutor workers, the task supervisor and task process

    # sleep_long ignores SIGTERM (the task runner's handler only calls on_kill()), so the scheduler
    # waits for it (LocalExecutor.end) until stop() runs out of patience and SIGKILLs the session.
    t0 = time.monotonic()
    stack.stop(timeout=5)
    _record("stop_with_running_task", time.monotonic() - t0)

    def alive(pid: int) -> bool:  # a zombie (exited, not yet reaped by init) is not running
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    assert [p for p in pids if alive(p)] == []
    # nothing at all is left in the components' sessions (catches processes forked after the snapshot)
    sessions = set(components.values())
    in_sessions = []
    for pid in psutil.pids():
        try:
            if os.getsid(pid) in sessions and alive(pid):
                in_sessions.append(pid)
        except OSError:
            pass
    assert in_sessions == []
    assert not stack.running
    stack.stop()  # idempotent
