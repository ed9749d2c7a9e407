"""The watch (NewFilesSensor/Trigger, FilesConsumedSensor/Trigger) on an S3 drop zone, through the Airflow connection.

The settings name ``dataset.drop_zone: s3://<bucket>/drop/churn/`` and a connection whose
``endpoint_url`` is the session's moto server; nothing in the sensors or the DAGs names S3.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import pytest
import yaml
from airflow.sdk.exceptions import TaskDeferred

from mlops_airflow.sensors.files import FilesConsumedSensor, NewFilesSensor
from mlops_airflow.triggers.files import FilesConsumedTrigger, NewFilesTrigger
from tests.moto_server import unique_name

REPO_CONF = Path(__file__).resolve().parents[2] / "include" / "conf"
DEV = {"params": {"env": "dev"}}
AT = "2026-02-01T00:00:00+00:00"


def _rebuilt(trigger):
    """What the triggerer does: the serialized kwargs (stored as JSON) back into a trigger."""
    from airflow.sdk.module_loading import import_string

    classpath, kwargs = trigger.serialize()
    return import_string(classpath)(**json.loads(json.dumps(kwargs)))


def _first_event(trigger, timeout: float) -> dict:
    async def run() -> dict:
        event = await asyncio.wait_for(trigger.run().__anext__(), timeout=timeout)
        return event.payload

    return asyncio.run(run())


@pytest.fixture
def s3_env(mlops_home, moto_server, tmp_path, monkeypatch):
    """Dev settings whose drop zone is an S3 prefix on moto; returns (s3 test client, bucket, location)."""
    s3 = moto_server.client("s3")
    bucket = unique_name("watch")
    s3.create_bucket(Bucket=bucket)
    location = f"s3://{bucket}/drop/churn/"
    conf = tmp_path / "conf"
    shutil.copytree(REPO_CONF, conf)
    raw = yaml.safe_load((conf / "dev.yaml").read_text())
    raw["dataset"]["drop_zone"] = location
    raw["dataset"]["arrival"] = {"rule": "stable", "min_age_seconds": 0, "poll_seconds": 0.3}
    raw["aws"] = {"conn_id": "mlops_aws_watch"}
    (conf / "dev.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("MLOPS_CONF_DIR", str(conf))
    monkeypatch.setenv("AIRFLOW_CONN_MLOPS_AWS_WATCH", moto_server.connection_uri())
    return s3, bucket, location


def test_the_dags_source_follows_the_settings(s3_env):
    from mlops_airflow.backends import drop_source_for
    from mlops_core.delivered_files import DropZone
    from mlops_core.s3_dropzone import S3DropZone
    from mlops_core.settings import load_settings

    _, _, location = s3_env
    settings = load_settings("dev")
    source = drop_source_for(settings)
    assert isinstance(source, S3DropZone) and source.location == location and source.mark_consumed == "archive"
    assert isinstance(drop_source_for(settings, "/srv/drop"), DropZone)


def test_the_watch_announces_an_object_once_and_waits_until_ingest_consumed_it(s3_env):
    from mlops_airflow.backends import backends_for, drop_source_for
    from mlops_core.settings import load_settings
    from mlops_core.stages.ingest import ingest_files
    from tests.stages.churn_files import churn_frame, file_bytes

    s3, bucket, location = s3_env
    s3.put_object(Bucket=bucket, Key="drop/churn/day1.csv", Body=file_bytes(churn_frame(10), "csv"))
    with pytest.raises(TaskDeferred) as deferred:  # stable: the sensor's first look is not enough
        NewFilesSensor(task_id="wait").execute(context=DEV)
    trigger = deferred.value.trigger
    assert set(trigger.serialize()[1]["seen"]) == {f"{location}day1.csv"}  # its look is handed over

    event = _first_event(_rebuilt(trigger), timeout=10)
    assert event["status"] == "success" and event["directory"] == location
    etag = s3.head_object(Bucket=bucket, Key="drop/churn/day1.csv")["ETag"].strip('"')
    assert [(f["path"], f["etag"]) for f in event["files"]] == [(f"{location}day1.csv", etag)]

    consumed = FilesConsumedSensor(task_id="consumed", files=event["files"], poke_interval=0.2)
    with pytest.raises(TaskDeferred) as waiting:
        consumed.execute(context=DEV)
    waits = waiting.value.trigger
    assert waits.serialize()[1]["etags"] == {f"{location}day1.csv": etag}

    settings = load_settings("dev")
    paths = [f["path"] for f in event["files"]]
    report = ingest_files(
        settings, paths, backends_for(settings), run_id="r1", ingested_at=AT, source=drop_source_for(settings)
    )
    assert report["rows"] == 10
    assert _first_event(_rebuilt(waits), timeout=10)["status"] == "success"
    assert consumed.poke(DEV)
    time.sleep(0.4)
    with pytest.raises(TaskDeferred):  # the next watch run finds nothing to announce
        NewFilesSensor(task_id="wait").execute(context=DEV)


def test_a_rebuilt_trigger_goes_on_from_the_sightings_in_its_kwargs(s3_env, moto_server):
    """A triggerer restart neither loses the first look (no new poll needed) nor needs memory of its own."""
    from mlops_core.dropzone import ArrivalRule, state_to_primitives
    from mlops_core.s3_dropzone import S3DropZone

    s3, bucket, _ = s3_env
    s3.put_object(Bucket=bucket, Key="drop/churn/a.csv", Body=b"x,y\n1,2\n")
    zone = S3DropZone(moto_server.code_client("s3"), bucket, "drop/churn")
    rule = ArrivalRule(rule="stable", min_age_seconds=0, poll_seconds=60)
    seen = state_to_primitives(zone.scan(("*.csv",), rule, now=time.time() - 61).state)  # a poll ago
    trigger = NewFilesTrigger(env="dev", poll_interval=60, seen=seen)
    started = time.monotonic()
    event = _first_event(_rebuilt(trigger), timeout=20)
    assert event["status"] == "success" and [f["name"] for f in event["files"]] == ["a.csv"]
    assert time.monotonic() - started < 20  # not a 60 s poll: the carried sighting counted


def test_waiting_for_consumption_needs_settings_for_s3_paths(s3_env):
    _, _, location = s3_env
    trigger = FilesConsumedTrigger(paths=[f"{location}gone.csv"], poll_interval=0.1, env="dev")
    assert _first_event(_rebuilt(trigger), timeout=10)["status"] == "success"  # gone: nothing to wait for
