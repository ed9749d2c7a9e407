"""The whole lifecycle through the real Airflow 3 scheduler, as ``make demo`` runs it.

One run of :class:`mlops_demo.run.LifecycleDemo` on a temporary home (real Feast/MLflow/Evidently,
MLflow scoring servers), on the session's Airflow stack (``tests/conftest.py``: scheduler,
dag-processor, triggerer and api-server on loopback, SQLite metadata DB; the demo's client sees
only this pass's runs). The stack stays up while the tests run; each test checks one outcome where
it lives (Airflow's REST API, the dataset store, the MLflow registry, the scoring server), not the
demo's own account of it. Expected numbers come from how the demo data is generated.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

pytestmark = pytest.mark.e2e

ROWS = 600  # rows per generated day
DAYS = 6  # 0-2 initial, 3 no drift, 4-5 drift
BAD_ROWS_FILE_ROWS = 60  # demo_data._BAD_ROWS_DEFAULT: 3 of them are bad
MLFLOW_UI = "http://127.0.0.1:5000"  # not started: the links only have to point at it
LIFECYCLE = ("watch_drop_zone", "ingest", "features", "monitor", "train", "evaluate_register", "deploy", "promote")


@pytest.fixture(scope="module")
def demo(tmp_path_factory, lifecycle_stack):
    from mlops_demo.run import DemoOptions, LifecycleDemo, print_summary

    saved = dict(os.environ)  # the demo points this process at its own home: undo that afterwards
    for name in ("MLOPS_HOME", "MLOPS_ENV", "MLOPS_DROP_ZONE", "MLOPS_CONTRACT", "MLFLOW_TRACKING_URI"):
        os.environ.pop(name, None)
    runner = LifecycleDemo(
        DemoOptions(
            home=tmp_path_factory.mktemp("e2e") / "demo",
            rows=ROWS,
            phase_timeout=480,
            stop_when_done=False,
            extra_env={"MLFLOW_UI_URL": MLFLOW_UI},  # what the extra links and approval bodies point at
        ),
        stack=lifecycle_stack,
    )
    try:
        result = runner.run()
        print_summary(result)
        assert result.ok, result.failures
        yield runner
    finally:
        runner.stop()
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def client(demo):
    return demo.client


@pytest.fixture(scope="module")
def store(demo):
    from mlops_core.backends import object_store
    from mlops_core.datasets import DatasetStore
    from mlops_core.settings import load_settings

    return DatasetStore(object_store(load_settings("dev")), "churn")


def _registry(env: str):
    from mlops_core.backends import model_registry
    from mlops_core.settings import load_settings

    settings = load_settings(env)
    return settings, model_registry(settings)


def test_no_lifecycle_run_failed(client):
    for dag_id in LIFECYCLE:
        failed = client.runs(dag_id, state=["failed"])
        assert not failed, f"{dag_id}: {[r['dag_run_id'] for r in failed]}"


def test_every_row_is_accepted_or_quarantined_once(store):
    versions = store.list_versions()
    frames = [store.read_version(v["version_id"], columns=["_row_key"]) for v in versions]
    keys = [k for f in frames for k in f["_row_key"]]
    assert len(keys) == len(set(keys)), "a row is stored in two versions"
    quarantined_rows = sum(r.get("rows_rejected", 0) for r in store.list_quarantine())
    # Six good days, plus the good rows of the bad-rows file; its three bad rows are quarantined.
    assert len(keys) == DAYS * ROWS + BAD_ROWS_FILE_ROWS - 3
    assert quarantined_rows == 3


def test_bad_and_duplicate_files_are_quarantined_with_reasons(store):
    reasons = " ".join(json.dumps(r) for r in store.list_quarantine())
    assert "missing_columns" in reasons
    assert "duplicate_file" in reasons


def test_ingest_runs_say_what_happened_in_their_notes(client):
    notes = [r.get("note") or "" for r in client.runs("ingest", state=["success"])]
    assert all(notes), notes
    assert any("1 quarantined (missing_columns)" in n for n in notes), notes
    assert any("duplicate delivery" in n for n in notes), notes


def test_quarantine_events_carry_the_files(client):
    events = client.asset_events("quarantine")
    files = [f["file"] for e in events for f in (e.get("extra") or {}).get("files_quarantined", [])]
    assert any(name.endswith("_missing_column.csv") for name in files), files


def test_monitor_retrained_only_without_champion_and_on_drift(client):
    verdicts = [client.xcom("monitor", r["dag_run_id"], "check_drift") for r in client.runs("monitor")]
    reasons = Counter(v["reason"] for v in verdicts)
    assert reasons["no_champion"] == 1
    assert reasons["none"] >= 1  # the no-drift day
    assert reasons["drift"] + reasons["decay"] >= 2  # the decay phase, the drifted days
    # first training, the decay phase's, the drifted days': nothing else asked for a training
    assert len(client.runs("train", state=["success"])) == sum(1 for v in verdicts if v["retrain"]) == 3


def test_delayed_labels_show_the_champions_decay(demo):
    """The decay phase: predictions served (and captured) now, their labels delivered later; the
    monitor joins them and finds the champion's live quality far below its evaluation."""
    phase = demo.result.phases["decay"]
    live = phase["live_decay"]
    assert live["metric"] == "roc_auc" and live["pairs"] >= 500, live
    assert live["decayed"] is True and live["live"] < live["baseline"] - 0.05, live
    # the verdict retrains (prediction drift, checked first, may name the reason)
    assert phase["reason"] in ("decay", "drift"), phase


