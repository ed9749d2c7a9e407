"""The lifecycle in the Airflow UI: a FastAPI app the project's plugin mounts at ``/mlops`` in the api-server.

- ``/mlops/lifecycle``: per environment, the champion and the last challenger with their metrics,
  the last drift and decay verdicts with links to their reports, what is deployed and whether it
  answers, pending approvals (``?format=json`` or ``/mlops/api/lifecycle``: the same as JSON);
- ``/mlops/reports/<env>/<run key>``: a monitor run's drift report, read from the environment's
  object store (any backend), named by an id that can only name a report (``/mlops/reports/<run
  key>``: the same, from whichever environment has it).

Every route requires an Airflow login (the ``Authorization: Bearer`` JWT, or the cookie the UI
sets) and read access to DAGs, through Airflow's own security dependencies: a request without one
gets 401, with an invalid one 403.

Every Airflow component imports the plugin, so this package stays cheap to import: the FastAPI
app (and MLflow, pandas, the backends) is built on the first request, in the api-server only.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

URL_PREFIX = "/mlops"
LIFECYCLE_PATH = f"{URL_PREFIX}/lifecycle"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class LifecycleApp:
    """An ASGI app that builds the real one (:func:`mlops_airflow.ui.app.create_app`) on its first request."""

    def __init__(self) -> None:
        self._app: Any = None
        self._lock = threading.Lock()

    def _built(self) -> Any:
        with self._lock:
            if self._app is None:
                from mlops_airflow.ui.app import create_app

                self._app = create_app()
            return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app if self._app is not None else self._built()
        await app(scope, receive, send)


def drift_report_url(env: str, key: str) -> str:
    """The report at ``key`` in ``env``'s store as the UI serves it: ``<[api] base_url>mlops/reports/<id>``."""
    from airflow.sdk.configuration import conf

    from mlops_core.drift_reports import report_id

    base = conf.get("api", "base_url", fallback="http://localhost:8080/") or "http://localhost:8080/"
    return f"{base.rstrip('/')}{URL_PREFIX}/reports/{report_id(env, key)}"
