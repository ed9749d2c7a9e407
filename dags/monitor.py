"""
### Monitor: drift and decay -> retraining

Triggered by **feature_snapshot** events. Streams the new rows against the champion's reference
profile (per-column Wasserstein / PSI / Jensen-Shannon and missing rates, thresholds under
`monitoring`), keeps Evidently's data-drift report on a bounded sample as HTML in object storage
and MLflow (served by the Airflow UI at `/mlops/reports/<env>/<run key>`, linked from the run's
note and the MLOps lifecycle view), and scores the champion on the newly labelled rows. Emits
**retrain_requested** when there is no champion yet, when the share of drifted columns reaches
`monitoring.drift_share_threshold`, when the champion's primary metric dropped by more than
`monitoring.max_metric_drop`, or when the run was triggered with *force retrain*; otherwise no
event. The run's note says the verdict.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task

from mlops_airflow.assets import FEATURES, MONITOR_OUTCOME, RETRAIN_REQUESTED
from mlops_airflow.dag_defaults import DEFAULT_ARGS, START_DATE, env_param, on_failed_run
from mlops_airflow.links import DriftReportLink, with_links
from mlops_airflow.monitor_schedule import monitor_schedule


@dag(
    schedule=monitor_schedule(),  # FEATURES events, and monitoring.schedule's cron when set
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    description="Check new data for drift and the champion for decay; request retraining when they cross the limits.",
    default_args=DEFAULT_ARGS,
    tags=["mlops", "monitoring"],
    params={
        "env": env_param(),
        "force_retrain": Param(
            False, type="boolean", title="Force retrain", description="Request retraining whatever the drift verdict."
        ),
        "dataset_version": Param(
            None,
            type=["null", "string"],
            pattern="^[0-9a-f]{16}$",
            title="Dataset version",
            description="Manual runs: check this version against the reference (empty: the newest).",
        ),
    },
    on_failure_callback=on_failed_run,
)
def monitor():
    @task(outlets=[MONITOR_OUTCOME], execution_timeout=timedelta(minutes=20))
    def check_drift(**context) -> dict:
        from mlops_airflow.backends import backends_for
        from mlops_airflow.run_notes import record_note
        from mlops_airflow.runtime import fail_fast, run_key, settings_for, triggering_extras
        from mlops_airflow.ui import drift_report_url
        from mlops_core.datasets import DatasetStore
        from mlops_core.outcomes import monitor_outcome
        from mlops_core.stages.monitor import check_for_retraining

        with fail_fast():
            settings = settings_for(context)
            backends = backends_for(settings)
            versions = [v for e in triggering_extras(context, FEATURES) for v in e.get("version_ids", [])]
            if context["params"].get("dataset_version"):
                versions = [context["params"]["dataset_version"]]
            if not versions:
                latest = DatasetStore(backends.store, settings.load_contract().name).latest_version()
                versions = [latest["version_id"]] if latest else []
            verdict = check_for_retraining(
                settings,
                versions,
                backends,
                run_key=run_key(context, "monitor"),
                force=bool(context["params"]["force_retrain"]),
            )
        if verdict.get("report_key"):  # report: where it is stored; report_url: as the Airflow UI serves it
            verdict = {**verdict, "report_url": drift_report_url(settings.env, verdict["report_key"])}
        record_note(context, monitor_outcome(verdict))
        if verdict["retrain"]:
            keys = ("env", "reason", "version_ids", "drift_share", "drifted_columns", "metric_drop", "summary")
            extra = {k: verdict[k] for k in keys}
            # report: the alert's link, the UI's (its stored location kept as report_uri)
            extra["report"] = verdict.get("report_url") or verdict["report"]
            extra["report_uri"] = verdict["report"]
            live = verdict.get("live")  # delayed-label decay and serving health (mlops_core.decay)
            extra["live"] = {k: live[k] for k in ("decay", "serving_health", "prediction_drift")} if live else None
            context["outlet_events"][MONITOR_OUTCOME].add(RETRAIN_REQUESTED, extra=extra)
        return verdict

    with_links(check_drift(), DriftReportLink())


monitor()
