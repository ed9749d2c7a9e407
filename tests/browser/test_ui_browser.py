"""The lifecycle driven from the Airflow 3 UI in a real browser (headless Chromium, selenium).

On the session's Airflow stack (``tests/conftest.py``), restarted with a fresh ``MLOPS_HOME`` of this
module, the tests sign in through the real login page (simple auth manager, the password the stack
generated) and then, as a user would:

* fill the ``train`` trigger form with non-default values and check, through the REST API, that the
  run got exactly those values as its conf (what the DAG's tasks read as ``params``);
* submit an invalid value (an algorithm outside the Param's enum, typed in the form's JSON) and see
  the UI show Airflow's refusal, with no run created; an out-of-range window is clamped by the form;
* approve a prod promotion on the task's Required Action page after checking that the candidate's
  held-out metric is shown there, and see the promotion run end successfully.

The staging champion being promoted is a toy model registered straight into this home's MLflow
registry (``tests/core/conftest.register_toy_model``, tagged with a held-out ``roc_auc``): the prod
approval is what is tested here; the full lifecycle that produces real champions is ``tests/e2e``.
Screenshots of every step: ``test-artifacts/browser/test_ui_browser/``.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import Browser

pytestmark = pytest.mark.e2e

HOLDOUT_ROC_AUC = "0.8731"  # the staging champion's held-out metric the approval page must show
TRAIN_VALUES = {"env": "staging", "algorithm": "random_forest", "window_days": 45, "compute_backend": "local"}
STEP_TIMEOUT = 300.0  # a task on a loaded two-core machine


class StagingChampion(threading.Thread):
    """Registers the toy staging champion in the background while the browser signs in (MLflow's
    first use of a registry costs tens of seconds of a loaded machine); :meth:`version` joins."""

    def __init__(self) -> None:
        super().__init__(name="staging-champion", daemon=True)
        self._version: str | None = None
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            from mlops_core.backends import model_registry
            from mlops_core.settings import load_settings
            from tests.core.conftest import register_toy_model, toy_frame

            settings = load_settings("staging")
            registry = model_registry(settings)
            data = toy_frame(60, seed=3)
            labels = (data["tenure"] > 50).astype(int)
            name = settings.registered_model_name
            version = register_toy_model(registry, name, data, labels, run_name="browser-staging-champion")
            registry.set_version_tags(
                name,
                version,
                {
                    f"mlops.holdout_{settings.evaluation.primary_metric}": HOLDOUT_ROC_AUC,
                    "mlops.dataset_versions": "churn@browser-test",
                },
            )
            registry.set_champion(name, version)
            self._version = version
        except BaseException as exc:  # handed to the test that needs the champion
            self._error = exc

    def version(self, timeout: float = STEP_TIMEOUT) -> str:
        self.join(timeout)
        if self._error is not None:
            raise self._error
        if self._version is None:
            raise TimeoutError(f"the staging champion was not registered after {timeout:.0f} s")
        return self._version


@pytest.fixture(scope="module")
def ui(tmp_path_factory, lifecycle_stack, browser) -> Iterator[dict[str, Any]]:
    """The stack on this module's ``MLOPS_HOME``, a signed-in browser, the staging champion on its way."""
    from mlops_demo.airflow_stack.stack_home import make_private_folder
    from tests.conftest import isolate_mlops_env

    home = tmp_path_factory.mktemp("browser") / "mlops"
    with pytest.MonkeyPatch.context() as mp:
        isolate_mlops_env(mp, home)
        env = {k: v for k, v in os.environ.items() if k.startswith("MLOPS_")}
        make_private_folder(home)
        champion = StagingChampion()  # while Airflow starts
        champion.start()
        stack = lifecycle_stack
        if stack.running:  # started by an earlier module: its components (the api-server too: the
            # lifecycle view reads this home's settings there) start again on this home
            stack.switch_env(env, timeout=STEP_TIMEOUT, with_api_server=True)
        else:
            stack.switch_env(env).start(timeout=STEP_TIMEOUT)
        client = stack.client
        client.wait_for_dags(["train", "promote", "deploy"], timeout=STEP_TIMEOUT)
        browser.base_url = stack.base_url
        browser.log_in(stack.username, stack.password)
        try:
            yield {"stack": stack, "client": client, "champion": champion, "home": home}
        finally:
            champion.join(STEP_TIMEOUT)
            from mlops_core.serving import LocalModelServer

            LocalModelServer.stop_all(home / "serving")


def _open_trigger_form(browser: Browser, dag_id: str) -> Any:
    browser.open(f"/dags/{dag_id}")
    button = browser.find("//button[@data-testid='trigger-dag-button']", f"{dag_id}'s Trigger button", clickable=True)
    browser.click(button)
    return browser.find("//*[@role='dialog' and @data-state='open']", "the trigger form")


