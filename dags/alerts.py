"""
### Alerts: tell people when the lifecycle needs them

Triggered by the events that can carry bad news: **quarantine** (ingest quarantined files or
rows), **retrain_requested** (drift or decay; a first training or a forced one is no alert),
**model_evaluation** (a challenger the gate rejected) and **deployment** (a rollback). `decide`
reads each event and says which alert it is, with the verdict, the report link (drift report,
quarantine record, MLflow run) and the link to the run that produced it; `send_webhook` and
`send_email` send them through Airflow notifiers on the connections named in the event's
environment's `alerts:` settings (nothing is sent until a channel is configured). A failed run of
any lifecycle DAG alerts through the same channels from its own failure callback.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from mlops_airflow.assets import DEPLOYMENT, EVALUATION, QUARANTINE, RETRAIN_REQUESTED
from mlops_airflow.dag_defaults import DEFAULT_ARGS, START_DATE, env_param, on_failed_run


@dag(
    schedule=(QUARANTINE | RETRAIN_REQUESTED | EVALUATION | DEPLOYMENT),
    start_date=START_DATE,
    catchup=False,
    doc_md=__doc__,
    description="Tell people when the lifecycle needs them: quarantine, retraining, a rejected model, a rollback.",
    default_args=DEFAULT_ARGS,
    tags=["mlops", "alerts"],
    params={"env": env_param()},
    on_failure_callback=on_failed_run,
)
def alerts():
    @task(execution_timeout=timedelta(minutes=5))
    def decide(**context) -> list[dict]:
        import dataclasses
        import logging

        from mlops_airflow.alerts import alerts_from_triggering_events
        from mlops_airflow.runtime import fail_fast

        with fail_fast():
            found = alerts_from_triggering_events(context, context["params"]["env"])
        log = logging.getLogger(__name__)
        for alert in found:
            log.info("%s alert (%s): %s", alert.kind, alert.env, alert.verdict)
        return [dataclasses.asdict(alert) for alert in found]

    @task(execution_timeout=timedelta(minutes=10))
    def send_webhook(found: list[dict]) -> int:
        from mlops_airflow.alerts import send_on_channel
        from mlops_airflow.runtime import fail_fast
        from mlops_core.alerts import Alert

        with fail_fast():
            return send_on_channel([Alert(**a) for a in found], "webhook")

    @task(execution_timeout=timedelta(minutes=10))
    def send_email(found: list[dict]) -> int:
        from mlops_airflow.alerts import send_on_channel
        from mlops_airflow.runtime import fail_fast
        from mlops_core.alerts import Alert

        with fail_fast():
            return send_on_channel([Alert(**a) for a in found], "email")

    found = decide()
    send_webhook(found)
    send_email(found)


alerts()
