"""Event-driven arrival (``dataset.arrival.via: watcher``): the AssetWatcher triggers and what ingest takes from them.

* ``DropZoneWatcher`` against a real folder: one event per set of complete new files, none for a
  file still being written or already announced, a new one for a file delivered again after it
  was consumed, and no repeat after a restart (its memory in the asset state store).
* S3 event notifications to SQS on the session's moto server, read by the upstream
  ``MessageQueueTrigger`` exactly as the ingest DAG's watcher is built from the settings: the
  objects they name are ingested once; a duplicate notification adds nothing; an object whose
  notification was lost is ingested by the reconciliation run.
* The DAG files wired by the settings: a watcher schedules ``ingest`` (with the reconciliation
  cron) and the ``watch_drop_zone`` DAG is gone.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_airflow.arrival import landed_files_trigger, paths_to_ingest
from mlops_airflow.backends import backends_for, drop_source_for
from mlops_airflow.triggers.files import ANNOUNCED_STATE_KEY, DropZoneWatcher
from mlops_core.settings import load_settings
from mlops_core.stages.ingest import ingest_files
from tests.dags.schedules import parse_schedules
from tests.moto_server import unique_name
from tests.stages.churn_files import churn_frame, file_bytes

REPO = Path(__file__).resolve().parents[2]
AT = "2026-02-01T00:00:00+00:00"


class StateStore:
    """Stands in for Airflow's asset state store (rows in the metadata DB, reached by the triggerer's comms).

    The store exists only inside a running triggerer; these tests run the trigger on its own, so
    they hand it this dict with the same two async methods the trigger calls.
    """

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data = dict(data or {})

    async def aget(self, key: str, default: Any = None) -> Any:
        return json.loads(json.dumps(self.data.get(key, default)))

    async def aset(self, key: str, value: Any) -> None:
        self.data[key] = json.loads(json.dumps(value))  # stored as JSON, like the real one


def _conf(tmp_path: Path, monkeypatch, **dataset: Any) -> Path:
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "include" / "conf", conf)
    raw = yaml.safe_load((conf / "dev.yaml").read_text())
    raw["dataset"].update(dataset)
    (conf / "dev.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("MLOPS_CONF_DIR", str(conf))
    return conf


def _day(day: int, n: int = 5) -> bytes:
    """``n`` valid rows of the churn contract, all on day ``day``: a CSV file's bytes."""
    return file_bytes(churn_frame(n, day=day), "csv")


def _deliver(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    past = time.time() - 60
    os.utime(path, (past, past))
    return path


def _rebuilt(trigger: Any) -> Any:
    """What the triggerer does: the serialized kwargs (stored as JSON) back into a trigger."""
    from airflow.sdk.module_loading import import_string

    classpath, kwargs = trigger.serialize()
    return import_string(classpath)(**json.loads(json.dumps(kwargs)))


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.05)


async def _collect(trigger: Any, into: list[dict[str, Any]]) -> None:
    async for event in trigger.run():
        into.append(event.payload)


def _names(payload: dict[str, Any]) -> list[str]:
    return sorted(f["name"] for f in payload["files"])


@pytest.fixture
def folder_watch(mlops_home, tmp_path, monkeypatch) -> Path:
    zone = tmp_path / "drop"
    zone.mkdir()
    _conf(
        tmp_path,
        monkeypatch,
        drop_zone=str(zone),
        arrival={"rule": "stable", "min_age_seconds": 0, "poll_seconds": 0.1, "via": "watcher"},
    )
    return zone


def test_the_folder_watcher_serializes_to_its_env_and_poll_and_hashes_stably(folder_watch):
    from airflow.triggers.base import BaseEventTrigger

    trigger = landed_files_trigger(load_settings("dev"))
    assert isinstance(trigger, DropZoneWatcher) and isinstance(trigger, BaseEventTrigger)
    classpath, kwargs = trigger.serialize()
    assert (classpath, kwargs) == (
        "mlops_airflow.triggers.files.DropZoneWatcher",
        {"env": "dev", "poll_interval": None},
    )
    again = _rebuilt(trigger)
    assert again.serialize() == (classpath, kwargs)
    assert BaseEventTrigger.hash(classpath, kwargs) == BaseEventTrigger.hash(*again.serialize())


