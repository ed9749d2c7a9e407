"""NewFilesTrigger and NewFilesSensor against real folders, files and links, with real settings files."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml
from airflow.sdk.exceptions import TaskDeferred

from mlops_airflow.sensors.files import NewFilesSensor
from mlops_airflow.triggers.files import NewFilesTrigger

REPO_CONF = Path(__file__).resolve().parents[2] / "include" / "conf"
DEV = {"params": {"env": "dev"}}


def _old_file(path: Path, text: str = "a,b\n1,2\n") -> Path:
    path.write_text(text)
    past = time.time() - 60
    os.utime(path, (past, past))
    return path


def _first_event(trigger: NewFilesTrigger, timeout: float = 5.0) -> dict:
    async def run() -> dict:
        event = await asyncio.wait_for(trigger.run().__anext__(), timeout=timeout)
        return event.payload

    return asyncio.run(run())


def _rebuilt(trigger: NewFilesTrigger) -> NewFilesTrigger:
    """What the triggerer does: the serialized kwargs (stored as JSON) back into a trigger."""
    from airflow.sdk.module_loading import import_string

    classpath, kwargs = trigger.serialize()
    return import_string(classpath)(**json.loads(json.dumps(kwargs)))


def _conf_dir(tmp_path: Path, env: str, **dataset: object) -> Path:
    """A copy of the repository's settings files with some ``dataset`` keys of ``env`` changed."""
    conf = tmp_path / "conf"
    shutil.copytree(REPO_CONF, conf)
    raw = yaml.safe_load((conf / f"{env}.yaml").read_text())
    raw["dataset"].update(dataset)
    (conf / f"{env}.yaml").write_text(yaml.safe_dump(raw))
    return conf


# ---- trigger ----------------------------------------------------------------------------------


def test_trigger_serializes_only_the_env_and_what_it_was_given(mlops_home):
    trigger = NewFilesTrigger(env="dev")
    classpath, kwargs = trigger.serialize()
    assert classpath == "mlops_airflow.triggers.files.NewFilesTrigger"
    assert kwargs == {
        "env": "dev",
        "directory": None,
        "patterns": None,
        "rule": None,
        "min_age_seconds": None,
        "marker": None,
        "poll_interval": None,
        "seen": None,  # no earlier scan handed over
    }
    given = NewFilesTrigger(env="prod", directory="/d", patterns=["*.csv"], rule="marker", poll_interval=0.5)
    assert _rebuilt(given).serialize() == given.serialize()


def test_trigger_does_not_announce_a_file_still_being_written(mlops_home, tmp_path):
    """A writer that paused longer than min_age_seconds must not have its first half announced."""
    drop = tmp_path / "drop"
    drop.mkdir()
    part = _old_file(drop / "big.csv", "a,b\n1,2\n")  # first half, then the writer paused for a minute

    async def scenario() -> dict:
        trigger = NewFilesTrigger(directory=str(drop), patterns=["*.csv"], poll_interval=0.2, min_age_seconds=0.3)
        task = asyncio.ensure_future(trigger.run().__anext__())
        await asyncio.sleep(0.1)
        assert not task.done(), "announced a file seen only once"
        with part.open("a") as f:  # the writer resumes
            f.write("3,4\n")
        event = await asyncio.wait_for(task, timeout=5)
        return event.payload

    payload = asyncio.run(scenario())
    assert payload["status"] == "success" and payload["rule"] == "stable"
    assert [(f["name"], f["size"]) for f in payload["files"]] == [("big.csv", len("a,b\n1,2\n3,4\n"))]


def test_trigger_reports_every_entry_it_does_not_take_once(mlops_home, tmp_path, capsys):
    drop = tmp_path / "drop"
    drop.mkdir()
    _old_file(drop / ".upload.tmp")
    _old_file(drop / "notes.txt")
    (drop / "archive.csv").mkdir()
    (drop / "latest.csv").symlink_to(drop / "notes.txt")
    (drop / "DAY1.CSV").write_text("a\n1\n")  # new: too young for 0.4 s; upper case still matches

    trigger = NewFilesTrigger(directory=str(drop), patterns=["*.csv"], min_age_seconds=0.4, poll_interval=0.05)
    capsys.readouterr()
    payload = _first_event(trigger)
    logged = capsys.readouterr().out

    assert [f["name"] for f in payload["files"]] == ["DAY1.CSV"]
    assert payload["announced"] == 1
    assert payload["ignored"] == {"hidden": 1, "not_regular_file": 2, "pattern": 1}
    # about 10 polls happened; each entry not taken was logged once per reason it had
    for name, reasons in [
        (".upload.tmp", ["hidden"]),
        ("notes.txt", ["pattern"]),
        ("archive.csv", ["not_regular_file"]),
        ("latest.csv", ["not_regular_file"]),
        ("DAY1.CSV", ["waiting_stable", "too_new"]),
    ]:
        lines = [line for line in logged.splitlines() if f"Not taking {name}:" in line]
        assert [line.split(f"Not taking {name}: ")[1].split(" ")[0] for line in lines] == reasons, lines


