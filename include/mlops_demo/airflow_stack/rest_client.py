"""A small client for Airflow 3's public REST API v2, and the errors it raises.

    client = AirflowClient("http://127.0.0.1:8080", "admin", password)
    run_id = client.trigger("my_dag", conf={"x": 1})
    assert client.wait_for_run("my_dag", run_id) == "success"

It logs in through the simple auth manager (``POST /auth/token``), refreshes its JWT before it
expires, repeats idempotent calls (GET, PATCH) that fail with a connection error or HTTP 5xx, and
renders the structured task logs of ``GET .../logs/{try}`` as plain text (:func:`render_log`).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import requests

log = logging.getLogger(__name__)

_FINAL_RUN_STATES = frozenset({"success", "failed"})
_T = TypeVar("_T")


class AirflowApiError(RuntimeError):
    """The REST API answered with an unexpected status code."""

    def __init__(self, method: str, url: str, status_code: int, body: str):
        self.method = method
        self.url = url
        self.status_code = status_code
        self.body = body
        super().__init__(f"{method} {url} -> HTTP {status_code}: {body[:2000]}")


class RunFailedError(RuntimeError):
    """A DAG run ended in ``failed``; ``failed_tasks`` maps task id -> tail of its log."""

    def __init__(self, dag_id: str, run_id: str, state: str, failed_tasks: Mapping[str, str]):
        self.dag_id = dag_id
        self.run_id = run_id
        self.state = state
        self.failed_tasks = dict(failed_tasks)
        parts = [f"DAG run {dag_id}/{run_id} ended in state {state!r}; failed tasks: {sorted(failed_tasks)}"]
        for task_id, log_tail in failed_tasks.items():
            parts.append(f"--- log tail of {task_id} ---\n{log_tail}")
        super().__init__("\n".join(parts))


def _jwt_expiry(token: str) -> float | None:
    """Return the ``exp`` claim of a JWT (unverified: we only use it to refresh early)."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        return float(json.loads(base64.urlsafe_b64decode(payload))["exp"])
    except Exception:
        return None


def _timestamp(value: Any) -> datetime | None:
    """An ISO timestamp of the REST API as an aware datetime (``None`` for none)."""
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def render_log(content: Iterable[Any]) -> str:
    """Render the ``content`` of the v2 log endpoint (structured messages) as plain text lines."""
    lines: list[str] = []
    for msg in content:
        if isinstance(msg, str):
            lines.append(msg)
            continue
        if not isinstance(msg, dict):
            lines.append(str(msg))
            continue
        event = str(msg.get("event", ""))
        if event.startswith("::group::") or event == "::endgroup::":
            continue
        head = " ".join(str(x) for x in (msg.get("timestamp"), msg.get("level")) if x)
        lines.append(f"{head} {event}".strip() if head else event)
        for err in msg.get("error_detail") or []:
            if not isinstance(err, dict):
                lines.append(f"    {err}")
                continue
            for frame in err.get("frames") or []:
                lines.append(f"    File {frame.get('filename')}:{frame.get('lineno')} in {frame.get('name')}")
            lines.append(f"    {err.get('exc_type')}: {err.get('exc_value')}")
    return "\n".join(lines)