def test_the_folder_watcher_announces_each_complete_file_once_and_a_redelivery_again(folder_watch):
    async def scenario() -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        task = asyncio.create_task(_collect(_rebuilt(landed_files_trigger(load_settings("dev"))), events))
        try:
            _deliver(folder_watch, "day1.csv", _day(1))
            await _until(lambda: len(events) == 1)
            await asyncio.sleep(0.6)  # six more scans: day1.csv is not announced again
            assert len(events) == 1

            growing = folder_watch / "day2.csv"  # still being written: not taken while it changes
            whole = _day(2, 60)
            for end in range(0, len(whole), len(whole) // 6):
                growing.write_bytes(whole[: end + 1])
                await asyncio.sleep(0.05)
                assert len(events) == 1
            await _until(lambda: len(events) == 2)

            (folder_watch / "day1.csv").rename(folder_watch.parent / "consumed-day1.csv")  # ingest took it
            await asyncio.sleep(0.3)
            _deliver(folder_watch, "day1.csv", _day(9))  # the same name, new content
            await _until(lambda: len(events) == 3)
            await asyncio.sleep(0.3)
            return events
        finally:
            task.cancel()

    events = asyncio.run(scenario())
    assert [_names(e) for e in events] == [["day1.csv"], ["day2.csv"], ["day1.csv"]]
    first = events[0]
    assert first["status"] == "success" and first["rule"] == "stable" and first["announced"] == 1
    assert first["directory"] == str(folder_watch) and first["files"][0]["path"] == str(folder_watch / "day1.csv")


def test_a_restarted_folder_watcher_does_not_announce_again_what_it_announced(folder_watch):
    store = StateStore()

    async def run_until(trigger: DropZoneWatcher, count: int, events: list[dict[str, Any]]) -> None:
        trigger.asset_state_store = store  # type: ignore[assignment]  # what the triggerer injects
        task = asyncio.create_task(_collect(trigger, events))
        try:
            await _until(lambda: len(events) == count)
            await asyncio.sleep(0.3)
        finally:
            task.cancel()

    first: list[dict[str, Any]] = []
    _deliver(folder_watch, "day1.csv", _day(1))
    asyncio.run(run_until(_rebuilt(landed_files_trigger(load_settings("dev"))), 1, first))
    assert store.data[ANNOUNCED_STATE_KEY].keys() == {str(folder_watch / "day1.csv")}

    second: list[dict[str, Any]] = []  # the triggerer restarted; day1.csv still waits for ingest
    _deliver(folder_watch, "day2.csv", _day(2))
    asyncio.run(run_until(_rebuilt(landed_files_trigger(load_settings("dev"))), 1, second))
    assert [_names(e) for e in first + second] == [["day1.csv"], ["day2.csv"]]

    store.data[ANNOUNCED_STATE_KEY] = ["not", "a", "mapping"]  # a damaged memory: start afresh, say so
    third: list[dict[str, Any]] = []
    asyncio.run(run_until(_rebuilt(landed_files_trigger(load_settings("dev"))), 1, third))
    assert _names(third[0]) == ["day1.csv", "day2.csv"]


def test_a_watcher_left_over_under_sensor_settings_stays_silent(mlops_home, tmp_path, monkeypatch):
    """The triggerer restarted with settings that say via: sensor before Airflow dropped the watcher:
    the sensor DAG watches, so the watcher must not announce the same files as well."""
    zone = tmp_path / "drop"
    zone.mkdir()
    arrival = {"rule": "stable", "min_age_seconds": 0, "poll_seconds": 0.1}  # via: the default, sensor
    _conf(tmp_path, monkeypatch, drop_zone=str(zone), arrival=arrival)
    _deliver(zone, "day1.csv", _day(1))

    async def scenario() -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        task = asyncio.create_task(_collect(DropZoneWatcher(env="dev"), events))
        await asyncio.sleep(1.0)  # ten polls' worth
        task.cancel()
        return events

    assert asyncio.run(scenario()) == []


def test_what_ingest_takes_from_sensor_and_watcher_events(folder_watch):
    settings = load_settings("dev")
    source = drop_source_for(settings)
    a, b = str(folder_watch / "a.csv"), str(folder_watch / "b.csv")
    marker = {"path": a + ".done", "name": "a.csv.done", "size": 0, "mtime_ns": 1, "inode": 2}
    extras = [
        {"files": [{"path": b}], "markers": []},  # from the watch_drop_zone DAG
        {"from_trigger": True, "payload": {"files": [{"path": a}, {"path": b}], "markers": [marker]}},
        {"from_trigger": True, "payload": "garbage"},
        {"from_trigger": True, "payload": {"message_batch": [{"Body": "{}"}]}},  # S3 notifications, but a folder
    ]
    assert paths_to_ingest(extras, settings, source) == ([a, b], [marker])


# ---- S3 -> SQS ---------------------------------------------------------------------------------


@pytest.fixture
def sqs_watch(mlops_home, moto_server, tmp_path, monkeypatch) -> dict[str, Any]:
    """A bucket whose drop-zone prefix notifies an SQS queue, and dev settings watching it."""
    s3, sqs = moto_server.client("s3"), moto_server.client("sqs")
    bucket = unique_name("arrive")
    s3.create_bucket(Bucket=bucket)
    queue = sqs.create_queue(QueueName=unique_name("landed"))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "drop/"}]}},
                }
            ]
        },
    )
    _drain(sqs, queue)  # the configuration's s3:TestEvent, if the server sent one
    monkeypatch.setenv("AIRFLOW_CONN_MLOPS_AWS_ARRIVAL", moto_server.connection_uri())
    _conf(
        tmp_path,
        monkeypatch,
        drop_zone=f"s3://{bucket}/drop/churn/",
        arrival={"rule": "stable", "min_age_seconds": 0, "poll_seconds": 1, "via": "watcher", "sqs_queue": queue},
    )
    conf = Path(os.environ["MLOPS_CONF_DIR"]) / "dev.yaml"
    raw = yaml.safe_load(conf.read_text())
    raw["aws"] = {"conn_id": "mlops_aws_arrival"}
    conf.write_text(yaml.safe_dump(raw))
    return {"s3": s3, "sqs": sqs, "bucket": bucket, "queue": queue, "settings": load_settings("dev")}


