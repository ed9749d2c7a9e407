"""
### Ingest: drop-zone files -> validated, immutable dataset version

Waits (deferrable, in the triggerer) until data files land in the drop zone
(`dataset.drop_zone` of the environment), validates every file against the dataset contract,
quarantines bad rows and files with their reason, and commits the accepted rows as a new
content-addressed dataset version (Parquet partitioned by event date, with a manifest).
Consumed files move to the archive. Emits **dataset_version** with the version id, row counts
and sources; a run that finds nothing new emits nothing.

Runs continuously (one run at a time): each run waits for the next files.
Re-running a run is safe: consumed files are recognised by their checksum.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from mlops_airflow.assets import DATASET
from mlops_airflow.dag_defaults import DEFAULT_ARGS, START_DATE, env_param
from mlops_airflow.sensors.files import NewFilesSensor


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
def ingest():
    files = NewFilesSensor(
        task_id="wait_for_files",
        poke_interval=5,
        timeout=timedelta(hours=24).total_seconds(),
        soft_fail=True,
        execution_timeout=None,
    )

    @task(outlets=[DATASET], execution_timeout=timedelta(minutes=30))
    def ingest_files(files: list[dict], **context) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from mlops_core.stages.ingest import ingest_files as run

        from mlops_airflow.runtime import settings_for

        settings = settings_for(context)
        stamp = context.get("logical_date") or context["dag_run"].run_after
        report = run(settings, [f["path"] for f in files], run_id=context["run_id"], ingested_at=stamp.isoformat())
        if report["version_id"] is None:
            raise AirflowSkipException(f"no new dataset version: {report['reason']}")
        # A version that already existed is still announced: an earlier try may have committed it
        # and died before its event was emitted. Consumers are idempotent per version.
        context["outlet_events"][DATASET].extra = {
            k: report[k] for k in ("dataset", "version_id", "rows", "rejected_rows", "duplicate_rows",
                                   "sources", "event_time_min", "event_time_max")
        }
        return report

    ingest_files(files.output)


ingest()
