"""Extra links on task instances: each opens the exact thing its task recorded.

- ``MLflow run`` on ``train.log_to_mlflow``: the training run in the MLflow UI;
- ``Model version`` on ``evaluate_register.evaluate`` and ``.promote`` and ``promote.copy_champion``:
  the registered version in the MLflow UI;
- ``Drift report`` on ``monitor.check_drift``: the report, served through the Airflow UI by the plugin;
- ``Endpoint`` on ``deploy.deploy_champion``: the URL of the serving endpoint it made live.

How Airflow 3 serves them: when a task ends, the worker calls each of the task's links'
``get_link`` and stores the answer as an XCom (``BaseOperatorLink.xcom_key``); the api-server only
reads those XComs back. So a link here resolves from the task's own return value (what the stage
recorded, through the pure functions of ``mlops_core.ui_links``), in the worker, once. When there
is nothing to point at (the task failed or has not run, the MLflow UI is not configured, a cloud
endpoint has no URL), the stored answer is empty and Airflow's REST API would list the link as
``null`` -- which the official ``apache-airflow-client`` refuses (its model wants a string).
:class:`HideEmptyExtraLinks`, a root middleware the plugin installs on the api-server, drops those
entries from ``GET .../taskInstances/{task_id}/links``: a link with nothing behind it is absent.
The Airflow UI already hides a ``null`` link; the middleware makes the REST answer say the same.
"""

from __future__ import annotations

import json
import re
from abc import abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import BaseOperatorLink

from mlops_core import ui_links

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

T = TypeVar("T")


def recorded(ti_key: Any) -> Any:
    """The return value of the task ``ti_key`` is the instance of (None before it returned one).

    In the worker, where Airflow resolves a task's own links when it ends, ``ti_key`` is the running
    task instance and can pull its XCom; anywhere else there is nothing to read.
    """
    pull = getattr(ti_key, "xcom_pull", None)
    if pull is None:
        return None
    try:
        return pull(task_ids=ti_key.task_id)
    except Exception:  # a link must never fail the task it decorates
        return None


def api_base_url() -> str | None:
    """The api-server's public base URL (``[api] base_url``), e.g. ``http://127.0.0.1:8080/``."""
    from airflow.configuration import conf

    return conf.get("api", "base_url", fallback=None)


class RecordedLink(BaseOperatorLink):
    """A link resolved from what the task returned; empty (so hidden) when that names nothing."""

    @abstractmethod
    def resolve(self, record: Mapping[str, Any] | None) -> str | None:
        """The URL for ``record`` (the task's return value), or None."""

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        record = recorded(ti_key)
        return self.resolve(record if isinstance(record, Mapping) else None) or ""


class MlflowRunLink(RecordedLink):
    """The MLflow run a training task logged (``mlflow_experiment_id`` + ``mlflow_run_id``)."""

    name = "MLflow run"

    def resolve(self, record: Mapping[str, Any] | None) -> str | None:
        return ui_links.run_link(record, ui_links.mlflow_ui_url())


class ModelVersionLink(RecordedLink):
    """The model version a registration or promotion recorded (``model_name`` + ``version``)."""

    name = "Model version"

    def resolve(self, record: Mapping[str, Any] | None) -> str | None:
        return ui_links.model_version_link(record, ui_links.mlflow_ui_url())


class DriftReportLink(RecordedLink):
    """The drift report of a monitor run, served through the Airflow UI by the project's plugin."""

    name = "Drift report"

    def resolve(self, record: Mapping[str, Any] | None) -> str | None:
        return ui_links.report_link(record, api_base_url())


class EndpointLink(RecordedLink):
    """The endpoint a deploy made live (its URL; a cloud endpoint known only by name has none)."""

    name = "Endpoint"

    def resolve(self, record: Mapping[str, Any] | None) -> str | None:
        return ui_links.endpoint_link(record)


def with_links(task: T, *links: BaseOperatorLink) -> T:
    """Give a task (an operator, or the output of a ``@task`` call) these extra links; returns ``task``."""
    operator: Any = getattr(task, "operator", task)
    operator.operator_extra_links = (*operator.operator_extra_links, *links)
    return task


# ---------------------------------------------------------------------------------- REST API
_LINKS_PATH = re.compile(r"/api/v2/dags/[^/]+/dagRuns/[^/]+/taskInstances/[^/]+/links/?$")


def without_empty_links(body: bytes) -> bytes:
    """An extra-links answer (``{"extra_links": {...}, "total_entries": n}``) without its empty links."""
    try:
        answer = json.loads(body)
        links = answer["extra_links"]
    except (ValueError, KeyError, TypeError):
        return body
    if not isinstance(links, dict):
        return body
    kept = {name: url for name, url in links.items() if isinstance(url, str) and url}
    if kept == links:
        return body
    answer["extra_links"], answer["total_entries"] = kept, len(kept)
    return json.dumps(answer, separators=(",", ":")).encode()


class HideEmptyExtraLinks:
    """ASGI middleware: ``GET .../taskInstances/{task_id}/links`` lists only links with a URL."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "GET" or not _LINKS_PATH.search(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def rewrite(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body" or not start:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            headers = list(start.get("headers", []))
            encoded = any(k.lower() == b"content-encoding" for k, _ in headers)
            if start.get("status") == 200 and not encoded:
                body = without_empty_links(body)
                headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, rewrite)


HIDE_EMPTY_EXTRA_LINKS = {"middleware": HideEmptyExtraLinks, "name": "mlops: hide extra links with no URL"}
