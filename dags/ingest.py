"""
### Ingest: landed files -> validated, immutable dataset version

Triggered by **landed_files** events (from `watch_drop_zone`), or manually (then it takes
whatever is complete in the drop zone now). The drop zone is a folder or an S3 prefix
(`dataset.drop_zone`). Validates every file against the dataset contract, quarantines bad rows
and files with their reason, and commits the accepted rows as a new content-addressed dataset
version (Parquet partitioned by event date, with a manifest). Consumed files move to the
archive (on S3 with `dataset.mark_consumed: tag`, they are tagged instead). Emits
**dataset_version** (version id, row counts, sources) when it committed a version and
**quarantine** (files, reasons, record keys) when it quarantined anything; the run's note says
what happened (for example "every file quarantined"). Paths in a triggering event that are not
files (objects) directly inside the drop zone are refused.

Re-running (clearing) any run is safe: files are recognised by their checksum, rows by their
key, and a version that already exists is announced again rather than written again.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from mlops_airflow.assets import INGEST_OUTCOME, LANDED_FILES
from mlops_airflow.dag_defaults import DEFAULT_ARGS, START_DATE, env_param, on_failed_run


@dag(
    schedule=[LANDED_FILES],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    default_args=DEFAULT_ARGS,
    tags=["mlops", "ingest"],
    params={"env": env_param()},
    on_failure_callback=on_failed_run,
)
def ingest():
    @task(outlets=[INGEST_OUTCOME], execution_timeout=timedelta(minutes=30))
    def ingest_files(**context) -> dict:
        from mlops_airflow.backends import backends_for, drop_source_for
        from mlops_airflow.runtime import announce_ingest, fail_fast, settings_for, triggering_extras
        from mlops_core.dropzone import complete_files, watch_spec
        from mlops_core.stages.ingest import ingest_files as run

        with fail_fast():
            settings = settings_for(context)
            source = drop_source_for(settings)  # the folder or bucket prefix of dataset.drop_zone
            paths = sorted({f["path"] for e in triggering_extras(context, LANDED_FILES) for f in e.get("files", [])})
            if not paths:  # a manual run: whatever is complete in the drop zone now, by the configured rule
                paths = [f.path for f in complete_files(watch_spec(settings.dataset), source).ready]
            stamp = context.get("logical_date") or context["dag_run"].run_after
            report = run(
                settings,
                paths,
                backends_for(settings),
                run_id=context["run_id"],
                ingested_at=stamp.isoformat(),
                source=source,
            )
        return announce_ingest(context, report)

    ingest_files()


ingest()
