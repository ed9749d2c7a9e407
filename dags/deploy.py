"""
### Deploy: serve the champion, smoke-test, verify, roll back on failure

Triggered by **champion_model** events (from evaluate_register in dev, from promote in the
later environments; the event says which environment; what is deployed is always that
environment's `@champion`, whatever else an event says). Checks the model's files against the
digest recorded when it was logged, then deploys it to its serving target (`backends.serving`;
locally an MLflow scoring server on `serving.host:serving.port`), sends held-out rows to
`/invocations`, verifies that what is live is what was asked for, and on any failure puts the
previous champion back and fails the run. Emits **deployment**; the run's note says what is live where.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from mlops_airflow.assets import CHAMPION, DEPLOYMENT
from mlops_airflow.dag_defaults import DEFAULT_ARGS, ENVIRONMENTS, START_DATE, env_param, on_failed_run
from mlops_airflow.links import EndpointLink, with_links


@dag(
    schedule=[CHAMPION],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    description="Serve an environment's champion, smoke-test and verify it, roll back to the previous one on failure.",
    default_args={**DEFAULT_ARGS, "retries": 1},
    tags=["mlops", "deployment"],
    params={"env": env_param()},
    on_failure_callback=on_failed_run,
)
def deploy():
    @task(outlets=[DEPLOYMENT], execution_timeout=timedelta(minutes=15))
    def deploy_champion(**context) -> dict:
        from mlops_airflow.backends import backends_for
        from mlops_airflow.run_notes import record_note
        from mlops_airflow.runtime import fail_fast, settings_for, triggering_extras
        from mlops_core.outcomes import deploy_outcome
        from mlops_core.stages.deploy import deploy_champion as run

        events = triggering_extras(context, CHAMPION)
        # Several queued champion events: deploy each environment once, newest event wins. An event
        # only names the environment: what is deployed is always that environment's @champion.
        targets = {e["env"]: e for e in events if e.get("env") in ENVIRONMENTS} or {context["params"]["env"]: {}}
        with fail_fast():
            reports = []
            for env, event in targets.items():
                settings = settings_for(context, env)
                reports.append(run(settings, event.get("version"), backends_for(settings)))
        record_note(context, deploy_outcome(reports))
        context["outlet_events"][DEPLOYMENT].extra = {"deployments": reports}
        return {"deployments": reports}

    with_links(deploy_champion(), EndpointLink())


deploy()
