"""Where a person opens what a stage recorded: an MLflow run, a model version, a drift report, an endpoint.

Pure functions over the records the stages return (a task's XCom): each answers a URL, or None when
the record names nothing to open (or the UI it would open is not configured). The Airflow extra links
(``mlops_airflow.links``) and the approval text (``mlops_core.outcomes``) build their links here, so
a link reads the same in both places.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

MLFLOW_UI_ENV = "MLFLOW_UI_URL"
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")  # run ids, experiment ids, versions, report ids


def web_base(url: Any) -> str | None:
    """``url`` without a trailing slash if it is a plain http(s) URL (no credentials, query or fragment)."""
    if not isinstance(url, str) or not url.strip():
        return None
    text: str = url.strip()
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return None
    if parts.query or parts.fragment or not text.isprintable() or " " in text:
        return None
    return text.rstrip("/")


def mlflow_ui_url() -> str | None:
    """The MLflow UI every link points at (``$MLFLOW_UI_URL``, e.g. ``http://127.0.0.1:5000``); None when unset."""
    return web_base(os.environ.get(MLFLOW_UI_ENV, ""))


def _id(value: Any) -> str | None:
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
    return text if _ID.match(text) else None


def mlflow_run_url(mlflow_ui: str | None, experiment_id: Any, run_id: Any) -> str | None:
    """``<ui>/#/experiments/<experiment>/runs/<run>``."""
    base, exp, run = web_base(mlflow_ui), _id(experiment_id), _id(run_id)
    return f"{base}/#/experiments/{exp}/runs/{run}" if base and exp and run else None


def mlflow_model_version_url(mlflow_ui: str | None, model_name: Any, version: Any) -> str | None:
    """``<ui>/#/models/<name>/versions/<version>`` (the name URL-quoted: ``dev.churn`` stays as it is)."""
    base, ver = web_base(mlflow_ui), _id(version)
    if not base or not ver or not isinstance(model_name, str) or not model_name.strip():
        return None
    return f"{base}/#/models/{quote(model_name, safe='')}/versions/{ver}"


def drift_report_id(report: Any) -> str | None:
    """The id of a drift report from its stored location (``.../reports/drift/<id>.html``), or None."""
    if not isinstance(report, str) or not report.endswith(".html"):
        return None
    return _id(report.rsplit("/", 1)[-1][: -len(".html")])


def drift_report_url(api_base: str | None, report: Any) -> str | None:
    """The drift report as the project's Airflow plugin serves it: ``<api base url>mlops/reports/<id>``.

    The one place that knows the plugin's route: change it here if the route moves.
    """
    base, report_id = web_base(api_base), drift_report_id(report)
    return f"{base}/mlops/reports/{report_id}" if base and report_id else None


def run_link(record: Mapping[str, Any] | None, mlflow_ui: str | None) -> str | None:
    """The MLflow run a training record names (``mlflow_experiment_id`` + ``mlflow_run_id``)."""
    if not isinstance(record, Mapping):
        return None
    return mlflow_run_url(mlflow_ui, record.get("mlflow_experiment_id"), record.get("mlflow_run_id"))


def model_version_link(record: Mapping[str, Any] | None, mlflow_ui: str | None) -> str | None:
    """The registered model version a record names (``model_name`` + ``version``)."""
    if not isinstance(record, Mapping):
        return None
    return mlflow_model_version_url(mlflow_ui, record.get("model_name"), record.get("version"))


def report_link(record: Mapping[str, Any] | None, api_base: str | None) -> str | None:
    """The drift report a monitor verdict names (``report``: its stored location)."""
    if not isinstance(record, Mapping):
        return None
    return drift_report_url(api_base, record.get("report"))


def endpoint_link(record: Mapping[str, Any] | None) -> str | None:
    """The endpoint a deploy record names: its ``url``, or the newest of its ``deployments``' URLs."""
    if not isinstance(record, Mapping):
        return None
    deployments = record.get("deployments")
    if isinstance(deployments, list):
        urls = [web_base(d.get("url")) for d in deployments if isinstance(d, Mapping)]
        return next((u for u in reversed(urls) if u), None)
    return web_base(record.get("url"))
