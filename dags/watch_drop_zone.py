"""
### Watch drop zone: announce complete new data files

With `dataset.arrival.via: watcher` this DAG does not exist: an AssetWatcher schedules `ingest`
directly (`mlops_airflow.arrival`). Otherwise it runs continuously, one run at a time. Each run
waits (deferrable, in the triggerer, no worker slot) until complete data files are in the drop
zone of the run's `env` (`dataset.drop_zone`, a folder or an S3 prefix;
`dataset.file_patterns`), announces them with a **landed_files** event (which schedules
`ingest`), waits until ingest has consumed them so the next run never announces a file twice,
then archives their completion markers (rule `marker`). Keeping the watch out of `ingest` lets
any ingest run be cleared and re-run at any time.

When a file is complete follows `dataset.arrival.rule`: `stable` (default: unchanged across two
scans one poll apart), `marker` (`{name}.done` or a folder marker such as `_SUCCESS`) or
`rename` (upload to a dot-name, then rename). Every entry the watch does not take is logged
once with its reason, and `announce` reports the counts, e.g.
`{"announced": 3, "ignored": {"hidden": 1, "pattern": 2, "waiting_stable": 1}}`.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from mlops_airflow.arrival import uses_watcher
from mlops_airflow.assets import LANDED_FILES
from mlops_airflow.dag_defaults import DEFAULT_ARGS, START_DATE, env_param, on_failed_run
from mlops_airflow.sensors.files import FilesConsumedSensor, NewFilesSensor


@dag(
    schedule="@continuous",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    description="Wait for complete new files in the drop zone and announce them to ingest.",
    default_args=DEFAULT_ARGS,
    tags=["mlops", "ingest"],
    params={"env": env_param()},
    on_failure_callback=on_failed_run,
)
def watch_drop_zone():
    found = NewFilesSensor(
        task_id="wait_for_files",
        timeout=timedelta(hours=24).total_seconds(),
        soft_fail=True,
        execution_timeout=None,
    )

    @task(outlets=[LANDED_FILES], multiple_outputs=True, execution_timeout=timedelta(minutes=5))
    def announce(found: dict, **context) -> dict:
        import logging

        extra = {
            "directory": found["directory"],
            "rule": found["rule"],
            "files": found["files"],
            "announced": len(found["files"]),
            "ignored": found.get("ignored", {}),
        }
        logging.getLogger(__name__).info(
            "Announcing %d file(s) from %s (rule %s); not announced: %s",
            extra["announced"],
            extra["directory"],
            extra["rule"],
            extra["ignored"],
        )
        context["outlet_events"][LANDED_FILES].extra = extra
        return {**extra, "markers": found.get("markers", [])}

    @task(execution_timeout=timedelta(minutes=5))
    def archive_markers(markers: list[dict], **context) -> list[str]:
        """Move the markers of the consumed files to the archive (rule marker; else nothing)."""
        from mlops_airflow.arrival import archive_markers as archive

        return archive(markers, context["run_id"])

    announced = announce(found.output)
    consumed = FilesConsumedSensor(
        task_id="wait_until_consumed",
        files=announced["files"],
        poke_interval=5,
        timeout=timedelta(hours=6).total_seconds(),
        soft_fail=True,
        execution_timeout=None,
    )
    consumed >> archive_markers(announced["markers"])


if not uses_watcher():  # dataset.arrival.via of $MLOPS_ENV: with watchers, nothing here runs
    watch_drop_zone()