def test_champion_has_lineage_to_stored_versions(store):
    _, registry = _registry("dev")
    champion = registry.champion("dev.churn")
    assert champion is not None and int(champion.version) >= 2  # retrained after drift
    lineage = set(champion.tags["mlops.dataset_versions"].split(","))
    assert lineage and lineage <= {v["version_id"] for v in store.list_versions()}


def test_served_model_is_the_champion_and_answers(demo):
    import requests

    from mlops_core.backends import local_model_server
    from mlops_core.demo_data import generate_day
    from mlops_core.training.model import prepare_features

    for env in ("dev", "staging", "prod"):
        settings, registry = _registry(env)
        champion = registry.champion(settings.registered_model_name)
        live = local_model_server(settings).current()
        assert live and live["alive"], env
        assert str(live["model_version"]) == str(champion.version), env
    settings, _ = _registry("dev")
    rows = prepare_features(generate_day(9, rows=3, seed=99), settings.load_contract())
    payload = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
    url = f"http://{settings.serving.host}:{settings.serving.port}/invocations"
    answer = requests.post(url, json=payload, timeout=30)
    assert answer.status_code == 200, answer.text
    assert set(answer.json()["predictions"]) <= {0, 1}


def test_rerun_and_duplicate_delivery_add_nothing(demo, client, store):
    rerun = demo.result.phases["re-run"]
    assert rerun["versions_before"] == [(v["version_id"], v["row_count"]) for v in store.list_versions()]
    first = client.runs("ingest")[0]
    ti = client.task_instance("ingest", first["dag_run_id"], "ingest_files")
    assert ti["try_number"] >= 2 and ti["state"] == "success"  # cleared and run again


def test_prod_champion_came_through_an_approval(client):
    settings, registry = _registry("prod")
    champion = registry.champion(settings.registered_model_name)
    assert champion.tags.get("mlops.promoted_from", "").startswith("staging.churn/")
    answered = [
        h
        for r in client.runs("promote", state=["success"])
        for h in client.request("GET", f"/dags/promote/dagRuns/{r['dag_run_id']}/hitlDetails").get("hitl_details", [])
    ]
    assert any(h.get("chosen_options") == ["Approve"] for h in answered), answered


def _wait_state(client, dag_id: str, run_id: str) -> str:
    return client.wait_for_run(dag_id, run_id, timeout=300, raise_on_failure=False)


def _prod_champion() -> str | None:
    settings, registry = _registry("prod")
    champion = registry.champion(settings.registered_model_name)
    return champion.version if champion else None


def test_a_dev_run_offered_to_prod_is_refused_at_once(client):
    before = _prod_champion()
    _, dev_registry = _registry("dev")
    dev_run = dev_registry.champion("dev.churn").run_id
    run_id = client.trigger("evaluate_register", conf={"env": "prod", "mlflow_run_id": dev_run})
    assert _wait_state(client, "evaluate_register", run_id) == "failed"
    ti = client.task_instance("evaluate_register", run_id, "evaluate")
    assert ti["try_number"] == 1, "a refusal a retry cannot change must not be retried"
    assert "trained in dev, not prod" in client.task_log("evaluate_register", run_id, "evaluate")
    assert _prod_champion() == before


