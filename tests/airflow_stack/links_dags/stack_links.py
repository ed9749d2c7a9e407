"""Test DAG: the project's extra links on tasks that record something, nothing, or fail."""

from __future__ import annotations

from airflow.sdk import dag, task

from mlops_airflow.links import DriftReportLink, EndpointLink, MlflowRunLink, ModelVersionLink, with_links


@dag(dag_id="stack_links", schedule=None, catchup=False, tags=["airflow_stack_test"])
def stack_links():
    @task
    def register() -> dict:
        return {"model_name": "dev.churn", "version": "3"}

    @task
    def train() -> dict:
        return {"mlflow_run_id": "abc123", "mlflow_experiment_id": "1"}

    @task
    def monitor() -> dict:
        return {"report": "file:///srv/mlops/store/reports/drift/monitor-r1.html", "retrain": False}

    @task
    def deploy_by_name() -> dict:
        return {"deployments": [{"env": "prod", "url": "churn-prod"}]}  # a cloud endpoint: no URL

    @task(retries=0)
    def explode() -> dict:
        raise RuntimeError("boom-before-recording")

    with_links(register(), ModelVersionLink())
    with_links(train(), MlflowRunLink())
    with_links(monitor(), DriftReportLink())
    with_links(deploy_by_name(), EndpointLink())
    with_links(explode(), ModelVersionLink(), MlflowRunLink())


stack_links()
