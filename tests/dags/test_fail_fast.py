"""Errors a retry cannot fix fail the task at once instead of three retries later.

Every lifecycle task that reads settings is run for real (its Python callable, or the operator's
``execute``) with a settings file that cannot load; each must raise ``AirflowFailException``,
which Airflow never retries.
"""

from __future__ import annotations

import types

import pendulum
import pytest

from tests.conftest import DAGS

# (dag id, task id, extra keyword arguments of the task function)
TASKS = [
    ("ingest", "ingest_files", {}),
    ("ingest_sql", "ingest_table", {}),
    ("features", "materialize", {}),
    ("monitor", "check_drift", {}),
    ("train", "training_set", {}),
    ("train", "log_to_mlflow", {"training_set": {"key": "x"}, "job": {"job_name": "j"}}),
    ("train", "train_model", {}),
    ("evaluate_register", "evaluate", {}),
    ("evaluate_register", "reject_in_mirror", {}),
    ("deploy", "deploy_champion", {}),
    ("promote", "plan", {}),
]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


@pytest.fixture
def broken_settings(mlops_home, tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    conf.mkdir()
    for env in ("dev", "staging", "prod"):
        (conf / f"{env}.yaml").write_text(
            "dataset:\n  contract: include/contracts/churn.yaml\ntraining:\n  window_days: 0\n", encoding="utf-8"
        )
    monkeypatch.setenv("MLOPS_CONF_DIR", str(conf))


@pytest.mark.parametrize(("dag_id", "task_id", "kwargs"), TASKS, ids=lambda v: v if isinstance(v, str) else "")
def test_bad_settings_fail_without_retry(dagbag, broken_settings, dag_id, task_id, kwargs):
    from airflow.sdk.exceptions import AirflowFailException

    task = dagbag.dags[dag_id].get_task(task_id)
    params = {name: dagbag.dags[dag_id].params[name] for name in dagbag.dags[dag_id].params}
    context = {
        "params": {**params, "env": "dev", "from_env": "dev"},
        "run_id": "manual__fail_fast",
        "dag": types.SimpleNamespace(dag_id=dag_id),
        "logical_date": pendulum.datetime(2026, 2, 1, tz="UTC"),
        "triggering_asset_events": {},
        "outlet_events": {},
        "ti": None,
    }
    run = (lambda: task.python_callable(**kwargs, **context)) if hasattr(task, "python_callable") else None
    with pytest.raises(AirflowFailException, match=r"SettingsError: .*window_days"):
        run() if run else task.execute(context)
