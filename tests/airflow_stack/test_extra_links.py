"""The project's extra links through a real Airflow 3.3 stack and its REST API.

A real scheduler runs the tasks (the worker resolves each link when its task ends and stores it as
an XCom) and the real api-server answers ``GET .../taskInstances/{task_id}/links`` with the
project's plugin loaded: a link opens the exact thing its task recorded, and a link with nothing
behind it (a failed task, a cloud endpoint without a URL) is absent, never ``null``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_demo.airflow_stack.stack import AirflowStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
MLFLOW_UI = "http://127.0.0.1:5000"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("links") / "airflow"
    s = AirflowStack(
        home,
        Path(__file__).parent / "links_dags",
        plugins_folder=REPO / "plugins",
        parallelism=2,
        extra_env={"MLFLOW_UI_URL": MLFLOW_UI, "MLOPS_HOME": str(home.parent / "mlops")},
    )
    try:
        s.start(timeout=400)
        s.client.wait_for_dags(["stack_links"], timeout=240)
        yield s
    finally:
        s.stop()


def _links(client, run_id: str, task_id: str) -> dict:
    answer = client.request("GET", f"/dags/stack_links/dagRuns/{run_id}/taskInstances/{task_id}/links")
    assert answer["total_entries"] == len(answer["extra_links"]), answer
    assert None not in answer["extra_links"].values(), answer
    return answer["extra_links"]


def test_links_open_what_the_task_recorded_and_empty_ones_are_absent(stack):
    client = stack.client
    run_id = client.trigger("stack_links")

    pending = _links(client, run_id, "register")  # not run yet: nothing to point at
    assert pending in ({}, {"Model version": f"{MLFLOW_UI}/#/models/dev.churn/versions/3"})

    assert client.wait_for_run("stack_links", run_id, timeout=400, raise_on_failure=False) == "failed"
    states = {t["task_id"]: t["state"] for t in client.task_instances("stack_links", run_id)}
    assert states == {
        "register": "success",
        "train": "success",
        "monitor": "success",
        "deploy_by_name": "success",
        "explode": "failed",
    }
    assert _links(client, run_id, "register") == {"Model version": f"{MLFLOW_UI}/#/models/dev.churn/versions/3"}
    assert _links(client, run_id, "train") == {"MLflow run": f"{MLFLOW_UI}/#/experiments/1/runs/abc123"}
    assert _links(client, run_id, "monitor") == {"Drift report": f"{stack.base_url}/mlops/reports/monitor-r1"}
    assert _links(client, run_id, "deploy_by_name") == {}  # a name is not a URL: no link
    assert _links(client, run_id, "explode") == {}  # failed before recording anything: no link, no null