def _expand(browser: Browser, form: Any, section: str) -> None:
    """Open a section of the form (an accordion: opening one closes the other)."""
    button = form.find_element("xpath", f".//button[contains(@id, ':trigger:') and normalize-space()='{section}']")
    if button.get_attribute("aria-expanded") != "true":
        browser.click(button)
    browser.wait(lambda _: button.get_attribute("aria-expanded") == "true", f"the form's {section} section")


def _choose(browser: Browser, form: Any, param: str, value: str) -> None:
    """Pick ``value`` in the select of ``param`` (a react-select: type to filter, Enter to choose)."""
    from selenium.webdriver.common.keys import Keys

    hidden = form.find_element("xpath", f".//input[@type='hidden' and @name='element_{param}']")
    box = hidden.find_element("xpath", "./ancestor::div[.//input[@role='combobox']][1]//input[@role='combobox']")
    browser.wait(lambda _: box.is_displayed(), f"the {param} field")
    browser.click(box)
    box.send_keys(value)
    box.send_keys(Keys.ENTER)
    browser.wait(lambda _: hidden.get_attribute("value") == value, f"{param} = {value} in the form")


def _set_number(form: Any, param: str, value: int) -> Any:
    from selenium.webdriver.common.keys import Keys

    field = form.find_element("xpath", f".//input[@name='element_{param}']")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(str(value), Keys.TAB)  # the form reads (and clamps) the number when it loses focus
    return field


