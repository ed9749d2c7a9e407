"""Every DAG file imports cleanly and follows the project's conventions."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import DAGS

DAG_FILES = sorted(p for p in DAGS.glob("*.py") if not p.name.startswith("_"))
EXPECTED = {
    "watch_drop_zone",
    "ingest",
    "ingest_sql",
    "features",
    "monitor",
    "train",
    "evaluate_register",
    "deploy",
    "promote",
    "alerts",
}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}, dagbag.import_errors


def test_every_lifecycle_dag_is_loaded(dagbag):
    assert set(dagbag.dag_ids) == EXPECTED


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_each_file_defines_one_dag_named_after_it(dagbag, path):
    defined_here = [dag_id for dag_id, dag in dagbag.dags.items() if dag.fileloc == str(path)]
    assert defined_here == [path.stem]


def test_conventions(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.doc_md and len(dag.doc_md) > 80, f"{dag_id}: doc_md missing"
        assert "mlops" in dag.tags, f"{dag_id}: tags"
        assert dag.catchup is False, f"{dag_id}: catchup"
        for task in dag.tasks:
            assert task.owner == "mlops", f"{dag_id}.{task.task_id}: owner"
            if task.task_type != "ApprovalOperator":
                assert task.retries >= 1, f"{dag_id}.{task.task_id}: retries"
                assert task.retry_exponential_backoff, f"{dag_id}.{task.task_id}: backoff"
            timeout = task.execution_timeout
            assert timeout is None or timeout <= timedelta(hours=1), f"{dag_id}.{task.task_id}: timeout"
            if task.task_type not in ("NewFilesSensor", "FilesConsumedSensor", "ApprovalOperator"):
                assert timeout is not None, f"{dag_id}.{task.task_id}: execution_timeout"


def test_every_dag_alerts_when_a_run_fails(dagbag):
    """One DAG-level failure callback, the same everywhere (mlops_airflow.dag_defaults.on_failed_run)."""
    from mlops_airflow.dag_defaults import on_failed_run

    for dag_id, dag in dagbag.dags.items():
        assert dag.on_failure_callback is on_failed_run, f"{dag_id}: on_failure_callback"
        assert dag.has_on_failure_callback, dag_id


def test_every_dag_has_a_one_line_description(dagbag):
    """What the DAG list shows under each DAG's name (``doc_md`` is for the DAG's own page)."""
    for dag_id, dag in dagbag.dags.items():
        description = dag.description or ""
        assert 20 <= len(description) <= 110, f"{dag_id}: description {description!r}"
        assert "\n" not in description and description.endswith("."), f"{dag_id}: one sentence on one line"


def test_optional_enum_params_label_their_empty_choice(dagbag):
    """The form's dropdown shows "use the settings (...)" for None, not ``null``."""
    checked = 0
    for dag_id, dag in dagbag.dags.items():
        for name in dag.params:
            schema = dag.params.get_param(name).schema
            if None not in (schema.get("enum") or []):
                continue
            checked += 1
            label = (schema.get("values_display") or {}).get("null", "")
            assert label.startswith("use the settings"), (
                f"{dag_id}.{name}: values_display {schema.get('values_display')}"
            )
    assert checked >= 2  # train's algorithm and compute backend


def test_params_render_a_real_form(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.params, f"{dag_id}: no Params"
        for name, param in dag.params.items():
            param = dag.params.get_param(name)
            assert param.schema.get("type"), f"{dag_id}.{name}: type"
            assert param.schema.get("title") and param.description, f"{dag_id}.{name}: title/description"


def test_no_cycles_and_assets_chain(dagbag):
    def asset_names(condition) -> set[str]:
        if condition is None:
            return set()
        if hasattr(condition, "objects"):
            return set().union(*(asset_names(o) for o in condition.objects))
        return {condition.name}

    for dag in dagbag.dags.values():
        dag.check_cycle()  # raises on a cycle
    consumers = {
        dag_id: asset_names(getattr(dag.timetable, "asset_condition", None)) for dag_id, dag in dagbag.dags.items()
    }
    from mlops_airflow.assets import ALIAS_TARGETS

    producers: dict[str, set[str]] = {}
    for dag_id, dag in dagbag.dags.items():
        for task in dag.tasks:
            for outlet in task.outlets:
                for asset in ALIAS_TARGETS.get(outlet.name, (outlet,)):
                    producers.setdefault(asset.name, set()).add(dag_id)
    # Every asset a DAG waits for is produced by some DAG.
    for dag_id, names in consumers.items():
        for name in names:
            assert producers.get(name), f"{dag_id} waits for {name}, which nobody produces"
    assert consumers["ingest"] == {"landed_files"}
    assert consumers["features"] == {"dataset_version"}
    assert consumers["train"] == {"retrain_requested"}
    assert producers["champion_model"] == {"evaluate_register", "promote"}
    assert producers["dataset_version"] == {"ingest", "ingest_sql"}
    assert producers["retrain_requested"] == {"monitor"}