def _drain(sqs: Any, queue: str) -> int:
    """Receive and delete every message in ``queue`` (PurgeQueue is allowed once a minute); how many."""
    count = 0
    while messages := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages"):
        sqs.delete_message_batch(
            QueueUrl=queue, Entries=[{"Id": m["MessageId"], "ReceiptHandle": m["ReceiptHandle"]} for m in messages]
        )
        count += len(messages)
    return count


def _notifications(settings: Any, want: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Run the watcher's trigger as the triggerer does (rebuilt, restarted after each event) until
    ``want`` objects were announced; the events' extras as ingest sees them."""
    from mlops_core.s3_notifications import announced_objects

    extras: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout

    def announced() -> int:
        batches = [m for e in extras for m in e["payload"]["message_batch"]]
        return len(announced_objects(batches, str(settings.dataset.drop_zone)).uris)

    while announced() < want:
        assert time.monotonic() < deadline, f"only {announced()} of {want} objects announced"
        trigger = _rebuilt(landed_files_trigger(settings))
        event = asyncio.run(_first(trigger, timeout))
        assert event.payload["status"] == "success"
        extras.append({"from_trigger": True, "payload": event.payload})
    return extras


async def _first(trigger: Any, timeout: float) -> Any:
    events = trigger.run()
    try:
        return await asyncio.wait_for(events.__anext__(), timeout=timeout)
    finally:
        await events.aclose()


def _multipart(s3: Any, bucket: str, key: str, data: bytes) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key=key, PartNumber=1, UploadId=upload, Body=data)
    s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]}
    )


