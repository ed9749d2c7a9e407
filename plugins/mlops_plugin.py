"""The project's Airflow plugin: a link from every MLOps task to the MLflow UI, and run notes.

Only an ``AirflowPlugin`` lives under ``plugins/`` (Airflow imports every file here under its
bare name); the code it needs is in the ``mlops_airflow`` package.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from mlops_airflow import run_notes
from mlops_airflow.links import MlflowExperimentLink


class MlopsPlugin(AirflowPlugin):
    name = "mlops"
    global_operator_extra_links = [MlflowExperimentLink()]  # noqa: RUF012 - AirflowPlugin's own attribute
    listeners = [run_notes]  # noqa: RUF012 - AirflowPlugin's own attribute
