"""
### Features: materialize new dataset versions into the feature store

Triggered by **dataset_version** events. Writes each new version's rows to the Feast offline
store (Parquet partitioned by event date, one file per version and day, plus weekly
latest-per-entity snapshots) and the latest value per entity to the online store (a guarded
upsert: never over a newer value); the work is proportional to the new rows only. Emits
**feature_snapshot** with the versions and row counts.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task

from mlops_airflow.assets import DATASET, FEATURES
from mlops_airflow.dag_defaults import DEFAULT_ARGS, START_DATE, env_param, on_failed_run


@dag(
    schedule=[DATASET],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    description="Materialize new dataset versions into the feature store (offline for training, online for serving).",
    default_args=DEFAULT_ARGS,
    tags=["mlops", "features"],
    params={
        "env": env_param(),
        "dataset_version": Param(
            None,
            type=["null", "string"],
            pattern="^[0-9a-f]{16}$",
            title="Dataset version",
            description="Manual runs: (re)materialize this version (empty: the newest).",
        ),
    },
    on_failure_callback=on_failed_run,
)
def features():
    @task(outlets=[FEATURES], execution_timeout=timedelta(minutes=30))
    def materialize(**context) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from mlops_airflow.backends import backends_for
        from mlops_airflow.run_notes import record_note
        from mlops_airflow.runtime import fail_fast, settings_for, triggering_extras
        from mlops_core.datasets import DatasetStore
        from mlops_core.stages.features import materialize_versions

        with fail_fast():
            settings = settings_for(context)
            backends = backends_for(settings)
            versions = [e["version_id"] for e in triggering_extras(context, DATASET) if e.get("version_id")]
            if context["params"].get("dataset_version"):
                versions = [context["params"]["dataset_version"]]
            if not versions:  # a manual run: (re)materialize the newest version
                latest = DatasetStore(backends.store, settings.load_contract().name).latest_version()
                if latest is None:
                    raise AirflowSkipException("no dataset version exists yet")
                versions = [latest["version_id"]]
            report = materialize_versions(settings, versions, backends)
        record_note(
            context,
            f"materialized {', '.join(report['version_ids'])}: {report['offline_rows']:,} offline rows, "
            f"{report['online_entities']:,} online entities",
        )
        context["outlet_events"][FEATURES].extra = report
        return report

    materialize()


features()
