"""The lifecycle view and the drift reports in the real Airflow 3 api-server, through the project's plugin.

One stack for the module (``plugins/`` of the repository, a DAG folder with one approval DAG) on an
``MLOPS_HOME`` this test seeds the way the stages do: a champion and a newer challenger in MLflow,
a monitor run with its drift report in the store. Every request goes over HTTP to the api-server:
without a login it is refused (401, 403 with a bad token), with the JWT (header, or the UI's cookie)
it is served; a report id can only name a report.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from mlops_demo.airflow_stack.stack import AirflowStack
from tests.conftest import REPO, isolate_mlops_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

RUN_KEY = "monitor-20260105T000000-0123456789"
REPORT = "<html><body><h1>Data drift of the stack test</h1></body></html>"
APPROVAL_DAG = Path(__file__).parent / "dags" / "stack_approval.py"


def _seed(home: Path) -> dict:
    """A champion (v1), a challenger (v2) and a monitor run with its report, as the stages leave them."""
    from mlops_core.backends import backends_for
    from mlops_core.drift_reports import report_key
    from mlops_core.settings import load_settings
    from mlops_core.stages.monitor import REPORT_KEY_TAG
    from tests.core.conftest import register_toy_model, toy_frame

    settings = load_settings("dev")
    backends = backends_for(settings)
    registry, name = backends.registry, settings.registered_model_name
    data = toy_frame(60, seed=3)
    labels = (data["charges"] > data["charges"].median()).astype(int).to_numpy()
    v1 = register_toy_model(registry, name, data, labels, run_name="stack-train-1")
    registry.set_version_tags(name, v1, {"mlops.holdout_roc_auc": "0.8123"})
    registry.set_champion(name, v1)
    v2 = register_toy_model(registry, name, data, np.asarray(labels), run_name="stack-train-2")
    registry.set_version_tags(name, v2, {"mlops.holdout_roc_auc": "0.7001", "mlops.promotion_decision": "reject"})
    key = report_key(RUN_KEY)
    backends.store.put_bytes(key, REPORT.encode())
    page = home / "drift_report.html"
    page.write_text(REPORT)
    registry.log_artifact_run(
        f"monitor-{RUN_KEY}",
        {"drift_report.html": page},
        {"drift_share": 0.625, "roc_auc_drop": 0.01},
        {"mlops.env": "dev", "mlops.verdict": "drift", "mlops.drifted": "True", "mlops.decayed": "False"}
        | {"mlops.champion_version": v1, REPORT_KEY_TAG: key, "mlops.summary": "5 of 8 columns drifted <b>"},
    )
    outside = home / "outside.html"
    outside.write_text("a file outside the store")
    os.symlink(outside, backends.store.path(report_key("monitor-symlink")))
    return {"name": name, "champion": v1, "challenger": v2}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    base = tmp_path_factory.mktemp("lifecycle-ui")
    dags = base / "dags"
    dags.mkdir()
    shutil.copy(APPROVAL_DAG, dags / APPROVAL_DAG.name)
    with pytest.MonkeyPatch.context() as env:
        home = isolate_mlops_env(env, base / "mlops")
        home.mkdir(mode=0o700)
        seeded = _seed(home)
        s = AirflowStack(base / "airflow", dags, plugins_folder=REPO / "plugins", parallelism=2)
        s.extra_env.update({k: v for k, v in os.environ.items() if k.startswith("MLOPS_")})
        t0 = time.monotonic()
        try:
            s.start(timeout=600)  # generous: 20-60 s on an idle 2-CPU machine, minutes on a busy one
            print(f"\n[timing] lifecycle-ui stack start: {time.monotonic() - t0:.1f}s")
            s.client.wait_for_dags(["stack_approval"], timeout=120)
            s.seeded = seeded  # type: ignore[attr-defined]
            yield s
        finally:
            s.stop()


@pytest.fixture(scope="module")
def token(stack) -> str:
    resp = requests.post(
        f"{stack.base_url}/auth/token", json={"username": stack.username, "password": stack.password}, timeout=30
    )
    assert resp.status_code in (200, 201), resp.text
    return resp.json()["access_token"]


def _get(stack, path: str, token: str | None = None, headers: dict | None = None) -> requests.Response:
    sent = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}
    return requests.get(f"{stack.base_url}{path}", headers=sent, timeout=120, allow_redirects=False)


@pytest.mark.parametrize(
    "path", ["/mlops/lifecycle", "/mlops/api/lifecycle", f"/mlops/reports/dev/{RUN_KEY}", f"/mlops/reports/{RUN_KEY}"]
)
def test_every_route_needs_an_airflow_login(stack, path):
    assert _get(stack, path).status_code == 401
    assert _get(stack, path, token="not-a-jwt").status_code == 403
    assert requests.get(f"{stack.base_url}{path}", cookies={"_token": "forged"}, timeout=30).status_code == 403
    page = _get(stack, path, headers={"Accept": "text/html"})
    assert page.status_code == 401 and "Log in to Airflow" in page.text  # a browser is told where to log in


def test_the_lifecycle_page_shows_champion_challenger_verdict_and_report_link(stack, token):
    t0 = time.monotonic()
    resp = _get(stack, "/mlops/lifecycle", token)
    print(f"\n[timing] first /mlops/lifecycle (builds the app, imports MLflow): {time.monotonic() - t0:.1f}s")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/html")
    html = resp.text
    seeded = stack.seeded
    assert 'id="lifecycle"' in html
    for env in ("dev", "staging", "prod"):
        assert f'<section class="env" id="env-{env}"' in html
        assert f"<h2>{env}.churn in {env}</h2>" in html
    dev = html[html.index('id="env-dev"') : html.index('id="env-staging"')]
    assert f"v{seeded['champion']} (the champion)" in dev and "0.8123" in dev
    assert f"v{seeded['challenger']}, gate: reject" in dev and "0.7001" in dev
    assert f'<a class="drift-report" href="reports/dev/{RUN_KEY}">drift report</a>' in dev
    assert "5 of 8 columns drifted &lt;b&gt;" in dev  # escaped, never markup
    assert "nothing deployed" in dev
    t1 = time.monotonic()
    assert _get(stack, "/mlops/lifecycle", token).status_code == 200
    print(f"[timing] /mlops/lifecycle again: {time.monotonic() - t1:.2f}s")


def test_a_logged_in_browser_session_works_through_the_ui_cookie(stack, token):
    resp = requests.get(f"{stack.base_url}/mlops/lifecycle", cookies={"_token": token}, timeout=120)
    assert resp.status_code == 200 and 'id="lifecycle"' in resp.text


def test_the_json_view(stack, token):
    for path in ("/mlops/api/lifecycle", "/mlops/lifecycle?format=json"):
        resp = _get(stack, path, token)
        assert resp.status_code == 200, resp.text
        data = resp.json()
        dev = next(v for v in data["environments"] if v["env"] == "dev")
        assert dev["champion"]["version"] == stack.seeded["champion"]
        assert dev["challenger"]["version"] == stack.seeded["challenger"]
        assert dev["monitor"]["report_id"] == f"dev/{RUN_KEY}" and dev["monitor"]["drift_share"] == 0.625
        assert dev["errors"] == {}
        prod = next(v for v in data["environments"] if v["env"] == "prod")
        assert prod["champion"] is None and prod["monitor"] is None
    assert _get(stack, "/mlops/lifecycle?format=xml", token).status_code == 422


@pytest.mark.parametrize("path", [f"/mlops/reports/dev/{RUN_KEY}", f"/mlops/reports/{RUN_KEY}"])
def test_the_drift_report_is_served_sandboxed(stack, token, path):
    resp = _get(stack, path, token)
    assert resp.status_code == 200 and resp.text == REPORT
    assert resp.headers["content-security-policy"].startswith("sandbox")
    assert resp.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/mlops/reports/dev/monitor-20990101T000000-0000000000", 404),  # a valid id, no such report
        ("/mlops/reports/dev/monitor-symlink", 404),  # a symlink out of the store
        ("/mlops/reports/qa/" + RUN_KEY, 400),  # not an environment
        ("/mlops/reports/dev/" + RUN_KEY + ".html", 400),
        ("/mlops/reports/dev/..%2F..%2F..%2Fetc%2Fpasswd", 404),
        ("/mlops/reports/dev/%2Fetc%2Fpasswd", 404),
        ("/mlops/reports/..%2Fdev/" + RUN_KEY, 404),
        ("/mlops/reports/dev/%2e%2e", 400),
        ("/mlops/reports/dev/..", 404),
        ("/mlops/reports/dev%2F..%2F..%2F/" + RUN_KEY, 404),
        ("/mlops/reports/monitor-symlink", 404),  # by run key alone: the same rules
        ("/mlops/reports/monitor-20990101T000000-0000000000", 404),
        ("/mlops/reports/%2e%2e", 400),
        ("/mlops/reports/..%2F..%2Fetc%2Fpasswd", 404),
        ("/mlops/reports/%2Fetc%2Fpasswd", 404),
    ],
)
def test_a_report_id_can_only_name_a_report(stack, token, path, status):
    resp = _get(stack, path, token)
    assert resp.status_code == status, (path, resp.status_code, resp.text[:200])
    assert "a file outside the store" not in resp.text and "root:" not in resp.text


def test_pending_approvals_are_listed(stack, token):
    client = stack.client
    run_id = client.trigger("stack_approval")
    client.wait_until(lambda: client.pending_approvals("stack_approval", run_id), timeout=120, message="the approval")
    data = _get(stack, "/mlops/api/lifecycle", token).json()
    [pending] = [a for a in data["approvals"] if a["run_id"] == run_id]
    assert (pending["subject"], pending["dag_id"]) == ("Promote the stack test model?", "stack_approval")
    assert pending["env"] is None  # only the lifecycle's approval DAGs say which environment they decide
    assert "Promote the stack test model?" in _get(stack, "/mlops/lifecycle", token).text


def test_the_plugin_adds_the_app_and_a_menu_entry(stack):
    [plugin] = [p for p in stack.client.request("GET", "/plugins")["plugins"] if p["name"] == "mlops"]
    assert [(a["url_prefix"], a["name"]) for a in plugin["fastapi_apps"]] == [("/mlops", "MLOps lifecycle")]
    [view] = plugin["external_views"]
    assert (view["href"], view["url_route"], view["destination"]) == ("/mlops/lifecycle", "mlops-lifecycle", "nav")
    assert json.dumps(plugin["listeners"])  # the run-note listener is still there
