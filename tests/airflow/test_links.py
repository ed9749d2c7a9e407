"""The extra links: on which tasks (as the api-server sees them), and the REST answer without empty ones.

What each link resolves to is tested in ``tests/core/test_ui_links.py``; that the links a real run
stores come back through the REST API is checked by the end-to-end lifecycle
(``tests/e2e/test_lifecycle_e2e.py::test_extra_links_open_what_each_task_recorded``).
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import DAGS

LINKED = {
    ("train", "log_to_mlflow"): "MLflow run",
    ("evaluate_register", "evaluate"): "Model version",
    ("evaluate_register", "promote"): "Model version",
    ("promote", "copy_champion"): "Model version",
    ("monitor", "check_drift"): "Drift report",
    ("deploy", "deploy_champion"): "Endpoint",
}


@pytest.fixture(scope="module")
def serialized_dags():
    """The DAGs as the api-server reads them: serialized by the dag-processor, deserialized."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    dagbag = DagBag(dag_folder=str(DAGS))
    assert dagbag.import_errors == {}
    return {dag_id: DagSerialization.from_dict(DagSerialization.to_dict(dag)) for dag_id, dag in dagbag.dags.items()}


def test_each_link_is_on_the_task_that_records_what_it_opens(serialized_dags):
    found = {}
    for dag_id, dag in serialized_dags.items():
        for task in dag.tasks:
            for name, link in task.operator_extra_link_dict.items():
                found[(dag_id, task.task_id)] = name
                assert link.xcom_key.startswith("_link_"), (dag_id, task.task_id, link.xcom_key)
    assert found == LINKED


def test_the_plugin_adds_no_global_link():
    """A global link is listed on every task, and is empty (null in the REST API) on most of them."""
    import importlib.util

    plugin_file = DAGS.parent / "plugins" / "mlops_plugin.py"
    spec = importlib.util.spec_from_file_location("mlops_plugin_under_test", plugin_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    plugin = module.MlopsPlugin
    assert not getattr(plugin, "global_operator_extra_links", [])
    assert [m["middleware"].__name__ for m in plugin.fastapi_root_middlewares] == ["HideEmptyExtraLinks"]


@pytest.fixture
def api():
    """A real FastAPI app answering the extra-links route as Airflow's does, behind the middleware."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from mlops_airflow.links import HideEmptyExtraLinks

    app = FastAPI()
    answers: dict[str, dict] = {}

    @app.get("/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links")
    def links(dag_id: str, run_id: str, task_id: str):
        return {"extra_links": answers[task_id], "total_entries": len(answers[task_id])}

    @app.get("/api/v2/dags/{dag_id}/other")
    def other(dag_id: str):
        return {"value": None}

    app.add_middleware(HideEmptyExtraLinks)
    with TestClient(app) as client:
        yield client, answers


def test_rest_answer_lists_only_links_with_a_url(api):
    client, answers = api
    answers["t"] = {"Drift report": None, "MLflow run": "http://mlflow:5000/#/experiments/1/runs/abc", "Endpoint": ""}
    resp = client.get("/api/v2/dags/d/dagRuns/manual__2026-01-01T00:00:00+00:00/taskInstances/t/links")
    assert resp.status_code == 200
    assert resp.json() == {
        "extra_links": {"MLflow run": "http://mlflow:5000/#/experiments/1/runs/abc"},
        "total_entries": 1,
    }
    assert int(resp.headers["content-length"]) == len(resp.content)


def test_rest_answer_without_any_link_is_empty_not_null(api):
    client, answers = api
    answers["pending"] = {"Model version": None}
    resp = client.get("/api/v2/dags/d/dagRuns/r/taskInstances/pending/links", params={"map_index": -1})
    assert resp.json() == {"extra_links": {}, "total_entries": 0}


def test_other_answers_pass_through_unchanged(api):
    client, answers = api
    assert client.get("/api/v2/dags/d/other").json() == {"value": None}
    answers["t"] = {"Endpoint": "http://127.0.0.1:5101"}
    body = client.get("/api/v2/dags/d/dagRuns/r/taskInstances/t/links").content
    assert json.loads(body) == {"extra_links": {"Endpoint": "http://127.0.0.1:5101"}, "total_entries": 1}
