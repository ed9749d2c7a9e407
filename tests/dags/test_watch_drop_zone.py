"""The watch_drop_zone DAG's own tasks, run in order on a real drop zone with completion markers."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import yaml
from airflow.sdk.exceptions import TaskDeferred

from tests.conftest import DAGS

REPO_CONF = Path(__file__).resolve().parents[2] / "include" / "conf"


@pytest.fixture(scope="module")
def watch_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS / "watch_drop_zone.py"))
    assert bag.import_errors == {}
    return bag.dags["watch_drop_zone"]


def _old(path: Path, text: str = "a,b\n1,2\n") -> None:
    path.write_text(text)
    past = time.time() - 60
    os.utime(path, (past, past))


def test_a_watch_run_announces_counts_then_archives_the_markers(watch_dag, mlops_home, tmp_path, monkeypatch):
    from airflow.sdk.execution_time.context import OutletEventAccessors

    from mlops_airflow.assets import LANDED_FILES
    from mlops_airflow.sensors.files import FilesConsumedSensor
    from mlops_core.datasets import safe_key_part
    from mlops_core.dropzone import archive_dir_for, archive_file

    drop = tmp_path / "drop"
    drop.mkdir()
    conf = tmp_path / "conf"
    shutil.copytree(REPO_CONF, conf)
    raw = yaml.safe_load((conf / "dev.yaml").read_text())
    raw["dataset"].update(drop_zone=str(drop), arrival={"rule": "marker", "marker": "{name}.done"})
    (conf / "dev.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("MLOPS_CONF_DIR", str(conf))

    for name in ("a.csv", "B.CSV", "c.csv", "notes.txt", ".c.csv.part"):
        _old(drop / name)
    (drop / "a.csv.done").touch()
    (drop / "B.CSV.done").touch()
    context = {"params": {"env": "dev"}, "run_id": "manual__2026-01-02T00:00:00+00:00"}

    found = watch_dag.get_task("wait_for_files").execute(context)
    events = OutletEventAccessors()
    announced = watch_dag.get_task("announce").python_callable(found, outlet_events=events)
    extra = events[LANDED_FILES].extra
    assert [f["name"] for f in extra["files"]] == ["B.CSV", "a.csv"]
    assert extra["directory"] == str(drop) and extra["rule"] == "marker"
    assert extra["announced"] == 2
    assert extra["ignored"] == {"hidden": 1, "pattern": 1, "marker": 2, "waiting_marker": 1}
    assert [m["name"] for m in announced["markers"]] == ["B.CSV.done", "a.csv.done"]

    # ingest consumes the announced files
    for f in extra["files"]:
        archive_file(f["path"], archive_dir_for(drop, "asset_triggered__x"))
    assert FilesConsumedSensor(task_id="consumed", files=announced["files"]).poke(context)

    archive_markers = watch_dag.get_task("archive_markers")
    assert {"announce", "wait_until_consumed"} <= archive_markers.upstream_task_ids
    archived = archive_markers.python_callable(announced["markers"], **context)
    marker_archive = archive_dir_for(drop, safe_key_part(context["run_id"]))  # like ingest's archive
    assert archived == [str(marker_archive / "B.CSV.done"), str(marker_archive / "a.csv.done")]
    assert archive_markers.python_callable(announced["markers"], **context) == []  # a retry: nothing left to move
    assert sorted(p.name for p in drop.iterdir()) == [".c.csv.part", "c.csv", "notes.txt"]

    # the next run announces nothing twice; c.csv still waits for its marker
    with pytest.raises(TaskDeferred):
        watch_dag.get_task("wait_for_files").execute(context)
