"""Extra links shown on task instances in the Airflow UI."""

from __future__ import annotations

import os

from airflow.sdk import BaseOperatorLink


class MlflowExperimentLink(BaseOperatorLink):
    """Opens the MLflow UI when ``MLFLOW_UI_URL`` is set (e.g. http://localhost:5000)."""

    name = "MLflow"

    def get_link(self, operator, *, ti_key) -> str:
        return os.environ.get("MLFLOW_UI_URL", "")
