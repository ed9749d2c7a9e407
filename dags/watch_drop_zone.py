"""
### Watch drop zone: announce new data files

Runs continuously, one run at a time. Each run waits (deferrable, in the triggerer, no worker
slot) until complete data files land in the drop zone (`dataset.drop_zone` of the environment,
`dataset.file_patterns`), announces them with a **landed_files** event (which schedules
`ingest`), then waits until ingest has consumed them so the next run never announces a file
twice. Keeping the watch out of `ingest` lets any ingest run be cleared and re-run at any time.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from mlops_airflow.assets import LANDED_FILES
from mlops_airflow.dag_defaults import DEFAULT_ARGS, START_DATE, env_param
from mlops_airflow.sensors.files import FilesConsumedSensor, NewFilesSensor


@dag(
    schedule="@continuous",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    default_args=DEFAULT_ARGS,
    tags=["mlops", "ingest"],
    params={"env": env_param()},
)
def watch_drop_zone():
    files = NewFilesSensor(
        task_id="wait_for_files",
        poke_interval=5,
        timeout=timedelta(hours=24).total_seconds(),
        soft_fail=True,
        execution_timeout=None,
    )

    @task(outlets=[LANDED_FILES], execution_timeout=timedelta(minutes=5))
    def announce(files: list[dict], **context) -> list[dict]:
        from pathlib import Path

        context["outlet_events"][LANDED_FILES].extra = {
            "directory": str(Path(files[0]["path"]).parent) if files else None,
            "files": files,
        }
        return files

    announced = announce(files.output)
    FilesConsumedSensor(
        task_id="wait_until_consumed",
        files=announced,
        poke_interval=5,
        timeout=timedelta(hours=6).total_seconds(),
        soft_fail=True,
        execution_timeout=None,
    )


watch_drop_zone()
