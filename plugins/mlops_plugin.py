"""The project's Airflow plugin: run notes, REST answers without empty extra links, and the lifecycle in the UI.

Only an ``AirflowPlugin`` lives under ``plugins/`` (Airflow imports every file here under its
bare name); the code it needs is in the ``mlops_airflow`` package. The extra links themselves are
on the tasks that record what they open (``mlops_airflow.links``), not global. Every Airflow
component imports this file, so it imports nothing heavy: the ``/mlops`` FastAPI app (the
lifecycle view and the drift reports, behind Airflow's login) is built on its first request, in
the api-server.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from mlops_airflow import run_notes
from mlops_airflow.links import HIDE_EMPTY_EXTRA_LINKS
from mlops_airflow.ui import LIFECYCLE_PATH, URL_PREFIX, LifecycleApp


class MlopsPlugin(AirflowPlugin):
    name = "mlops"
    listeners = [run_notes]  # noqa: RUF012 - AirflowPlugin's own attribute
    fastapi_root_middlewares = [HIDE_EMPTY_EXTRA_LINKS]  # noqa: RUF012 - AirflowPlugin's own attribute
    fastapi_apps = [{"app": LifecycleApp(), "url_prefix": URL_PREFIX, "name": "MLOps lifecycle"}]  # noqa: RUF012
    external_views = [  # noqa: RUF012 - a menu entry (Browse) that shows the view inside the UI
        {
            "name": "MLOps lifecycle",
            "href": LIFECYCLE_PATH,
            "url_route": "mlops-lifecycle",
            "destination": "nav",
            "category": "browse",
        }
    ]