class AirflowClient:
    """A small client for Airflow's public REST API v2 (simple auth manager JWT login).

    ``POST /auth/token`` with ``{"username", "password"}`` returns ``{"access_token"}`` (status 201;
    ``airflow/api_fastapi/auth/managers/simple/routes/login.py``). The token is refreshed shortly
    before its ``exp`` (``[api_auth] jwt_expiration_time``, default 24 h) and when a request is refused
    with 401 or 403: Airflow answers 403 to a token signed with another secret, which is what every
    token becomes when the stack restarts (a new JWT secret per start).
    """

    def __init__(self, base_url: str, username: str, password: str, *, timeout: float = 45):
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout = timeout
        self._session = requests.Session()
        self._token: str | None = None
        self._token_exp: float | None = None
        self._token_margin = 0.0
        self.logins = 0  # how many times a token was obtained (observability for tests)
        self.since: datetime | None = None  # see scoped()

    def scoped(self, since: datetime) -> AirflowClient:
        """This client seeing only what happened from ``since`` on: the runs still going then or later
        (:meth:`runs`, :meth:`runs_of`) and the asset events from then on (:meth:`asset_events`).

        For users of one stack one after the other (the lifecycles of the end-to-end tests): a run
        that ended before ``since`` belongs to an earlier user. Everything else is the same client.
        """
        if since.tzinfo is None:
            raise ValueError("since must be timezone-aware")
        view = copy.copy(self)
        view.since = since
        return view

    def _run_in_scope(self, run: Mapping[str, Any]) -> bool:
        end = _timestamp(run.get("end_date"))
        return self.since is None or end is None or end >= self.since

    # -- plumbing -------------------------------------------------------------------------------

    def _login(self) -> None:
        resp = self._session.post(
            f"{self.base_url}/auth/token",
            json={"username": self.username, "password": self.password},
            timeout=self.timeout,
        )
        if resp.status_code not in (200, 201):
            raise AirflowApiError("POST", resp.url, resp.status_code, resp.text)
        self.logins += 1
        self._token = resp.json()["access_token"]
        self._token_exp = _jwt_expiry(self._token)
        # refresh a little before expiry: 60 s, or a tenth of the lifetime of short-lived tokens
        self._token_margin = min(60.0, max(0.0, ((self._token_exp or 0) - time.time()) / 10))

    def _auth_header(self) -> dict[str, str]:
        if self._token is None or (self._token_exp is not None and time.time() > self._token_exp - self._token_margin):
            self._login()
        return {"Authorization": f"Bearer {self._token}"}

    def _send(self, method: str, url: str, params: Any, json_body: Any) -> requests.Response:
        return self._session.request(
            method, url, params=params, json=json_body, headers=self._auth_header(), timeout=self.timeout
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        json_body: Any = None,
        ok: Sequence[int] = (200,),
        read_only: bool = False,
        done_on_repeat: Sequence[int] = (),
    ) -> Any:
        """Call ``/api/v2<path>`` and return the decoded JSON (or text).

        ``done_on_repeat``: a write made repeatable by the caller (e.g. a trigger with its own run
        id); on a repeat, these statuses (e.g. 409) mean an earlier attempt did it, and None is
        returned.
        """
        url = f"{self.base_url}/api/v2{path}"
        # GET and PATCH (pause, clear, approve) are safe to repeat, and so are the POSTs that only
        # read (``read_only``, e.g. ``.../dagRuns/list``) and the writes a repeat cannot double
        # (``done_on_repeat``). On SQLite a write can wait out the busy timeout behind another
        # component's transaction and fail with a 500 or a read timeout, or its answer can be lost:
        # repeating it then is the cure.
        idempotent = read_only or bool(done_on_repeat) or method.upper() in ("GET", "PATCH")
        attempts = 4 if idempotent else 1
        for attempt in range(attempts):
            try:
                resp = self._send(method, url, params, json_body)
                if resp.status_code in (401, 403):  # expired, or signed before a restart: log in again once
                    self._token = None
                    resp = self._send(method, url, params, json_body)
            except (requests.ConnectionError, requests.Timeout):
                if attempt + 1 >= attempts:
                    raise
                time.sleep(0.5 * (attempt + 1))
                continue
            if resp.status_code >= 500 and attempt + 1 < attempts:
                time.sleep(0.5 * (attempt + 1))
                continue
            if attempt > 0 and resp.status_code in done_on_repeat:
                log.info("%s %s: HTTP %s on a repeat: an earlier attempt did it", method, path, resp.status_code)
                return None
            if resp.status_code not in ok:
                raise AirflowApiError(method.upper(), resp.url, resp.status_code, resp.text)
            if not resp.content:
                return None
            try:
                return resp.json()
            except ValueError:
                return resp.text
        raise AssertionError("unreachable")  # pragma: no cover

    def request_object(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        json_body: Any = None,
        ok: Sequence[int] = (200,),
        read_only: bool = False,
    ) -> dict[str, Any]:
        """:meth:`request` for endpoints that answer a JSON object; anything else raises AirflowApiError."""
        data = self.request(method, path, params=params, json_body=json_body, ok=ok, read_only=read_only)
        if not isinstance(data, dict):
            raise AirflowApiError(method.upper(), f"{self.base_url}/api/v2{path}", 200, f"not a JSON object: {data!r}")
        return data

    def _paged(self, path: str, key: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self.request("GET", path, params={**(params or {}), "limit": 100, "offset": offset})
            batch = page.get(key) or []
            items.extend(batch)
            offset += len(batch)
            if not batch or offset >= int(page.get("total_entries", 0)):
                return items

    @staticmethod
    def wait_until(
        predicate: Callable[[], _T], timeout: float = 60, interval: float = 1.0, message: str = "condition"
    ) -> _T:
        """Call ``predicate`` until it returns something truthy; return it, or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {message}")
            time.sleep(interval)

    # -- DAGs -----------------------------------------------------------------------------------

    def version(self) -> dict[str, Any]:
        return self.request_object("GET", "/version")

    def dags(self) -> list[dict[str, Any]]:
        return self._paged("/dags", "dags")

    def dag(self, dag_id: str) -> dict[str, Any]:
        return self.request_object("GET", f"/dags/{dag_id}")

    def import_errors(self) -> list[dict[str, Any]]:
        return self._paged("/importErrors", "import_errors")

    def wait_for_dags(self, dag_ids: Iterable[str], timeout: float = 120) -> dict[str, dict[str, Any]]:
        """Wait until the dag-processor has parsed (serialized) every DAG in ``dag_ids``."""
        wanted = list(dag_ids)
        found: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while True:
            for dag_id in wanted:
                if dag_id in found:
                    continue
                try:
                    found[dag_id] = self.dag(dag_id)
                except AirflowApiError as exc:
                    if exc.status_code != 404:
                        raise
            if len(found) == len(wanted):
                return found
            if time.monotonic() >= deadline:
                missing = [d for d in wanted if d not in found]
                errors = "\n".join(
                    f"--- {e.get('filename')}:\n{str(e.get('stack_trace', ''))[-1500:]}" for e in self.import_errors()
                )
                raise TimeoutError(
                    f"DAGs not parsed after {timeout}s: {missing}"
                    + (f"\nimport errors:\n{errors}" if errors else " (no import errors reported)")
                )
            time.sleep(1)

    def set_paused(self, dag_id: str, paused: bool) -> dict[str, Any]:
        return self.request_object("PATCH", f"/dags/{dag_id}", json_body={"is_paused": paused})

    def unpause(self, dag_id: str) -> dict[str, Any]:
        return self.set_paused(dag_id, False)

    def pause(self, dag_id: str) -> dict[str, Any]:
        return self.set_paused(dag_id, True)

    # -- runs -----------------------------------------------------------------------------------

    def trigger(
        self,
        dag_id: str,
        conf: Mapping[str, Any] | None = None,
        logical_date: datetime | str | None = None,
        *,
        run_id: str | None = None,
        note: str | None = None,
    ) -> str:
        """Trigger a manual run and return its run id (``logical_date`` may be None in Airflow 3).

        The run id is chosen here (Airflow's own shape, ``manual__<now>``, unless given), so the
        POST can be repeated safely: on SQLite a write can wait out the busy timeout behind another
        component's transaction and fail with a 500, or its answer can be lost. A repeat that finds
        the run already there (409) means an earlier attempt created it.
        """
        if isinstance(logical_date, datetime):
            if logical_date.tzinfo is None:
                logical_date = logical_date.replace(tzinfo=UTC)
            logical_date = logical_date.isoformat()
        run_id = run_id or f"manual__{datetime.now(UTC).isoformat()}"
        body: dict[str, Any] = {"logical_date": logical_date, "conf": dict(conf or {}), "dag_run_id": run_id}
        if note:
            body["note"] = note
        answer = self.request("POST", f"/dags/{dag_id}/dagRuns", json_body=body, done_on_repeat=(409,))
        return run_id if answer is None else str(answer["dag_run_id"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.request_object("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def runs(self, dag_id: str, **filters: Any) -> list[dict[str, Any]]:
        """All runs of a DAG, oldest first.

        ``filters`` become query parameters, e.g. ``state=["success"]``, ``run_type=["asset_triggered"]``.
        """
        runs = self._paged(f"/dags/{dag_id}/dagRuns", "dag_runs", {"order_by": "id", **filters})
        return [r for r in runs if self._run_in_scope(r)]

    def runs_of(self, dag_ids: Iterable[str], states: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """The runs of several DAGs in one request per page (``POST /dags/~/dagRuns/list``), oldest first.

        A poller that watches a whole lifecycle asks once instead of once per DAG: every request
        costs the api-server the same CPU the tasks it is watching need.
        """
        body: dict[str, Any] = {"dag_ids": list(dag_ids), "order_by": "id", "page_limit": 100}
        if states is not None:
            body["states"] = list(states)
        items: list[dict[str, Any]] = []
        while True:
            page = self.request_object(
                "POST", "/dags/~/dagRuns/list", json_body={**body, "page_offset": len(items)}, read_only=True
            )
            batch = page.get("dag_runs") or []
            items.extend(batch)
            if not batch or len(items) >= int(page.get("total_entries", 0)):
                return [r for r in items if self._run_in_scope(r)]

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        timeout: float = 120,
        *,
        interval: float = 1.0,
        raise_on_failure: bool = True,
    ) -> str:
        """Wait for a run to finish; return its state. A failed run raises :class:`RunFailedError`."""
        deadline = time.monotonic() + timeout
        while True:
            state = str(self.run(dag_id, run_id)["state"])
            if state in _FINAL_RUN_STATES:
                break
            if time.monotonic() >= deadline:
                tis = {t["task_id"]: t.get("state") for t in self.task_instances(dag_id, run_id)}
                raise TimeoutError(f"DAG run {dag_id}/{run_id} still {state!r} after {timeout}s; task states: {tis}")
            time.sleep(interval)
        if state == "failed" and raise_on_failure:
            raise RunFailedError(dag_id, run_id, state, self._failed_task_logs(dag_id, run_id))
        return state

    def _failed_task_logs(self, dag_id: str, run_id: str, lines: int = 40) -> dict[str, str]:
        """Failed / upstream-failed tasks of a run -> the tail of their last try's log."""
        failed: dict[str, str] = {}
        for ti in self.task_instances(dag_id, run_id):
            state = ti.get("state")
            if state not in ("failed", "upstream_failed"):
                continue
            map_index = ti.get("map_index", -1)
            key = ti["task_id"] if map_index < 0 else f"{ti['task_id']}[{map_index}]"
            log = f"(state {state})"
            if state == "failed" and ti.get("try_number"):
                try:
                    text = self.task_log(dag_id, run_id, ti["task_id"], ti["try_number"], map_index=map_index)
                    log = "\n".join(text.splitlines()[-lines:])
                except AirflowApiError as exc:  # the log may be gone; keep the failure visible
                    log = f"(log not available: {exc})"
            failed[key] = log
        return failed

    # -- task instances -------------------------------------------------------------------------

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self._paged(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", "task_instances")

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        return self.request_object("GET", path if map_index < 0 else f"{path}/{map_index}")

    def clear_task(
        self,
        dag_id: str,
        run_id: str,
        task_ids: str | Iterable[str],
        *,
        include_downstream: bool = False,
        reset_dag_run: bool = True,
    ) -> list[dict[str, Any]]:
        """Clear tasks of a run so the scheduler runs them again; return the cleared task instances."""
        ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
        body = {
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": ids,
            "only_failed": False,
            "only_running": False,
            "include_downstream": include_downstream,
            "reset_dag_runs": reset_dag_run,
        }
        cleared: list[dict[str, Any]] = self.request_object(
            "POST", f"/dags/{dag_id}/clearTaskInstances", json_body=body
        )["task_instances"]
        return cleared

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int | None = None, *, map_index: int = -1
    ) -> str:
        """The full log of one try as text (``try_number`` defaults to the latest try)."""
        if try_number is None:
            try_number = int(self.task_instance(dag_id, run_id, task_id, map_index)["try_number"])
        data = self.request(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true", "map_index": map_index},
        )
        if isinstance(data, dict):
            return render_log(data.get("content") or [])
        return str(data)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", *, map_index: int = -1) -> Any:
        """The value of one XCom (as stored: JSON values come back as JSON)."""
        data = self.request(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"map_index": map_index},
        )
        value = data.get("value")
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return json.loads(value)
        return value

    # -- assets ---------------------------------------------------------------------------------

    def assets(self) -> list[dict[str, Any]]:
        return self._paged("/assets", "assets")

    def asset_events(
        self,
        asset_name_or_uri: str | None = None,
        *,
        source_dag_id: str | None = None,
        source_run_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Asset events (oldest first), each with ``extra``, ``name``, ``uri``, ``created_dagruns``."""
        params: dict[str, Any] = {"order_by": "timestamp"}
        if source_dag_id:
            params["source_dag_id"] = source_dag_id
        if source_run_id:
            params["source_run_id"] = source_run_id
        events = self._paged("/assets/events", "asset_events", params)
        if asset_name_or_uri is not None:
            events = [e for e in events if asset_name_or_uri in (e.get("name"), e.get("uri"))]
        if self.since is not None:
            since = self.since
            events = [e for e in events if (_timestamp(e.get("timestamp")) or since) >= since]
        return events

    def queued_asset_events(self, dag_id: str) -> list[dict[str, Any]]:
        """Asset events waiting to schedule a run of ``dag_id`` (``GET /dags/{dag_id}/assets/queuedEvents``).

        An asset event is queued for its consumers in the same transaction that records it, and
        the scheduler removes the queue entry in the one that creates the consumer's run: a DAG
        with neither a queued event nor a queued or running run has nothing on its way.
        """
        page = self.request_object("GET", f"/dags/{dag_id}/assets/queuedEvents", read_only=True)
        return list(page.get("queued_events") or [])

    # -- human in the loop ----------------------------------------------------------------------

    def pending_approvals(self, dag_id: str | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
        """HITL requests nobody has answered yet (``GET .../hitlDetails?response_received=false``)."""
        path = f"/dags/{dag_id or '~'}/dagRuns/{run_id or '~'}/hitlDetails"
        return self._paged(path, "hitl_details", {"response_received": "false"})

    def hitl_detail(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        return self.request_object(
            "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails"
        )

    def respond_approval(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        approve: bool | str | Sequence[str],
        *,
        params_input: Mapping[str, Any] | None = None,
        map_index: int = -1,
    ) -> dict[str, Any]:
        """Answer a HITL request: ``True``/``False`` = "Approve"/"Reject" (ApprovalOperator), or the
        chosen option(s) of any HITL operator."""
        if isinstance(approve, bool):
            chosen = ["Approve" if approve else "Reject"]
        elif isinstance(approve, str):
            chosen = [approve]
        else:
            chosen = list(approve)
        return self.request_object(
            "PATCH",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails",
            json_body={"chosen_options": chosen, "params_input": dict(params_input or {})},
        )