def _replace_conf_json(browser: Browser, form: Any, conf: dict[str, Any]) -> None:
    """Replace the text of the form's Configuration JSON editor (Monaco) with ``conf``.

    Typed key by key, Monaco completes brackets and quotes; the DevTools' insertText puts the text
    in as one input, like a paste."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    editor = form.find_element("xpath", ".//div[contains(@class, 'monaco-editor')]")
    browser.click(editor)
    ActionChains(browser.driver).key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL).send_keys(
        Keys.DELETE
    ).perform()
    browser.driver.execute_cdp_cmd("Input.insertText", {"text": json.dumps(conf)})


def _run_ids(client, dag_id: str) -> set[str]:
    return {r["dag_run_id"] for r in client.runs(dag_id)}


def test_train_form_refuses_an_invalid_value_and_triggers_the_values_set(ui, browser):
    client = ui["client"]
    run_id = f"browser__{uuid.uuid4().hex[:12]}"
    before = _run_ids(client, "train")

    form = _open_trigger_form(browser, "train")
    _expand(browser, form, "Advanced Options")
    form.find_element("xpath", ".//input[@name='dagRunId']").send_keys(run_id)

    # An algorithm outside the Param's enum, in the conf JSON: Airflow refuses it, the form says why.
    _replace_conf_json(browser, form, {**TRAIN_VALUES, "algorithm": "xgboost"})
    browser.click(form.find_element("xpath", ".//button[normalize-space()='Trigger']"))
    refusal = browser.find(
        "//*[@role='dialog' and @data-state='open']//*[contains(., 'Invalid input for param algorithm')]",
        "the form to show the refusal",
    )
    browser.screenshot("train-invalid-algorithm-refused")
    assert "xgboost" in refusal.text
    assert _run_ids(client, "train") == before, "a refused trigger must create no run"
    assert "/runs/" not in browser.driver.current_url

    # The same form, filled through its fields. An out-of-range window is clamped to the Param's maximum.
    _expand(browser, form, "Run Parameters")
    _choose(browser, form, "env", TRAIN_VALUES["env"])
    _choose(browser, form, "algorithm", TRAIN_VALUES["algorithm"])
    _choose(browser, form, "compute_backend", TRAIN_VALUES["compute_backend"])
    window = _set_number(form, "window_days", 5000)
    browser.wait(lambda _: window.get_attribute("value") == "3650", "the window to be clamped to its maximum")
    browser.screenshot("train-window-clamped")
    _set_number(form, "window_days", TRAIN_VALUES["window_days"])
    browser.wait(lambda _: window.get_attribute("value") == str(TRAIN_VALUES["window_days"]), "the window set")
    browser.screenshot("train-form-filled")
    browser.click(form.find_element("xpath", ".//button[normalize-space()='Trigger']"))
    browser.wait(lambda d: f"/dags/train/runs/{run_id}" in d.current_url, "the new run's page")
    browser.screenshot("train-run-page")

    run = client.run("train", run_id)
    assert run["run_type"] == "manual"
    assert run["conf"] == TRAIN_VALUES
    assert _run_ids(client, "train") == before | {run_id}
    # The run needs a feature store this home does not have (tests/e2e trains for real): it ends at
    # its first task, and must not be left to run into the next user of the shared stack.
    client.wait_for_run("train", run_id, timeout=STEP_TIMEOUT, raise_on_failure=False)


def test_prod_promotion_is_approved_on_the_required_action_page(ui, browser):
    client = ui["client"]
    version = ui["champion"].version()
    client.pause("deploy")  # the new prod champion is not deployed here (tests/e2e deploys it)
    try:
        # a run id of plain characters: the page's link to this run's approval carries it (an earlier
        # lifecycle on the shared stack may have answered an approval with the same subject)
        run_id = f"browser_promote_{uuid.uuid4().hex[:12]}"
        client.trigger("promote", conf={"from_env": "staging"}, run_id=run_id)
        client.wait_until(
            lambda: (
                client.task_instance("promote", run_id, "approve_promotion")["state"] == "awaiting_input"
                and client.pending_approvals("promote", run_id)
            ),
            timeout=STEP_TIMEOUT,
            interval=2,
            message=f"the approval request of promote/{run_id}",
        )

        browser.open("/required_actions")
        subject = f"Promote staging.churn version {version} to prod?"
        link = f"//a[normalize-space()='{subject}' and contains(@href, '/runs/{run_id}/')]"
        browser.click(browser.find(link, "this run's pending approval", clickable=True))
        approve = browser.find("//button[normalize-space()='Approve']", "the Approve button", clickable=True)
        body = browser.text()
        browser.screenshot("promotion-approval")
        assert "roc_auc" in body, "the approval page must name the metric"
        assert HOLDOUT_ROC_AUC[:5] in body, "the approval page must show the candidate's held-out metric"
        assert "prod" in body and "staging.churn" in body

        browser.click(approve)
        browser.find("//*[contains(text(), 'Response received at') and contains(., 'admin')]", "the recorded answer")
        browser.screenshot("promotion-approved")
        answer = client.hitl_detail("promote", run_id, "approve_promotion")
        assert answer["chosen_options"] == ["Approve"]
        assert answer["responded_by_user"]["name"] == ui["stack"].username
        assert client.wait_for_run("promote", run_id, timeout=STEP_TIMEOUT) == "success"
        champion = client.xcom("promote", run_id, "copy_champion")
        assert champion["model_name"] == "prod.churn"
        assert champion["approved_by"]
    finally:
        # The champion event queued for deploy is this test's, not the next user's: drop it, then unpause.
        client.request("DELETE", "/dags/deploy/assets/queuedEvents", ok=(200, 204, 404))
        client.unpause("deploy")


MONITOR_RUN_KEY = "monitor-20260105T000000-browser0001"
REPORT_HEADING = "Data drift seen by the browser test"


def _seed_monitor_run() -> None:
    """A dev monitor run with its drift report, as the monitor stage leaves them (a drift verdict)."""
    from mlops_core.backends import backends_for
    from mlops_core.drift_reports import report_key
    from mlops_core.settings import load_settings
    from mlops_core.stages.monitor import REPORT_KEY_TAG

    settings = load_settings("dev")
    backends = backends_for(settings)
    key = report_key(MONITOR_RUN_KEY)
    page = f"<html><body><h1>{REPORT_HEADING}</h1></body></html>"
    backends.store.put_bytes(key, page.encode())
    local = settings.home / "browser-drift-report.html"
    local.write_text(page)
    tags = {"mlops.env": "dev", "mlops.verdict": "drift", "mlops.drifted": "True", "mlops.decayed": "False"}
    backends.registry.log_artifact_run(
        MONITOR_RUN_KEY,
        {"drift_report.html": local},
        {"drift_share": 0.625, "roc_auc_drop": 0.01},
        tags | {REPORT_KEY_TAG: key, "mlops.summary": "5 of 8 columns drifted"},
    )


def test_lifecycle_view_shows_the_champions_and_opens_the_drift_report(ui, browser):
    """The plugin's ``/mlops`` app (lifecycle view, drift reports by id) behind Airflow's login."""
    version = ui["champion"].version()
    _seed_monitor_run()

    browser.open("/mlops/lifecycle")
    view = browser.find("//main[@id='lifecycle']", "the lifecycle view")
    staging = view.find_element("xpath", ".//section[@id='env-staging']")
    assert "staging.churn in staging" in staging.text
    assert f"v{version} (the champion)" in staging.text
    assert "held-out roc_auc" in staging.text
    dev = view.find_element("xpath", ".//section[@id='env-dev']")
    assert "drift" in dev.find_element("xpath", ".//*[contains(@class, 'monitor-verdict')]").text
    browser.screenshot("lifecycle-view")

    link = dev.find_element("xpath", ".//a[normalize-space()='drift report']")
    assert link.get_attribute("href").endswith(f"/mlops/reports/dev/{MONITOR_RUN_KEY}")
    browser.click(link)
    browser.find(f"//h1[normalize-space()='{REPORT_HEADING}']", "the drift report")
    assert browser.driver.current_url.endswith(f"/mlops/reports/dev/{MONITOR_RUN_KEY}")
    browser.screenshot("drift-report")
