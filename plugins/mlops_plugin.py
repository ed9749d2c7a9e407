"""The project's Airflow plugin: run notes, and REST answers without empty extra links.

Only an ``AirflowPlugin`` lives under ``plugins/`` (Airflow imports every file here under its
bare name); the code it needs is in the ``mlops_airflow`` package. The extra links themselves are
on the tasks that record what they open (``mlops_airflow.links``), not global.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from mlops_airflow import run_notes
from mlops_airflow.links import HIDE_EMPTY_EXTRA_LINKS


class MlopsPlugin(AirflowPlugin):
    name = "mlops"
    listeners = [run_notes]  # noqa: RUF012 - AirflowPlugin's own attribute
    fastapi_root_middlewares = [HIDE_EMPTY_EXTRA_LINKS]  # noqa: RUF012 - AirflowPlugin's own attribute
