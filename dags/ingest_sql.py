"""
### Ingest SQL: new rows of a database table -> validated, immutable dataset version

Reads the rows of `dataset.sql_source.table` whose watermark column is above the stored
watermark (any SQLAlchemy URL, through the common-sql provider), validates them against the
dataset contract, quarantines bad rows, and commits a new dataset version. Paused when first
deployed: configure the source, then unpause it. The watermark moves
only after the version is committed, so a failed run is simply re-read. Emits
**dataset_version** and, when rows were quarantined, **quarantine**. Skips when no SQL source is
configured for the environment.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from mlops_airflow.assets import INGEST_OUTCOME
from mlops_airflow.dag_defaults import DEFAULT_ARGS, START_DATE, env_param, on_failed_run


@dag(
    schedule=timedelta(hours=1),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=True,  # needs dataset.sql_source and a connection: unpause once configured
    doc_md=__doc__,
    description="Read new rows of a database table into a validated, immutable dataset version.",
    default_args=DEFAULT_ARGS,
    tags=["mlops", "ingest", "sql"],
    params={"env": env_param()},
    on_failure_callback=on_failed_run,
)
def ingest_sql():
    @task(outlets=[INGEST_OUTCOME], execution_timeout=timedelta(minutes=30))
    def ingest_table(**context) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from mlops_airflow.backends import backends_for
        from mlops_airflow.hooks.sql_table import SqlTableHook
        from mlops_airflow.runtime import announce_ingest, fail_fast, settings_for
        from mlops_core.stages.ingest import ingest_sql as run

        with fail_fast():
            settings = settings_for(context)
            source = settings.dataset.sql_source
            if source is None:
                raise AirflowSkipException(f"no dataset.sql_source in include/conf/{settings.env}.yaml")
            hook = SqlTableHook(sql_conn_id=source.conn_id)
            stamp = context.get("logical_date") or context["dag_run"].run_after
            report = run(
                settings,
                hook.read_after_watermark,
                backends_for(settings),
                run_id=context["run_id"],
                ingested_at=stamp.isoformat(),
            )
        return announce_ingest(context, report)

    ingest_table()


ingest_sql()