def test_s3_notifications_through_sqs_get_exactly_the_new_objects_ingested(sqs_watch):
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger

    s3, sqs, bucket, settings = sqs_watch["s3"], sqs_watch["sqs"], sqs_watch["bucket"], sqs_watch["settings"]
    trigger = landed_files_trigger(settings)
    assert isinstance(trigger, MessageQueueTrigger)  # the upstream trigger; it serializes to the SQS one
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow.providers.amazon.aws.triggers.sqs.SqsSensorTrigger"
    assert kwargs["sqs_queue"] == sqs_watch["queue"] and kwargs["aws_conn_id"] == "mlops_aws_arrival"

    s3.put_object(Bucket=bucket, Key="drop/churn/day 1.csv", Body=_day(1))
    _multipart(s3, bucket, "drop/churn/day2.csv", _day(2))  # moto sends two events
    s3.put_object(Bucket=bucket, Key="drop/other/day3.csv", Body=_day(3))  # not ours
    extras = _notifications(settings, want=2)

    source = drop_source_for(settings)
    paths, _ = paths_to_ingest(extras, settings, source)
    assert paths == [f"s3://{bucket}/drop/churn/day 1.csv", f"s3://{bucket}/drop/churn/day2.csv"]
    report = ingest_files(
        settings, paths, backends_for(settings), run_id="asset_triggered__1", ingested_at=AT, source=source
    )
    assert report["created"] and report["rows"] == 10 and not report["files_quarantined"]
    version = report["version_id"]

    # SQS delivers at least once: the same notification again adds nothing.
    body = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": bucket}, "object": {"key": "drop/churn/day+1.csv"}},
            }
        ]
    }
    sqs.send_message(QueueUrl=sqs_watch["queue"], MessageBody=json.dumps(body))
    again = _notifications(settings, want=1)
    paths, _ = paths_to_ingest(again, settings, source)
    assert paths == [f"s3://{bucket}/drop/churn/day 1.csv"]
    report = ingest_files(
        settings, paths, backends_for(settings), run_id="asset_triggered__2", ingested_at=AT, source=source
    )
    assert not report["created"] and report["rows"] == 0

    # A lost notification: the reconciliation run (no events) still finds the object.
    s3.put_object(Bucket=bucket, Key="drop/churn/day4.csv", Body=_day(4))
    lost = _drain(sqs, sqs_watch["queue"])  # the notification is lost before any trigger reads it
    assert lost == 1
    paths, _ = paths_to_ingest([], settings, source)
    assert paths == [f"s3://{bucket}/drop/churn/day4.csv"]
    report = ingest_files(settings, paths, backends_for(settings), run_id="scheduled__3", ingested_at=AT, source=source)
    assert report["created"] and report["rows"] == 5 and report["version_id"] != version


# ---- the DAG files ------------------------------------------------------------------------------


def _parse(conf: Path) -> dict[str, Any]:
    parsed = parse_schedules(conf)
    ingest = parsed["dags"]["ingest"]
    return {"errors": parsed["errors"], "dags": sorted(parsed["dags"]), **ingest}


def test_the_settings_choose_a_watcher_or_the_watch_dag_without_changing_the_dag_files(
    mlops_home, tmp_path, monkeypatch
):
    sensor = _parse(_conf(tmp_path / "sensor", monkeypatch))
    assert sensor["errors"] == {} and "watch_drop_zone" in sensor["dags"] and sensor["watchers"] == []

    watcher = _parse(
        _conf(tmp_path / "watcher", monkeypatch, arrival={"via": "watcher", "reconcile_schedule": "*/30 * * * *"})
    )
    assert watcher["errors"] == {} and "watch_drop_zone" not in watcher["dags"] and "ingest" in watcher["dags"]
    assert watcher["watchers"] == [["landed_files_dev", "DropZoneWatcher"]]
    assert watcher["timetable"] == "AssetOrTimeSchedule"
