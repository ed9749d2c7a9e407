"""NewFilesTrigger and NewFilesSensor against a real folder."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from mlops_airflow.sensors.files import NewFilesSensor
from mlops_airflow.triggers.files import NewFilesTrigger


def _old_file(path, text="a,b\n1,2\n"):
    path.write_text(text)
    past = time.time() - 60
    os.utime(path, (past, past))
    return path


def test_trigger_serialize_round_trip(tmp_path):
    trigger = NewFilesTrigger(directory=str(tmp_path), patterns=["*.csv"], poll_interval=0.5, min_age_seconds=1.0)
    classpath, kwargs = trigger.serialize()
    assert classpath == "mlops_airflow.triggers.files.NewFilesTrigger"
    rebuilt = NewFilesTrigger(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert all(isinstance(v, (str, float, int, list)) for v in kwargs.values())


def test_trigger_fires_when_a_complete_file_lands(tmp_path):
    async def scenario():
        trigger = NewFilesTrigger(directory=str(tmp_path), patterns=["*.csv"], poll_interval=0.05, min_age_seconds=0.2)
        gen = trigger.run()
        task = asyncio.ensure_future(gen.__anext__())
        await asyncio.sleep(0.2)
        assert not task.done(), "fired on an empty folder"
        (tmp_path / ".upload.tmp").write_text("partial")  # hidden temp names are never picked up
        (tmp_path / "notes.txt").write_text("x")  # nor names outside the patterns
        await asyncio.sleep(0.2)
        assert not task.done()
        (tmp_path / "day1.csv").write_text("a\n1\n")
        event = await asyncio.wait_for(task, timeout=5)
        return event.payload

    payload = asyncio.run(scenario())
    assert payload["status"] == "success"
    assert [f["name"] for f in payload["files"]] == ["day1.csv"]


def test_trigger_keeps_waiting_while_the_folder_is_missing(tmp_path):
    target = tmp_path / "not-a-dir"
    target.write_text("x")

    async def first_event():
        trigger = NewFilesTrigger(directory=str(target / "sub"), patterns=["*"], poll_interval=0.05)
        # A missing folder is "nothing yet", not an error: it may be created later.
        gen = trigger.run()
        task = asyncio.ensure_future(gen.__anext__())
        await asyncio.sleep(0.2)
        done = task.done()
        task.cancel()
        return done

    assert asyncio.run(first_event()) is False


def test_sensor_returns_ready_files_without_deferring(tmp_path):
    _old_file(tmp_path / "b.csv")
    _old_file(tmp_path / "a.parquet")
    sensor = NewFilesSensor(task_id="wait", directory=str(tmp_path), patterns=["*.csv", "*.parquet"])
    files = sensor.execute(context={})
    assert [f["name"] for f in files] == ["a.parquet", "b.csv"]


def test_sensor_defers_when_empty(tmp_path):
    from airflow.sdk.exceptions import TaskDeferred

    sensor = NewFilesSensor(task_id="wait", directory=str(tmp_path), patterns=["*.csv"], poke_interval=3, timeout=60)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context={})
    trigger = deferred.value.trigger
    assert isinstance(trigger, NewFilesTrigger)
    assert trigger.directory == str(tmp_path) and trigger.poll_interval == 3.0
    assert deferred.value.method_name == "execute_complete"


def test_sensor_execute_complete(tmp_path):
    sensor = NewFilesSensor(task_id="wait", directory=str(tmp_path), patterns=["*.csv"])
    files = [{"path": "/x/a.csv", "name": "a.csv", "size": 1, "mtime": 0.0}]
    assert sensor.execute_complete({}, {"status": "success", "files": files}) == files
    with pytest.raises(RuntimeError, match="cannot scan"):
        sensor.execute_complete({}, {"status": "error", "message": "cannot scan /x"})


def test_sensor_reads_the_drop_zone_from_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("MLOPS_DROP_ZONE", str(tmp_path / "landing"))
    (tmp_path / "landing").mkdir()
    _old_file(tmp_path / "landing" / "x.csv")
    sensor = NewFilesSensor(task_id="wait", mode="poke")
    result = sensor.poke(context={})
    assert result.is_done and result.xcom_value[0]["name"] == "x.csv"


def test_template_fields():
    assert set(NewFilesSensor.template_fields) == {"directory", "patterns"}
