"""The FastAPI app behind ``/mlops`` (see :mod:`mlops_airflow.ui`): the lifecycle view and the drift reports.

Built by :class:`mlops_airflow.ui.LifecycleApp` on the first request, inside the api-server, where
Airflow's auth manager is initialized: every route depends on Airflow's ``requires_access_dag``
(``GET``), which reads the JWT from the ``Authorization`` header or the UI's ``_token`` cookie.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any

from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import requires_access_dag
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

log = logging.getLogger(__name__)

# A drift report is Evidently's page (inline scripts, user data in it): it runs in a sandbox, an
# opaque origin that cannot read the UI's cookie or call the API as the logged-in user.
REPORT_HEADERS = {
    "Content-Security-Policy": "sandbox allow-scripts allow-popups",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "private, no-store",
}
PAGE_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-store"}


def lifecycle(session: Any) -> dict[str, Any]:
    """Every environment's view (``mlops_core.lifecycle_view``) with what Airflow's database says."""
    from mlops_airflow.backends import backends_for
    from mlops_airflow.ui.airflow_records import asset_events, pending_approvals
    from mlops_core.environments import ENVIRONMENTS
    from mlops_core.lifecycle_view import EVENT_ASSETS, environment_view
    from mlops_core.settings import load_settings

    events = asset_events(session, EVENT_ASSETS)
    approvals = pending_approvals(session)
    views = []
    for env in ENVIRONMENTS:
        try:
            settings = load_settings(env)
            views.append(environment_view(settings, backends_for(settings), events=events, approvals=approvals))
        except Exception as exc:  # an environment whose settings or backends cannot be built
            log.warning("Lifecycle view of %s: %s: %s", env, type(exc).__name__, exc)
            views.append({"env": env, "errors": {"settings": f"{type(exc).__name__}: {exc}"[:500]}})
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "environments": views,
        "approvals": approvals,
    }


def _report(env: str, run_key: str) -> bytes:
    """The report named ``<env>/<run_key>``; 400 for a name that cannot be a report, 404 when there is none."""
    from mlops_airflow.backends import store_for
    from mlops_core.drift_reports import UnknownReport, key_for_id, read_report
    from mlops_core.settings import load_settings
    from mlops_core.storage import ObjectNotFound

    try:
        key = key_for_id(env, run_key)
    except UnknownReport as exc:
        raise HTTPException(status_code=400, detail=f"not a report id: {exc}") from None
    try:
        return read_report(store_for(load_settings(env)), key)
    except ObjectNotFound:
        raise HTTPException(status_code=404, detail=f"no drift report {env}/{run_key}") from None


def create_app() -> FastAPI:
    """The app the plugin mounts at ``/mlops``."""
    from mlops_airflow.ui.page import render_lifecycle

    app = FastAPI(
        title="MLOps lifecycle",
        description="The lifecycle view and drift reports of the MLOps plugin (Airflow login required).",
        docs_url=None,
        redoc_url=None,
    )
    router = APIRouter(dependencies=[Depends(requires_access_dag("GET"))])

    @router.get("/lifecycle", response_model=None)
    def lifecycle_page(
        session: SessionDep, format: Annotated[str, Query(pattern="^(html|json)$")] = "html"
    ) -> Response:
        """The lifecycle view: HTML, or JSON with ``?format=json``."""
        data = lifecycle(session)
        if format == "json":
            return JSONResponse(data, headers=PAGE_HEADERS)
        return HTMLResponse(render_lifecycle(data), headers=PAGE_HEADERS)

    @router.get("/api/lifecycle")
    def lifecycle_json(session: SessionDep) -> JSONResponse:
        """The lifecycle view as JSON."""
        return JSONResponse(lifecycle(session), headers=PAGE_HEADERS)

    @router.get("/reports/{env}/{run_key}", response_class=HTMLResponse)
    def drift_report(env: str, run_key: str) -> HTMLResponse:
        """The drift report of one monitor run (``mlops_core.drift_reports``), from the environment's store."""
        return HTMLResponse(_report(env, run_key), headers=REPORT_HEADERS)

    @router.get("/reports/{run_key}", response_class=HTMLResponse)
    def drift_report_of_any_env(run_key: str) -> HTMLResponse:
        """The same, by run key alone (run keys are unique per DAG run): the first environment that has it."""
        from mlops_core.environments import ENVIRONMENTS

        for env in ENVIRONMENTS:
            try:
                return HTMLResponse(_report(env, run_key), headers=REPORT_HEADERS)
            except HTTPException as exc:
                if exc.status_code != 404:
                    raise
        raise HTTPException(status_code=404, detail=f"no drift report {run_key} in any environment")

    app.include_router(router)

    @app.exception_handler(HTTPException)
    async def login_hint(request: Request, exc: HTTPException) -> Response:
        """A browser that is not logged in gets a page that says where to log in (same status code)."""
        if exc.status_code in (401, 403) and "text/html" in request.headers.get("accept", ""):
            from mlops_airflow.ui.page import render_login_hint

            return HTMLResponse(render_login_hint(exc.status_code, str(exc.detail)), status_code=exc.status_code)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    return app
