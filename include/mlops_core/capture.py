"""Prediction capture: what every serving target was asked and answered, as a dataset in the object store.

One **capture record** per scoring request, whatever served it (a JSON object, one per line):

- ``request_id`` -- the client's ``X-Request-Id`` when it is a sane token, else one we made up
  (the local proxy returns it in the answer's ``X-Request-Id``); SageMaker: the ``InferenceId``
  the client passed, else SageMaker's ``eventId``;
- ``captured_at`` -- when the request arrived (ISO 8601, UTC); ``latency_ms`` (None where the
  target does not measure it: SageMaker's capture has no latency);
- ``status`` -- the HTTP status returned to the client; ``target`` (``local:dev``,
  ``sagemaker:<endpoint>``), ``model_name``, ``model_version``;
- ``entity_key`` -- the contract's entity key column, and ``entity_keys`` -- its value for each
  input row (None when the request did not carry that column);
- ``columns`` / ``rows`` -- the input rows as sent (``rows`` a list of lists in ``columns`` order),
  ``input_format`` (``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs``, ``csv``)
  or ``input_error`` with ``raw_input`` (the first bytes as text) when the body could not be read;
- ``predictions`` -- the answer's predictions, or ``output_error`` with ``raw_output``.

Layout (the dataset layout: Hive-style day partitions, append-only part files, each written
atomically through :class:`~mlops_core.storage.ObjectStore`)::

    captures/<model>/<env>/event_date=YYYY-MM-DD/part-<first capture time>-<unique>.jsonl

SageMaker writes its own format under ``captures/<model>/<env>/sagemaker/`` (see
:func:`sagemaker_capture_uri`); :func:`read_captures` reads both into the same record shape.

This module imports no pandas at module level: the capture proxy (:mod:`mlops_core.capture_proxy`)
uses :func:`parse_rows`, :func:`capture_record` and :class:`CaptureWriter` on the request path.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import math
import re
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from mlops_core.settings import ServingHealthSettings, Settings
    from mlops_core.storage import ObjectStore

log = logging.getLogger(__name__)

CAPTURES_ROOT = "captures"
SAGEMAKER_FOLDER = "sagemaker"
PARTITION = "event_date="
RAW_LIMIT = 64 * 1024  # characters of an unreadable body kept in its record
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_SAGEMAKER_HOUR = re.compile(r"/(\d{4})/(\d{2})/(\d{2})/(\d{2})/[^/]+\.jsonl$")


# ----------------------------------------------------------------------------- layout
def capture_prefix(model_name: str, env: str) -> str:
    """``captures/<model>/<env>/``: where the captures of one model in one environment live."""
    for part in (model_name, env):
        if not part or "/" in part or part in (".", ".."):
            raise ValueError(f"capture prefix parts must be plain names, got {part!r}")
    return f"{CAPTURES_ROOT}/{model_name}/{env}/"


def sagemaker_capture_uri(store: ObjectStore, model_name: str, env: str) -> str:
    """The ``DestinationS3Uri`` of an endpoint's data capture: ``<store>/captures/<model>/<env>/sagemaker``.

    SageMaker adds ``/<endpoint>/<variant>/yyyy/mm/dd/hh/<file>.jsonl`` below it.
    """
    return store.uri(capture_prefix(model_name, env) + SAGEMAKER_FOLDER)


def request_id_from(header: str | None) -> str:
    """The client's request id when it is a plain token (letters, digits, ``._:-``, at most 128), else a new one."""
    if header and _REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


# ----------------------------------------------------------------------------- request rows
@dataclass(frozen=True)
class ParsedRows:
    """The rows of one scoring request; ``error`` says why there are none."""

    columns: list[str] | None
    rows: list[list[Any]] | None
    input_format: str | None
    error: str | None = None


def _rows_from_records(records: Sequence[Any]) -> tuple[list[str], list[list[Any]]]:
    columns: list[str] = []
    seen: set[str] = set()
    for record in records:
        if not isinstance(record, dict):
            raise ValueError("records must be JSON objects")
        for name in record:
            if name not in seen:
                seen.add(name)
                columns.append(str(name))
    return columns, [[record.get(c) for c in columns] for record in records]


