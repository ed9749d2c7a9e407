"""Test DAG: a task that imports MLflow and logs through an MLflow logger, as the lifecycle tasks do."""

from __future__ import annotations

import logging

from airflow.sdk import dag, task


@dag(dag_id="stack_mlflow_logging", schedule=None, catchup=False, tags=["airflow_stack_test"])
def stack_mlflow_logging():
    @task
    def log_through_mlflow() -> None:
        import mlflow  # noqa: F401 - importing MLflow is what installs (or not) its stderr handler

        logging.getLogger("mlflow.store.db.utils").info("mlflow-info-marker")
        logging.getLogger("mlflow.store.db.utils").warning("mlflow-warning-marker")

    log_through_mlflow()


stack_mlflow_logging()
