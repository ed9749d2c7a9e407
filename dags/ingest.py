"""
### Ingest: landed files -> validated, immutable dataset version

Triggered by **landed_files** events, or manually (then it takes whatever is complete in the
drop zone now). The events come from the `watch_drop_zone` DAG (`dataset.arrival.via: sensor`,
the default) or, with `via: watcher`, straight from an AssetWatcher in the triggerer: a poll of the
local folder, or the bucket's S3 event notifications read from SQS (`dataset.arrival.sqs_queue`);
a watcher's ingest also runs on `dataset.arrival.reconcile_schedule` (default hourly) and then
takes whatever is complete, so a lost notification still gets its file ingested.

The drop zone is a folder or an S3 prefix (`dataset.drop_zone`). Validates every file against
the dataset contract, quarantines bad rows and files with their reason, and commits the accepted
rows as a new content-addressed dataset version (Parquet partitioned by event date, with a
manifest). Consumed files move to the archive (on S3 with `dataset.mark_consumed: tag`, they are
tagged instead). Emits **dataset_version** (version id, row counts, sources) when it committed a
version and **quarantine** (files, reasons, record keys) when it quarantined anything; the run's
note says what happened (for example "every file quarantined"). Paths in a triggering event that
are not files (objects) directly inside the drop zone are refused.

Re-running (clearing) any run is safe: files are recognised by their checksum, rows by their
key, and a version that already exists is announced again rather than written again.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from mlops_airflow.arrival import deployment_settings, ingest_schedule, uses_watcher
from mlops_airflow.assets import INGEST_OUTCOME, LANDED_FILES
from mlops_airflow.dag_defaults import DEFAULT_ARGS, START_DATE, env_param, on_failed_run

DEPLOYMENT = deployment_settings()  # dataset.arrival.via of $MLOPS_ENV: sensor events or watchers
WATCHER = uses_watcher(DEPLOYMENT)


@dag(
    schedule=ingest_schedule(DEPLOYMENT),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    description="Validate landed files into a new immutable dataset version; quarantine what breaks the contract.",
    default_args=DEFAULT_ARGS,
    tags=["mlops", "ingest"],
    params={"env": env_param()},
    on_failure_callback=on_failed_run,
)
def ingest():
    @task(outlets=[INGEST_OUTCOME], execution_timeout=timedelta(minutes=30))
    def ingest_files(**context) -> dict:
        from mlops_airflow.arrival import archive_markers, paths_to_ingest
        from mlops_airflow.backends import backends_for, drop_source_for
        from mlops_airflow.runtime import announce_ingest, fail_fast, settings_for, triggering_extras
        from mlops_core.stages.ingest import ingest_files as run

        with fail_fast():
            settings = settings_for(context)
            source = drop_source_for(settings)  # the folder or bucket prefix of dataset.drop_zone
            # What the events announced; a manual or reconciling run: whatever is complete now
            paths, markers = paths_to_ingest(triggering_extras(context, LANDED_FILES), settings, source)
            stamp = context.get("logical_date") or context["dag_run"].run_after
            report = run(
                settings,
                paths,
                backends_for(settings),
                run_id=context["run_id"],
                ingested_at=stamp.isoformat(),
                source=source,
            )
            if WATCHER and markers:  # no watch DAG archives them after ingest: done here
                archive_markers(markers, context["run_id"])
        return announce_ingest(context, report)

    ingest_files()


ingest()