def test_trigger_watches_the_new_folder_after_a_restart_with_new_settings(mlops_home, tmp_path, monkeypatch):
    old, new = tmp_path / "old-drop", tmp_path / "new-drop"
    old.mkdir()
    new.mkdir()
    monkeypatch.setenv("MLOPS_DROP_ZONE", str(old))
    sensor = NewFilesSensor(task_id="wait", poke_interval=0.05)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context=DEV)

    # The stack restarts with another drop zone; the triggerer re-creates the deferred trigger
    # from what was serialized before the restart.
    monkeypatch.setenv("MLOPS_DROP_ZONE", str(new))
    _old_file(new / "day1.csv")
    payload = _first_event(_rebuilt(deferred.value.trigger), timeout=3)
    assert payload["directory"] == str(new)
    assert [f["path"] for f in payload["files"]] == [str(new / "day1.csv")]


def test_waiting_for_consumption_moves_on_after_a_restart_with_another_drop_zone(mlops_home, tmp_path, monkeypatch):
    """Announced files of the old folder no longer hold the watch's only run after a restart."""
    from mlops_airflow.sensors.files import FilesConsumedSensor

    old, new = tmp_path / "old-drop", tmp_path / "new-drop"
    old.mkdir()
    new.mkdir()
    monkeypatch.setenv("MLOPS_DROP_ZONE", str(old))
    _old_file(old / "day1.csv")
    sensor = FilesConsumedSensor(task_id="consumed", files=[{"path": str(old / "day1.csv")}], poke_interval=0.05)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context=DEV)
    trigger = deferred.value.trigger
    with pytest.raises(TimeoutError):  # same settings: it keeps waiting for the unconsumed file
        _first_event(_rebuilt(trigger), timeout=0.5)

    monkeypatch.setenv("MLOPS_DROP_ZONE", str(new))  # the stack restarts with another folder
    payload = _first_event(_rebuilt(trigger), timeout=3)
    assert payload == {"status": "success", "files": []}
    assert (old / "day1.csv").exists()  # nothing was touched; it just is not waited for


