"""
### Evaluate & register: challenger vs champion on the same held-out rows

Triggered by **model_candidate**. Scores the challenger and the current `@champion` on the
challenger's held-out rows, registers the challenger in the environment's namespace
(`<env>.<model>`) with lineage tags (dataset versions, MLflow run, git commit), and moves the
`@champion` alias to it only if it passes every absolute threshold (`evaluation.thresholds`) and
beats the champion by at least `evaluation.min_improvement`. Emits **champion_model** on promotion.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task

from mlops_airflow.assets import CHAMPION, MODEL_CANDIDATE
from mlops_airflow.dag_defaults import DEFAULT_ARGS, START_DATE, env_param


@dag(
    schedule=[MODEL_CANDIDATE],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    default_args=DEFAULT_ARGS,
    tags=["mlops", "evaluation", "registry"],
    params={
        "env": env_param(),
        "min_improvement": Param(
            None,
            type=["null", "number"],
            minimum=0,
            maximum=1,
            title="Promotion margin",
            description="Override evaluation.min_improvement (empty: use the settings).",
        ),
        "mlflow_run_id": Param(
            None,
            type=["null", "string"],
            title="MLflow run id",
            description="Manual runs: evaluate this run instead of the triggering candidate.",
        ),
    },
)
def evaluate_register():
    @task(execution_timeout=timedelta(minutes=20))
    def evaluate(**context) -> dict:
        from mlops_airflow.runtime import settings_for, triggering_extras
        from mlops_core.stages.evaluate import candidate_from_run, evaluate_candidate

        settings = settings_for(context)
        params = context["params"]
        candidates = triggering_extras(context, MODEL_CANDIDATE)
        if params.get("mlflow_run_id"):
            candidate = candidate_from_run(settings, params["mlflow_run_id"])
        elif candidates:
            candidate = candidates[-1]  # several queued events: the newest candidate wins
        else:
            raise ValueError("no triggering model_candidate event: trigger with the 'MLflow run id' param")
        return evaluate_candidate(settings, candidate, min_improvement=params.get("min_improvement"))

    @task.short_circuit
    def passes_gate(evaluation: dict) -> bool:
        return bool(evaluation["promote"])

    @task(outlets=[CHAMPION])
    def promote(evaluation: dict, **context) -> dict:
        from mlops_airflow.runtime import settings_for
        from mlops_core.stages.evaluate import promote_to_champion

        champion = promote_to_champion(settings_for(context), evaluation)
        context["outlet_events"][CHAMPION].extra = champion
        return champion

    evaluation = evaluate()
    passes_gate(evaluation) >> promote(evaluation)


evaluate_register()