def parse_rows(body: bytes, content_type: str | None) -> ParsedRows:
    """The input rows of a scoring request body, with the MLflow protocol (JSON formats or CSV with a header).

    Never raises: a body that cannot be read gives ``ParsedRows(None, None, None, error)``.
    """
    kind = (content_type or "application/json").split(";")[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ParsedRows(None, None, None, f"body is not UTF-8 ({exc.reason} at byte {exc.start})")
    if kind == "text/csv":
        try:
            table = list(csv.reader(io.StringIO(text)))
        except csv.Error as exc:
            return ParsedRows(None, None, None, f"malformed CSV: {exc}")
        if not table:
            return ParsedRows(None, None, None, "empty CSV")
        return ParsedRows(table[0], [list(r) for r in table[1:]], "csv")
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return ParsedRows(None, None, None, f"malformed JSON: {str(exc)[:200]}")
    try:
        if not isinstance(payload, dict):
            raise ValueError("the body is not a JSON object")
        if "dataframe_split" in payload:
            split = payload["dataframe_split"]
            if not isinstance(split, dict) or not isinstance(split.get("data"), list):
                raise ValueError("dataframe_split needs columns and data")
            data = split["data"]
            columns = split.get("columns")
            if columns is None:
                width = len(data[0]) if data and isinstance(data[0], list) else 0
                columns = [str(i) for i in range(width)]
            if not isinstance(columns, list) or not all(isinstance(r, list) for r in data):
                raise ValueError("dataframe_split columns and data must be lists")
            return ParsedRows([str(c) for c in columns], data, "dataframe_split")
        if "dataframe_records" in payload:
            records = payload["dataframe_records"]
            if not isinstance(records, list):
                raise ValueError("dataframe_records must be a list")
            columns, rows = _rows_from_records(records)
            return ParsedRows(columns, rows, "dataframe_records")
        for key in ("instances", "inputs"):
            if key in payload:
                value = payload[key]
                if isinstance(value, dict):  # columnar: {"col": [values...]}
                    columns = [str(c) for c in value]
                    lists = [v if isinstance(v, list) else [v] for v in value.values()]
                    return ParsedRows(columns, [list(r) for r in zip(*lists, strict=False)], key)
                if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                    columns, rows = _rows_from_records(value)
                    return ParsedRows(columns, rows, key)
                if isinstance(value, list):
                    rows = [v if isinstance(v, list) else [v] for v in value]
                    width = max((len(r) for r in rows), default=0)
                    return ParsedRows([str(i) for i in range(width)], rows, key)
                raise ValueError(f"{key} must be a list or an object")
        raise ValueError("no dataframe_split, dataframe_records, instances or inputs in the body")
    except ValueError as exc:
        return ParsedRows(None, None, None, str(exc))


def parse_predictions(body: bytes) -> tuple[list[Any] | None, str | None]:
    """``(predictions, None)`` from a scoring answer (``{"predictions": [...]}`` or a list), else ``(None, why)``."""
    try:
        answer = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return None, f"answer is not JSON: {str(exc)[:200]}"
    if isinstance(answer, dict) and isinstance(answer.get("predictions"), list):
        return answer["predictions"], None
    if isinstance(answer, list):
        return answer, None
    return None, "answer has no predictions list"


def _raw(body: bytes) -> str:
    return body[:RAW_LIMIT].decode("utf-8", errors="replace")


def capture_record(
    *,
    request_id: str,
    captured_at: datetime,
    latency_ms: float | None,
    status: int,
    target: str,
    model_name: str,
    model_version: str | None,
    entity_key: str | None,
    request_body: bytes,
    request_content_type: str | None,
    response_body: bytes,
) -> dict[str, Any]:
    """One capture record (see the module doc) from a request and its answer; never raises on bad bodies."""
    parsed = parse_rows(request_body, request_content_type)
    record: dict[str, Any] = {
        "request_id": request_id,
        "captured_at": captured_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "latency_ms": None if latency_ms is None else round(latency_ms, 3),
        "status": int(status),
        "target": target,
        "model_name": model_name,
        "model_version": model_version,
        "entity_key": entity_key,
        "entity_keys": None,
        "input_format": parsed.input_format,
        "columns": parsed.columns,
        "rows": parsed.rows,
        "predictions": None,
    }
    if parsed.error is not None:
        record["input_error"] = parsed.error
        record["raw_input"] = _raw(request_body)
    elif entity_key and parsed.columns is not None and parsed.rows is not None:
        if entity_key in parsed.columns:
            at = parsed.columns.index(entity_key)
            record["entity_keys"] = [row[at] if at < len(row) else None for row in parsed.rows]
        else:
            record["entity_keys"] = [None] * len(parsed.rows)
    predictions, why = parse_predictions(response_body)
    if predictions is not None:
        record["predictions"] = predictions
    else:
        record["output_error"] = why
        record["raw_output"] = _raw(response_body)
    return record


# ----------------------------------------------------------------------------- writing
def _compact(instant: str) -> str:
    return re.sub(r"[^0-9]", "", instant)[:20]


class CaptureWriter:
    """Buffers capture records and writes them as part files, every ``flush_records`` records or
    ``flush_seconds`` seconds (a background thread) and on :meth:`close`.

    Each flush writes one ``part-*.jsonl`` per day partition through ``store.put_bytes`` (atomic:
    a reader sees the whole part or none). A store that fails keeps the records in memory for the
    next attempt, up to ``max_buffered`` records; beyond that the oldest are dropped and counted
    (:attr:`dropped`). Nothing here ever raises into the request path: :meth:`add` only appends.
    """

    def __init__(
        self,
        store: ObjectStore,
        prefix: str,
        *,
        flush_records: int = 100,
        flush_seconds: float = 10.0,
        max_buffered: int = 100_000,
    ) -> None:
        self.store = store
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.flush_records = max(1, int(flush_records))
        self.flush_seconds = float(flush_seconds)
        self.max_buffered = max(self.flush_records, int(max_buffered))
        self.dropped = 0
        self.written: list[str] = []
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture-flush", daemon=True)
        self._thread.start()

    def add(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._buffer.append(record)
            over = len(self._buffer) - self.max_buffered
            if over > 0:
                del self._buffer[:over]
                self.dropped += over
                log.error("capture buffer full (store failing?): dropped %d oldest record(s)", over)
            full = len(self._buffer) >= self.flush_records
        if full:
            self._wake.set()

    def _run(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            if not self._closed.is_set():
                self.flush()

    def flush(self) -> int:
        """Write what is buffered now; the number of records written (0 when the store failed: they stay buffered)."""
        with self._flush_lock:
            with self._lock:
                batch, self._buffer = self._buffer, []
            if not batch:
                return 0
            by_day: dict[str, list[dict[str, Any]]] = {}
            for record in batch:
                by_day.setdefault(str(record.get("captured_at", ""))[:10] or "unknown", []).append(record)
            failed: list[dict[str, Any]] = []
            for day, records in sorted(by_day.items()):
                key = (
                    f"{self.prefix}{PARTITION}{day}/part-{_compact(str(records[0].get('captured_at', '')))}-"
                    f"{uuid.uuid4().hex[:12]}.jsonl"
                )
                try:
                    data = "".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in records)
                    self.store.put_bytes(key, data.encode("utf-8"))
                    self.written.append(key)
                except Exception:
                    log.exception(
                        "could not write %d capture record(s) to %s; kept for the next flush", len(records), key
                    )
                    failed.extend(records)
            if failed:
                with self._lock:
                    self._buffer[:0] = failed
            return len(batch) - len(failed)

    def close(self) -> None:
        """Stop the background flushes and write what is left (one attempt)."""
        self._closed.set()
        self._wake.set()
        self._thread.join(timeout=max(1.0, self.flush_seconds))
        self.flush()
        with self._lock:
            left = len(self._buffer)
        if left or self.dropped:
            log.error("capture closed with %d record(s) unwritten and %d dropped", left, self.dropped)


def ship_captures(spool: ObjectStore, store: ObjectStore, prefix: str = CAPTURES_ROOT + "/") -> list[str]:
    """Move the part files under ``prefix`` from ``spool`` (a local folder a server writes without
    credentials) to ``store`` (the environment's store, e.g. S3): copy, then delete from the spool.
    Returns the keys moved; a key already in ``store`` (a repeated run) is only removed from the spool."""
    moved = []
    for key in spool.list_keys(prefix):
        if not store.exists(key):
            store.put_bytes(key, spool.get_bytes(key))
        spool.delete(key)
        moved.append(key)
    return moved


# ----------------------------------------------------------------------------- SageMaker's format
def _sagemaker_data(part: Any) -> bytes:
    if not isinstance(part, dict):
        return b""
    data = part.get("data", "")
    if part.get("encoding") == "BASE64":
        try:
            return base64.b64decode(str(data), validate=False)
        except ValueError:
            return b""
    return str(data).encode("utf-8")


def from_sagemaker(
    line: dict[str, Any], *, target: str, model_name: str, entity_key: str | None, model_version: str | None = None
) -> dict[str, Any]:
    """A SageMaker data-capture line (``captureData.endpointInput/endpointOutput``, ``eventMetadata``)
    as a capture record. SageMaker records no latency and no status: ``latency_ms`` is None and a
    captured answer counts as status 200."""
    data = line.get("captureData") or {}
    meta = line.get("eventMetadata") or {}
    given = meta.get("inferenceTime")
    try:
        captured_at = datetime.fromisoformat(str(given).replace("Z", "+00:00"))
        if captured_at.tzinfo is None:
            captured_at = captured_at.replace(tzinfo=UTC)
    except ValueError:
        captured_at = datetime.fromtimestamp(0, UTC)
    request = data.get("endpointInput") or {}
    answer = data.get("endpointOutput")
    return capture_record(
        request_id=str(meta.get("inferenceId") or meta.get("eventId") or uuid.uuid4().hex),
        captured_at=captured_at,
        latency_ms=None,
        status=200 if answer is not None else 0,
        target=target,
        model_name=model_name,
        model_version=model_version,
        entity_key=entity_key,
        request_body=_sagemaker_data(request),
        request_content_type=request.get("observedContentType") if isinstance(request, dict) else None,
        response_body=_sagemaker_data(answer),
    )


# ----------------------------------------------------------------------------- reading
def _as_utc(instant: datetime) -> datetime:
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


def _days(start: datetime, end: datetime) -> Iterator[date]:
    day = start.date()
    while day <= end.date():
        yield day
        day += timedelta(days=1)


def _lines(data: bytes, key: str) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            log.warning("%s line %d is not JSON; skipped", key, number)
            continue
        if isinstance(value, dict):
            yield value


def _in_window(record: dict[str, Any], start: datetime, end: datetime) -> bool:
    try:
        at = _as_utc(datetime.fromisoformat(str(record["captured_at"]).replace("Z", "+00:00")))
    except (KeyError, ValueError):
        return False
    return start <= at < end


def read_captures(
    store: ObjectStore,
    model_name: str,
    env: str,
    start: datetime,
    end: datetime,
    *,
    entity_key: str | None = None,
) -> list[dict[str, Any]]:
    """The capture records of ``model_name`` in ``env`` captured in ``[start, end)``, oldest first.

    Reads the dataset layout (``event_date=`` partitions of the window's days only) and SageMaker's
    capture files under ``sagemaker/`` (hour folders of the window only; ``entity_key`` names the
    contract's entity key for those, which SageMaker does not know).
    """
    start, end = _as_utc(start), _as_utc(end)
    prefix = capture_prefix(model_name, env)
    records: list[dict[str, Any]] = []
    for day in _days(start, end):
        part_prefix = f"{prefix}{PARTITION}{day.isoformat()}/"
        for key in store.list_keys(part_prefix):
            if key.endswith(".jsonl"):
                records.extend(r for r in _lines(store.get_bytes(key), key) if _in_window(r, start, end))
    first_hour = start.replace(minute=0, second=0, microsecond=0)
    for key in store.list_keys(prefix + SAGEMAKER_FOLDER + "/"):
        hour = _SAGEMAKER_HOUR.search(key)
        if hour is None:
            continue
        year, month, mday, hh = (int(g) for g in hour.groups())
        at = datetime(year, month, mday, hh, tzinfo=UTC)
        if not first_hour <= at < end:
            continue
        endpoint = key[len(prefix) + len(SAGEMAKER_FOLDER) + 1 :].split("/")[0]
        for line in _lines(store.get_foreign_bytes(key), key):
            record = from_sagemaker(line, target=f"sagemaker:{endpoint}", model_name=model_name, entity_key=entity_key)
            if _in_window(record, start, end):
                records.append(record)
    records.sort(key=lambda r: str(r["captured_at"]))
    return records


def capture_rows(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per scored input row: ``request_id``, ``captured_at`` (UTC timestamp), ``model_version``,
    ``status``, ``entity_key`` (the key's value), ``prediction``, then the input columns.

    Requests whose body could not be read, or whose answer has no prediction per row, contribute no rows.
    """
    import pandas as pd

    frames = []
    for record in records:
        rows, columns, predictions = record.get("rows"), record.get("columns"), record.get("predictions")
        if not rows or columns is None or predictions is None or len(predictions) != len(rows):
            continue
        frame = pd.DataFrame([list(r)[: len(columns)] for r in rows], columns=columns[: max(map(len, rows))])
        keys = record.get("entity_keys") or [None] * len(rows)
        meta = pd.DataFrame(
            {
                "request_id": record["request_id"],
                "captured_at": record["captured_at"],
                "model_version": record.get("model_version"),
                "status": record.get("status"),
                "entity_key": keys,
                "prediction": predictions,
            }
        )
        frames.append(pd.concat([meta, frame.drop(columns=[c for c in meta if c in frame])], axis=1))
    if not frames:
        return pd.DataFrame(
            columns=["request_id", "captured_at", "model_version", "status", "entity_key", "prediction"]
        )
    out = pd.concat(frames, ignore_index=True)
    out["captured_at"] = pd.to_datetime(out["captured_at"], utc=True, format="ISO8601")
    return out


# ----------------------------------------------------------------------------- serving health
@dataclass(frozen=True)
class ServingHealth:
    """Serving health of a window of capture records. Latencies are over requests that measured one."""

    requests: int
    errors: int
    error_rate: float
    p50_latency_ms: float | None
    p95_latency_ms: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "p50_latency_ms": self.p50_latency_ms,
            "p95_latency_ms": self.p95_latency_ms,
        }


def _percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def serving_health(records: Iterable[dict[str, Any]]) -> ServingHealth:
    """Request count, error rate (status not 2xx: what the client got was no answer), p50/p95 latency."""
    requests = errors = 0
    latencies: list[float] = []
    for record in records:
        requests += 1
        status = record.get("status")
        if not isinstance(status, int) or not 200 <= status < 300:
            errors += 1
        latency = record.get("latency_ms")
        if isinstance(latency, (int, float)) and math.isfinite(latency):
            latencies.append(float(latency))
    latencies.sort()
    return ServingHealth(
        requests=requests,
        errors=errors,
        error_rate=errors / requests if requests else 0.0,
        p50_latency_ms=round(_percentile(latencies, 0.5), 3) if latencies else None,
        p95_latency_ms=round(_percentile(latencies, 0.95), 3) if latencies else None,
    )


@dataclass(frozen=True)
class HealthVerdict:
    """Whether serving health is within its thresholds; ``reasons`` names each breach."""

    healthy: bool
    reasons: list[str]
    health: ServingHealth


def judge_serving_health(
    health: ServingHealth, *, max_error_rate: float, max_p95_latency_ms: float, min_requests: int
) -> HealthVerdict:
    """``health`` against the ``serving_health`` settings; fewer than ``min_requests`` requests judge nothing."""
    reasons = []
    if health.requests >= min_requests:
        if health.error_rate > max_error_rate:
            reasons.append(
                f"error rate {health.error_rate:.3f} ({health.errors}/{health.requests}) above {max_error_rate}"
            )
        if health.p95_latency_ms is not None and health.p95_latency_ms > max_p95_latency_ms:
            reasons.append(f"p95 latency {health.p95_latency_ms} ms above {max_p95_latency_ms} ms")
    return HealthVerdict(not reasons, reasons, health)


# ----------------------------------------------------------------------------- for the monitor
def environment_captures(
    settings: Settings, store: ObjectStore, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """The capture records of the environment's model in ``[start, end)``, whatever served it.

    ``store`` is the environment's object store (built by the caller: local folder or S3). When the
    local scoring server spools its captures (a store that is not a local folder), they are moved
    to ``store`` first (:func:`ship_captures`).
    """
    from mlops_core.backends import capture_spool
    from mlops_core.storage import LocalObjectStore

    spool = capture_spool(settings)
    if settings.backends.storage != "local" and spool.is_dir():
        ship_captures(LocalObjectStore(spool), store)
    return read_captures(
        store, settings.training.model_name, settings.env, start, end, entity_key=settings.contract.entity_key
    )


def serving_health_verdict(records: Iterable[dict[str, Any]], thresholds: ServingHealthSettings) -> HealthVerdict:
    """:func:`serving_health` of ``records`` judged against the ``serving_health:`` settings."""
    return judge_serving_health(
        serving_health(records),
        max_error_rate=thresholds.max_error_rate,
        max_p95_latency_ms=thresholds.max_p95_latency_ms,
        min_requests=thresholds.min_requests,
    )
