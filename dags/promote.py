"""
### Promote: move a champion to the next environment (dev -> staging -> prod)

Manual. Copies the source environment's `@champion` (or a chosen version) into the next
environment's registry namespace and makes it that environment's `@champion`; the deploy DAG
then serves it on that environment's target. When the target environment sets
`promotion.require_approval` (prod by default), a human must approve in the Airflow UI
(Required actions) before anything changes; a rejection skips the promotion.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param, dag, task

from mlops_airflow.assets import CHAMPION
from mlops_airflow.dag_defaults import DEFAULT_ARGS, PROMOTABLE, START_DATE, on_failed_run
from mlops_airflow.links import ModelVersionLink, with_links


@dag(
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    description="Move an environment's champion to the next one (dev -> staging -> prod), approved where required.",
    default_args=DEFAULT_ARGS,
    tags=["mlops", "promotion", "registry"],
    params={
        "from_env": Param(
            "dev",
            type="string",
            enum=PROMOTABLE,
            title="From environment",
            description="Promote this environment's champion to the next one (promotion.next_env).",
        ),
        "version": Param(
            None,
            type=["null", "string"],
            pattern="^[0-9]+$",
            title="Model version",
            description="Version to promote (empty: the source environment's @champion).",
        ),
    },
    on_failure_callback=on_failed_run,
)
def promote():
    @task
    def plan(**context) -> dict:
        from mlops_airflow.backends import backends_for
        from mlops_airflow.runtime import fail_fast
        from mlops_core.approval_text import promotion_approval_text
        from mlops_core.stages.promote import plan_promotion
        from mlops_core.ui_links import mlflow_ui_url

        with fail_fast():
            plan = plan_promotion(context["params"]["from_env"], context["params"].get("version"), backends_for)
        plan["approval_text"] = promotion_approval_text(plan, mlflow_ui_url())
        return plan

    @task.branch
    def needs_approval(plan: dict) -> str:
        return "approve_promotion" if plan["requires_approval"] else "no_approval_required"

    approve_promotion = ApprovalOperator(
        task_id="approve_promotion",
        subject="Promote {{ ti.xcom_pull(task_ids='plan')['source_model'] }} version "
        "{{ ti.xcom_pull(task_ids='plan')['source_version'] }} to "
        "{{ ti.xcom_pull(task_ids='plan')['to_env'] }}?",
        body="{{ ti.xcom_pull(task_ids='plan')['approval_text'] }}",
        response_timeout=timedelta(days=3),
    )

    @task
    def no_approval_required() -> None:
        """The target environment does not require approval (promotion.require_approval: false)."""

    @task(outlets=[CHAMPION], trigger_rule="none_failed_min_one_success")
    def copy_champion(**context) -> dict:
        from mlops_airflow.backends import backends_for
        from mlops_airflow.run_notes import record_note
        from mlops_airflow.runtime import fail_fast
        from mlops_core.settings import load_settings
        from mlops_core.stages.promote import copy_champion as run

        # Read, not passed as an argument (plan would become a direct upstream whose success runs
        # this task even after a rejection); copy_champion checks the approval itself.
        plan = context["ti"].xcom_pull(task_ids="plan")
        approval = context["ti"].xcom_pull(task_ids="approve_promotion")
        with fail_fast():
            target = backends_for(load_settings(plan["to_env"]))  # the target environment's registry and mirror
            source = backends_for(load_settings(plan["from_env"]))  # its store holds the held-out rows
            champion = run(plan, target, approval=approval, source=source)
        by = f", approved by {champion['approved_by']}" if champion.get("approved_by") else ""
        record_note(
            context,
            f"{plan['source_model']} v{plan['source_version']} -> {champion['model_name']} v{champion['version']}{by}",
        )
        context["outlet_events"][CHAMPION].extra = champion
        return champion

    champion = with_links(copy_champion(), ModelVersionLink())
    needs_approval(plan()) >> [approve_promotion, no_approval_required()] >> champion


promote()