def test_trigger_reports_settings_it_cannot_read(mlops_home, tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_CONF_DIR", str(_conf_dir(tmp_path, "dev", arrival={"rule": "mtime"})))
    payload = _first_event(NewFilesTrigger(env="dev"))
    assert payload["status"] == "error" and "dataset.arrival.rule" in payload["message"]


def test_trigger_keeps_waiting_while_the_folder_is_missing(mlops_home, tmp_path):
    async def fired() -> bool:
        trigger = NewFilesTrigger(directory=str(tmp_path / "later"), patterns=["*"], poll_interval=0.05)
        task = asyncio.ensure_future(trigger.run().__anext__())
        await asyncio.sleep(0.3)
        done = task.done()
        task.cancel()
        return done

    assert asyncio.run(fired()) is False


def test_trigger_with_markers_announces_data_and_names_its_markers(mlops_home, tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    _old_file(drop / "a.csv")
    _old_file(drop / "b.csv")
    (drop / "a.csv.done").touch()
    payload = _first_event(NewFilesTrigger(directory=str(drop), rule="marker", poll_interval=0.05))
    assert [f["name"] for f in payload["files"]] == ["a.csv"]
    assert [m["name"] for m in payload["markers"]] == ["a.csv.done"]
    assert payload["ignored"] == {"marker": 1, "waiting_marker": 1}


# ---- sensor -----------------------------------------------------------------------------------


def test_first_scan_shortcut_does_not_bypass_the_stable_rule(mlops_home, tmp_path):
    _old_file(tmp_path / "a.csv")
    sensor = NewFilesSensor(task_id="wait", directory=str(tmp_path), patterns=["*.csv"])
    with pytest.raises(TaskDeferred):  # rule stable (the default): one sighting is not enough
        sensor.execute(context=DEV)


def test_first_scan_shortcut_returns_files_under_rename(mlops_home, tmp_path):
    _old_file(tmp_path / "b.csv")
    _old_file(tmp_path / "A.PARQUET")
    (tmp_path / ".c.csv.part").write_text("partial")
    sensor = NewFilesSensor(
        task_id="wait", directory=str(tmp_path), patterns=["*.csv", "*.parquet"], arrival_rule="rename"
    )
    found = sensor.execute(context=DEV)
    assert [f["name"] for f in found["files"]] == ["A.PARQUET", "b.csv"]
    assert (found["announced"], found["ignored"]) == (2, {"hidden": 1})


def test_poke_mode_applies_the_stable_rule_across_pokes(mlops_home, tmp_path):
    _old_file(tmp_path / "a.csv")
    sensor = NewFilesSensor(
        task_id="wait", directory=str(tmp_path), patterns=["*.csv"], deferrable=False, poke_interval=0.2
    )
    assert not sensor.poke(DEV), "a file seen once is not known to be complete"
    time.sleep(0.2)
    done = sensor.poke(DEV)
    assert done and [f["name"] for f in done.xcom_value["files"]] == ["a.csv"]

    started = time.monotonic()
    fresh = NewFilesSensor(
        task_id="wait2", directory=str(tmp_path), patterns=["*.csv"], deferrable=False, poke_interval=0.2
    )
    assert [f["name"] for f in fresh.execute(DEV)["files"]] == ["a.csv"]
    assert time.monotonic() - started >= 0.18  # two pokes one interval apart


def test_poke_mode_polls_at_the_configured_interval(mlops_home, tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_CONF_DIR", str(_conf_dir(tmp_path, "dev", arrival={"rule": "stable", "poll_seconds": 7})))
    sensor = NewFilesSensor(task_id="wait", directory=str(tmp_path), patterns=["*.csv"], deferrable=False)
    assert sensor.watch_spec(DEV).arrival.poll_seconds == 7
    deferrable = NewFilesSensor(task_id="wait2", directory=str(tmp_path), patterns=["*.csv"])
    with pytest.raises(TaskDeferred) as deferred:
        deferrable.execute(DEV)
    trigger = deferred.value.trigger
    assert trigger.poll_interval is None  # the trigger reads poll_seconds itself when it starts
    assert trigger.resolve().arrival.poll_seconds == 7


def test_reschedule_mode_is_refused_with_the_stable_rule(mlops_home, tmp_path):
    with pytest.raises(ValueError, match="mode='reschedule' keeps nothing between pokes"):
        NewFilesSensor(task_id="wait", arrival_rule="stable", mode="reschedule", deferrable=False)
    from_settings = NewFilesSensor(task_id="wait", directory=str(tmp_path), mode="reschedule", deferrable=False)
    with pytest.raises(ValueError, match="use deferrable=True"):
        from_settings.execute(DEV)
    _old_file(tmp_path / "a.csv")
    rename = NewFilesSensor(
        task_id="wait", directory=str(tmp_path), arrival_rule="rename", mode="reschedule", deferrable=False
    )
    assert rename.poke(DEV)


def test_sensor_follows_the_env_param(mlops_home, tmp_path, monkeypatch):
    staging_drop = tmp_path / "staging-drop"
    staging_drop.mkdir()
    conf = _conf_dir(tmp_path, "staging", drop_zone=str(staging_drop), arrival={"rule": "rename", "min_age_seconds": 0})
    monkeypatch.setenv("MLOPS_CONF_DIR", str(conf))
    monkeypatch.setenv("MLOPS_ENV", "dev")  # the deployment's default is not the run's env
    _old_file(staging_drop / "day1.csv")
    found = NewFilesSensor(task_id="wait").execute(context={"params": {"env": "staging"}})
    assert found["directory"] == str(staging_drop) and found["rule"] == "rename"
    assert [f["name"] for f in found["files"]] == ["day1.csv"]

    (staging_drop / "day1.csv").unlink()
    with pytest.raises(TaskDeferred) as deferred:
        NewFilesSensor(task_id="wait").execute(context={"params": {"env": "staging"}})
    trigger = deferred.value.trigger
    assert trigger.env == "staging" and trigger.directory is None
    assert trigger.resolve().directory == str(staging_drop)


def test_sensor_execute_complete(tmp_path):
    sensor = NewFilesSensor(task_id="wait", directory=str(tmp_path), patterns=["*.csv"])
    found = {
        "directory": "/x",
        "rule": "stable",
        "files": [{"path": "/x/a.csv", "name": "a.csv", "size": 1, "mtime": 0.0}],
        "markers": [],
        "announced": 1,
        "ignored": {"hidden": 1},
    }
    assert sensor.execute_complete(DEV, {"status": "success", **found}) == found
    with pytest.raises(RuntimeError, match="cannot scan"):
        sensor.execute_complete(DEV, {"status": "error", "message": "cannot scan /x"})


# ---- templated fields, rendered by Airflow -----------------------------------------------------


def test_rendered_directory_and_patterns_are_what_the_sensor_watches(mlops_home, tmp_path):
    day = tmp_path / "2026-01-02"
    day.mkdir()
    _old_file(day / "x.tsv")
    _old_file(day / "y.csv")
    sensor = NewFilesSensor(
        task_id="wait",
        directory="{{ params.root }}/{{ params.day }}",
        patterns=["{{ params.ext }}"],
        arrival_rule="rename",
    )
    context = {"params": {"env": "dev", "root": str(tmp_path), "day": "2026-01-02", "ext": "*.tsv"}}
    sensor.render_template_fields(context)
    found = sensor.execute(context)
    assert found["directory"] == str(day)
    assert [f["name"] for f in found["files"]] == ["x.tsv"]


def test_rendered_directory_is_what_the_trigger_watches(mlops_home, tmp_path):
    sensor = NewFilesSensor(task_id="wait", directory="{{ params.root }}/incoming", poke_interval=0.05)
    context = {"params": {"env": "dev", "root": str(tmp_path)}}
    sensor.render_template_fields(context)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context)
    (tmp_path / "incoming").mkdir()
    _old_file(tmp_path / "incoming" / "z.csv")
    payload = _first_event(_rebuilt(deferred.value.trigger))
    assert [f["path"] for f in payload["files"]] == [str(tmp_path / "incoming" / "z.csv")]
