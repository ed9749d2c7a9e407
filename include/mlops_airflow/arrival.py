"""How ``ingest`` hears of new files (``dataset.arrival.via``), wired when the DAG files are parsed.

``sensor`` (default): the ``watch_drop_zone`` DAG waits with a deferrable sensor and announces
complete files with a ``landed_files`` event, which schedules ``ingest``.

``watcher``: no watch DAG, no sensor task, no waiting DAG run. ``landed_files`` carries an
Airflow 3 ``AssetWatcher`` whose trigger runs in the triggerer and schedules ``ingest`` with each
event: :class:`~mlops_airflow.triggers.files.DropZoneWatcher` for a local folder, the upstream
``MessageQueueTrigger`` on the SQS queue that receives the bucket's event notifications for an
``s3://`` drop zone (``dataset.arrival.sqs_queue``). ``ingest`` also runs on
``dataset.arrival.reconcile_schedule`` and then takes whatever is complete in the drop zone: a
notification that was lost (an SQS message deleted by a triggerer that died before the event was
saved, a misconfigured notification) still gets its object ingested.

The choice is the deployment's: the settings of ``$MLOPS_ENV`` are read when the DAG files are
parsed (the DAG's ``env`` Param picks the settings of a run, not how runs are scheduled).
Importing this module is cheap; the settings and the triggers are imported when called.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, AssetWatcher

from mlops_airflow.assets import LANDED_FILES

if TYPE_CHECKING:
    from airflow.sdk import AssetOrTimeSchedule
    from airflow.triggers.base import BaseEventTrigger

    from mlops_core.drop_source import DropSource
    from mlops_core.settings import Settings

log = logging.getLogger(__name__)

SQS_MAX_WAIT_SECONDS = 20  # SQS long polling's limit


def deployment_settings() -> Settings:
    """The settings of the deployment's environment (``$MLOPS_ENV``), as the DAG files are parsed."""
    from mlops_core.settings import load_settings

    return load_settings()


def uses_watcher(settings: Settings | None = None) -> bool:
    """Whether ``ingest`` is scheduled by AssetWatchers (``dataset.arrival.via: watcher``)."""
    settings = settings or deployment_settings()
    return settings.dataset.arrival.via == "watcher"


def landed_files_trigger(settings: Settings) -> BaseEventTrigger:
    """The AssetWatcher trigger of ``settings``' drop zone: a folder poll, or S3 notifications on SQS."""
    from mlops_core.settings import is_s3_uri

    arrival = settings.dataset.arrival
    if not is_s3_uri(settings.dataset.drop_zone):
        from mlops_airflow.triggers.files import DropZoneWatcher

        return DropZoneWatcher(env=settings.env)
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger

    poll = max(1, round(arrival.poll_seconds))
    return MessageQueueTrigger(
        scheme="sqs",
        sqs_queue=arrival.sqs_queue,
        aws_conn_id=settings.aws.conn_id,
        max_messages=10,
        wait_time_seconds=min(SQS_MAX_WAIT_SECONDS, poll),  # long polling: a message is seen as it lands
        waiter_delay=poll,
    )


def landed_files_asset(settings: Settings | None = None) -> Asset:
    """``landed_files`` as ``ingest`` is scheduled on it: with its watcher when ``via`` is ``watcher``."""
    settings = settings or deployment_settings()
    if not uses_watcher(settings):
        return LANDED_FILES
    watcher = AssetWatcher(name=f"landed_files_{settings.env}", trigger=landed_files_trigger(settings))
    return Asset(name=LANDED_FILES.name, uri=LANDED_FILES.uri, group=LANDED_FILES.group, watchers=[watcher])


def ingest_schedule(settings: Settings | None = None) -> Asset | AssetOrTimeSchedule:
    """``ingest``'s schedule: landed_files events, plus the reconciliation cron of a watcher."""
    settings = settings or deployment_settings()
    asset = landed_files_asset(settings)
    cron = settings.dataset.arrival.reconcile_schedule
    if not uses_watcher(settings) or cron is None:
        return asset
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(cron, timezone="UTC"), assets=asset)


def landed_paths(extras: Iterable[Mapping[str, Any]], drop_zone: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The paths (and completion markers) that ``landed_files`` events announced to this run.

    ``extras`` are the events' ``extra``: the sensor's announcement itself, or, from a watcher,
    ``{"from_trigger": true, "payload": ...}`` with the folder watcher's announcement or the
    upstream SQS trigger's ``message_batch`` of S3 event notifications (untrusted: read by
    :func:`mlops_core.s3_notifications.announced_objects`). Every path is checked again by
    ingest, which refuses what is not directly inside the drop zone.
    """
    from mlops_core.settings import is_s3_uri

    paths: dict[str, None] = {}
    markers: list[dict[str, Any]] = []
    for extra in extras:
        body = extra.get("payload") if extra.get("from_trigger") else extra
        if not isinstance(body, Mapping):
            log.warning("a landed_files event without a payload: ignored (%s)", str(extra)[:200])
            continue
        if "message_batch" in body:
            if not is_s3_uri(drop_zone):
                log.warning("S3 notifications in a landed_files event, but the drop zone %s is a folder", drop_zone)
                continue
            from mlops_core.s3_notifications import announced_objects

            batch = body.get("message_batch")
            found = announced_objects(batch if isinstance(batch, list) else [], drop_zone)
            if found.skipped:
                log.info("S3 notifications not taken, by reason: %s", dict(found.skipped))
            paths.update(dict.fromkeys(found.uris))
            continue
        files = body.get("files")
        for entry in files if isinstance(files, list) else []:
            if isinstance(entry, Mapping) and isinstance(entry.get("path"), str):
                paths.setdefault(entry["path"], None)
        found_markers = body.get("markers")
        markers.extend(m for m in (found_markers if isinstance(found_markers, list) else []) if isinstance(m, dict))
    return sorted(paths), markers


def paths_to_ingest(
    extras: Iterable[Mapping[str, Any]], settings: Settings, source: DropSource
) -> tuple[list[str], list[dict[str, Any]]]:
    """What an ``ingest`` run takes: what its events announced, else whatever is complete now.

    A run with no usable announcement (a manual run, a reconciliation run of a watcher, or events
    whose every path was refused) scans the drop zone by the configured arrival rule, so an
    object whose notification was lost is ingested by the next such run.
    """
    from mlops_core.dropzone import complete_files, watch_spec

    paths, markers = landed_paths(extras, str(settings.dataset.drop_zone))
    if not paths:
        paths = [f.path for f in complete_files(watch_spec(settings.dataset), source).ready]
    return paths, markers


def archive_markers(markers: Iterable[Mapping[str, Any]], run_id: str) -> list[str]:
    """Move the completion markers (rule ``marker``) of consumed files to the archive; their new paths.

    A marker that is gone already, or changed since it was announced (it marks newer files), is
    left alone.
    """
    from pathlib import Path

    from mlops_core.datasets import safe_key_part
    from mlops_core.dropzone import MarkerFile, archive_dir_for, archive_marker

    archived = []
    for raw in markers:
        marker = MarkerFile.from_dict(raw)
        target = archive_marker(marker, archive_dir_for(Path(marker.path).parent, safe_key_part(run_id)))
        if target is None:
            log.info("%s left in place: gone already, or changed since (it marks newer files)", marker.path)
        else:
            log.info("%s archived to %s", marker.name, target)
            archived.append(str(target))
    return archived
