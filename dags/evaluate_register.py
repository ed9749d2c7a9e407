"""
### Evaluate & register: challenger vs champion on the same held-out rows

Triggered by **model_candidate**. Scores the challenger and the current `@champion` on the
challenger's held-out rows, registers the challenger in the environment's namespace
(`<env>.<model>`) with lineage tags (dataset versions, MLflow run, git commit), and moves the
`@champion` alias to it only if it passes every absolute threshold (`evaluation.thresholds`) and
beats the champion by at least `evaluation.min_improvement`; where the environment sets
`promotion.require_approval` (prod), a human approves first in the UI (Required actions), with the
scores of both models in front of them. Only runs trained in the same environment are evaluated:
models reach later environments through `promote`. Emits **model_evaluation** for every decision
(the run's note says it too) and **champion_model** when the alias moves. Where the environment
mirrors its registry to the cloud (`backends.registry_mirror`), a version the gate or the approver
turns down is rejected there too, with the reason (`reject_in_mirror`); a champion is approved.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param, dag, task

from mlops_airflow.assets import CHAMPION, EVALUATION, MODEL_CANDIDATE
from mlops_airflow.dag_defaults import DEFAULT_ARGS, START_DATE, env_param, on_failed_run
from mlops_airflow.links import ModelVersionLink, with_links
from mlops_airflow.operators.registry_mirror import RegistryMirrorApprovalOperator


@dag(
    schedule=[MODEL_CANDIDATE],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    description="Score a new model against the champion on the same rows, register it, promote it if it wins.",
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
    on_failure_callback=on_failed_run,
)
def evaluate_register():
    @task(outlets=[EVALUATION], execution_timeout=timedelta(minutes=20))
    def evaluate(**context) -> dict:
        from mlops_airflow.backends import backends_for
        from mlops_airflow.run_notes import record_note
        from mlops_airflow.runtime import fail_fast, settings_for, triggering_extras
        from mlops_core.approval_text import evaluation_approval_text
        from mlops_core.errors import PermanentError
        from mlops_core.outcomes import evaluation_outcome
        from mlops_core.stages.evaluate import candidate_from_run, evaluate_candidate
        from mlops_core.ui_links import mlflow_ui_url

        with fail_fast():
            settings = settings_for(context)
            backends = backends_for(settings)
            params = context["params"]
            candidates = triggering_extras(context, MODEL_CANDIDATE)
            if params.get("mlflow_run_id"):
                candidate = candidate_from_run(settings, params["mlflow_run_id"], backends)
            elif candidates:
                candidate = candidates[-1]  # several queued events: the newest candidate wins
            else:
                raise PermanentError("no triggering model_candidate event: trigger with the 'MLflow run id' param")
            evaluation = evaluate_candidate(
                settings, candidate, backends, min_improvement=params.get("min_improvement")
            )
        evaluation["approval_text"] = evaluation_approval_text(evaluation, mlflow_ui_url())
        record_note(context, evaluation_outcome(evaluation))
        context["outlet_events"][EVALUATION].extra = {k: v for k, v in evaluation.items() if k != "approval_text"}
        return evaluation

    @task.branch
    def route(evaluation: dict) -> str | None:
        """Gate passed: ask a human where the environment requires it. Gate failed: nothing more to do."""
        if not evaluation["promote"]:
            return None
        return "approve_champion" if evaluation["requires_approval"] else "no_approval_required"

    approve_champion = ApprovalOperator(
        task_id="approve_champion",
        subject="Make {{ ti.xcom_pull(task_ids='evaluate')['model_name'] }} version "
        "{{ ti.xcom_pull(task_ids='evaluate')['version'] }} the champion of "
        "{{ ti.xcom_pull(task_ids='evaluate')['env'] }}?",
        body="{{ ti.xcom_pull(task_ids='evaluate')['approval_text'] }}",
        response_timeout=timedelta(days=3),
    )

    @task
    def no_approval_required() -> None:
        """The environment does not require approval (promotion.require_approval: false)."""

    @task(outlets=[CHAMPION], trigger_rule="none_failed_min_one_success")
    def promote(**context) -> dict:
        from mlops_airflow.backends import backends_for
        from mlops_airflow.run_notes import record_note
        from mlops_airflow.runtime import fail_fast, settings_for
        from mlops_core.stages.evaluate import promote_to_champion

        # Read, not passed as an argument: an argument would make evaluate a direct upstream,
        # and its success would run this task even when the gate or the approval said no.
        evaluation = context["ti"].xcom_pull(task_ids="evaluate")
        approval = context["ti"].xcom_pull(task_ids="approve_champion")
        with fail_fast():
            settings = settings_for(context)
            champion = promote_to_champion(settings, evaluation, backends_for(settings), approval=approval)
        by = f" (approved by {champion['approved_by']})" if champion.get("approved_by") else ""
        record_note(context, f"{champion['model_name']} v{champion['version']} is @champion{by}")
        context["outlet_events"][CHAMPION].extra = champion
        return champion

    # none_failed, not all_skipped: a failed evaluate or promote must leave this leaf upstream_failed,
    # or the run would end "success" (Airflow judges a run by its leaves, and a skipped leaf is fine).
    @task(trigger_rule="none_failed", multiple_outputs=True)
    def rejection(**context) -> dict:
        """promote was skipped: the gate or the approver said no. Why, for the registry mirror."""
        from airflow.sdk.exceptions import AirflowSkipException

        from mlops_core.approvals import rejection_reason

        if context["ti"].xcom_pull(task_ids="promote") is not None:
            raise AirflowSkipException("the version was promoted: nothing to reject")
        evaluation = context["ti"].xcom_pull(task_ids="evaluate")
        approval = context["ti"].xcom_pull(task_ids="approve_champion")
        return {
            "model_name": evaluation["model_name"],
            "version": str(evaluation["version"]),
            "reason": rejection_reason(evaluation, approval),
        }

    evaluation = with_links(evaluate(), ModelVersionLink())
    champion = with_links(promote(), ModelVersionLink())
    route(evaluation) >> [approve_champion, no_approval_required()] >> champion
    rejected = rejection()
    champion >> rejected
    RegistryMirrorApprovalOperator(
        task_id="reject_in_mirror",
        decision="reject",
        model_name=rejected["model_name"],
        version=rejected["version"],
        reason=rejected["reason"],
        execution_timeout=timedelta(minutes=10),
    )


evaluate_register()