def test_a_posted_asset_event_cannot_move_or_serve_another_prod_model(client, demo):
    from mlops_core.backends import local_model_server

    before = _prod_champion()
    settings, _ = _registry("prod")
    live_before = local_model_server(settings).current()["model_version"]
    ids = {a["name"]: a["id"] for a in client.assets()}
    deploys = len(client.runs("deploy"))
    client.request(
        "POST",
        "/assets/events",
        json_body={"asset_id": ids["champion_model"], "extra": {"env": "prod", "version": "1"}},
    )
    client.wait_until(lambda: len(client.runs("deploy")) > deploys, timeout=120, message="the deploy run")
    newest = client.runs("deploy")[-1]["dag_run_id"]
    _wait_state(client, "deploy", newest)
    assert _prod_champion() == before
    assert local_model_server(settings).current()["model_version"] == live_before


def test_a_promotion_to_prod_waits_for_the_approval_and_a_rejection_changes_nothing(demo, client):
    before = _prod_champion()
    run_id = client.trigger("promote", conf={"from_env": "staging"})
    client.wait_until(
        lambda: client.task_instance("promote", run_id, "approve_promotion")["state"] == "awaiting_input",
        timeout=180,
        message="the approval request",
    )
    detail = client.hitl_detail("promote", run_id, "approve_promotion")
    body = detail.get("body") or ""
    # The approver sees the candidate's scores next to the prod champion's, its data and links.
    assert "held-out" in body and f"in place of version {before}." in body, body
    assert "| metric | candidate (staging v" in body and f"| prod champion (v{before}) | change |" in body, body
    assert any(line.startswith("| **roc_auc** (gate) | 0.") for line in body.splitlines()), body
    assert "**Trained on** dataset versions `" in body, body
    assert f"[open in MLflow]({MLFLOW_UI}/#/experiments/" in body, body
    assert f"({MLFLOW_UI}/#/models/prod.churn/versions/{before})" in body, body
    assert _prod_champion() == before  # parked: nothing moved while waiting
    assert demo.answer_approval("promote", run_id, "approve_promotion", approve=False) == "success"
    assert client.task_instance("promote", run_id, "copy_champion")["state"] == "skipped"
    assert _prod_champion() == before


def _links(client, dag_id: str, run_id: str, task_id: str) -> dict:
    answer = client.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links")
    assert answer["total_entries"] == len(answer["extra_links"]), answer
    return answer["extra_links"]


def test_extra_links_open_what_each_task_recorded(client):
    """Each link opens the exact thing its task recorded; a link with nothing behind it is absent,
    never ``null`` (which the official apache-airflow-client refuses)."""
    from mlops_core.ui_links import drift_report_id

    seen: Counter = Counter()
    for dag_id in LIFECYCLE:
        for run in client.runs(dag_id):
            run_id = run["dag_run_id"]
            for ti in client.task_instances(dag_id, run_id):
                links = _links(client, dag_id, run_id, ti["task_id"])
                assert all(isinstance(url, str) and url for url in links.values()), (dag_id, ti["task_id"], links)
                seen.update(links.keys())
                record = client.xcom(dag_id, run_id, ti["task_id"]) if links else None
                for name, url in links.items():
                    if name == "MLflow run":
                        exp, run_id_ = record["mlflow_experiment_id"], record["mlflow_run_id"]
                        assert url == f"{MLFLOW_UI}/#/experiments/{exp}/runs/{run_id_}"
                    elif name == "Model version":
                        assert url == f"{MLFLOW_UI}/#/models/{record['model_name']}/versions/{record['version']}"
                    elif name == "Drift report":
                        assert url == f"{client.base_url}/mlops/reports/{drift_report_id(record['report'])}"
                    elif name == "Endpoint":
                        assert url == record["deployments"][-1]["url"].rstrip("/")
                    else:
                        raise AssertionError(f"{dag_id}.{ti['task_id']}: unexpected link {name}: {url}")
    assert seen["MLflow run"] == len(client.runs("train", state=["success"]))  # one per training
    assert seen["Model version"] >= 4  # registrations, promotions to champion, copies to staging and prod
    assert seen["Drift report"] >= 2  # every monitor run with a champion to compare with
    assert seen["Endpoint"] >= 3  # dev, staging, prod


def test_verdicts_that_emit_no_event_are_in_the_run_notes(client):
    """No drift (monitor) and a kept champion (the gate) emit no event: the run's note says so."""
    monitor_notes = [r.get("note") or "" for r in client.runs("monitor", state=["success"])]
    assert all(monitor_notes), monitor_notes
    assert any(n.startswith("no retraining: ") for n in monitor_notes), monitor_notes
    evaluation_notes = [r.get("note") or "" for r in client.runs("evaluate_register", state=["success"])]
    assert all(evaluation_notes), evaluation_notes
