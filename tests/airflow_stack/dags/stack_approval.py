"""Test DAG: a human approval (Airflow 3 HITL ApprovalOperator) gates a downstream task."""

from __future__ import annotations

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import dag, task


@dag(dag_id="stack_approval", schedule=None, catchup=False, tags=["airflow_stack_test"])
def stack_approval():
    approve = ApprovalOperator(
        task_id="approve",
        subject="Promote the stack test model?",
        body="Approve to run the downstream task.",
    )

    @task
    def after_approval() -> str:
        return "promoted"

    approve >> after_approval()


stack_approval()
