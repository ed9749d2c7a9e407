"""Read a delivered file and check it against the dataset contract.

Two levels of answer:

* **File level** — the file as a whole cannot be used (not UTF-8, empty, cut off mid-write, a
  column missing, an unknown column under ``unknown_columns: reject``). :func:`read_source` and
  :func:`validate` raise :class:`FileRejected` with a short ``reason`` code; the caller
  quarantines the raw bytes.
* **Row level** — single rows break the contract (wrong type, null where not allowed, out of
  range, not an allowed value, a repeat of an earlier row). :func:`validate` returns them in
  ``ValidationResult.rejected`` with the original values and a ``_reason``; the other rows are
  typed and returned in ``ValidationResult.accepted``.

Everything is read as text first (empty string = null) so that typing happens here, in one
place, with one set of rules, whatever the file format.

Row keys: a row's ``_row_key`` is the first 32 hex characters of a SHA-256 over a canonical
JSON encoding of ``["key", <entity key>, <event time ISO-8601 UTC>]`` when the contract has
both an entity key and an event time, otherwise of ``["row", [[column, value], ...]]`` over all
contract columns sorted by name. Canonical values: ints as decimal digits, floats as Python
``repr``, bools as ``true``/``false``, timestamps as ``Timestamp.isoformat()`` in UTC, strings
as given, nulls as JSON ``null``. Two spellings of the same value (``042`` / ``42``,
``2024-01-01T00:00:00Z`` / ``2024-01-01 00:00:00+00:00``) therefore give the same key.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Callable

import numpy as np
import pandas as pd

from mlops_core.contract import (
    ENTITY_COLUMN,
    EVENT_TIME_COLUMN,
    ROW_KEY_COLUMN,
    SOURCE_COLUMN,
    ColumnSpec,
    DatasetContract,
)

log = logging.getLogger(__name__)

REASON_COLUMN = "_reason"  # why a row was rejected; several problems joined with "; "
ROW_NUMBER_COLUMN = "_row_number"  # 1-based position of the row among the file's data rows
DUPLICATE_ROW = "duplicate_row"
ROW_KEY_LENGTH = 32

SUPPORTED_SUFFIXES = (".csv", ".parquet")

PANDAS_DTYPES = {
    "int": "Int64",
    "float": "float64",
    "bool": "boolean",
    "timestamp": "datetime64[ns, UTC]",
    "category": "string",
    "string": "string",
}

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
_INT_TEXT = re.compile(r"[+-]?\d+")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class FileRejected(ValueError):
    """A whole source file cannot be used; ``reason`` is a short machine-readable code.

    Codes: ``empty``, ``not_utf8``, ``truncated``, ``unparseable``, ``unsupported_format``,
    ``bad_header``, ``missing_columns``, ``unknown_columns``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ValidationResult:
    """Outcome of validating one source against a contract.

    ``accepted``: typed contract columns plus ``_event_time``, ``_entity``, ``_row_key``,
    ``_source``. ``rejected``: contract columns with the original text, plus ``_reason``,
    ``_source`` and ``_row_number``. ``reason_counts`` counts rejected rows per problem code
    (``<column>:<problem>`` or ``duplicate_row``); a row with two problems counts under both.
    """

    accepted: pd.DataFrame
    rejected: pd.DataFrame
    source: str = ""
    reason_counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Row counts for logs, quarantine records and asset-event metadata."""
        return {
            "source": self.source,
            "rows_total": len(self.accepted) + len(self.rejected),
            "rows_accepted": len(self.accepted),
            "rows_rejected": len(self.rejected),
            "reasons": dict(sorted(self.reason_counts.items())),
        }


# --------------------------------------------------------------------------- reading files
def read_source(data: bytes, name: str) -> pd.DataFrame:
    """Parse a delivered file into a DataFrame of strings (empty string = null).

    The format is chosen by the suffix of ``name`` (``.csv`` or ``.parquet``). Parquet columns of
    any type are turned into text so that :func:`validate` types every format the same way.

    Raises:
        FileRejected: with reason ``unsupported_format``, ``empty``, ``not_utf8``,
            ``truncated``, ``unparseable`` or ``bad_header``.
    """
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise FileRejected(
            "unsupported_format",
            f"{name}: unsupported file type {suffix or '(no suffix)'!r}; deliver {' or '.join(SUPPORTED_SUFFIXES)} files",
        )
    if not data or not data.strip():
        raise FileRejected("empty", f"{name}: the file is empty; deliver a file with a header and data rows")
    frame = _read_csv(data, name) if suffix == ".csv" else _read_parquet(data, name)
    log.info("read %s: %d rows, %d columns", name, len(frame), len(frame.columns))
    return frame


def _read_csv(data: bytes, name: str) -> pd.DataFrame:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileRejected(
            "not_utf8",
            f"{name}: not valid UTF-8 (byte {exc.start}: {data[exc.start:exc.start + 1]!r}); "
            "re-export the file as UTF-8",
        ) from exc
    if not text.strip():
        raise FileRejected("empty", f"{name}: the file is empty; deliver a file with a header and data rows")

    records: list[list[str]] = []
    try:
        for record in csv.reader(io.StringIO(text, newline=""), strict=True):
            if record:  # a blank line is not a row
                records.append(record)
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            raise FileRejected(
                "truncated",
                f"{name}: the file ends inside a quoted value, so it was cut off while being written; "
                "deliver the complete file again",
            ) from exc
        raise FileRejected("unparseable", f"{name}: not a valid CSV file ({exc}); fix the file and deliver it again") from exc

    header = [h.strip() for h in records[0]]
    _check_header(header, name)
    rows = records[1:]
    if not rows:
        raise FileRejected("empty", f"{name}: the file has a header but no data rows; deliver a file with data")

    width = len(header)
    last = rows[-1]
    if len(last) < width and not text.endswith(("\n", "\r")):
        raise FileRejected(
            "truncated",
            f"{name}: the last line has {len(last)} of {width} fields and no line end, so the file was cut off "
            "while being written; deliver the complete file again",
        )
    ragged = [(i, len(r)) for i, r in enumerate(rows, start=1) if len(r) != width]
    if ragged:
        first_row, first_len = ragged[0]
        raise FileRejected(
            "truncated",
            f"{name}: {len(ragged)} row(s) do not have the {width} fields of the header "
            f"(first: data row {first_row} has {first_len}); the file is damaged or was cut off, "
            "fix the file and deliver it again",
        )
    return pd.DataFrame.from_records(rows, columns=header).astype(object)


def _read_parquet(data: bytes, name: str) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise FileRejected(
            "unparseable", f"{name}: not a readable Parquet file ({exc}); re-export the file and deliver it again"
        ) from exc
    _check_header(list(table.column_names), name)
    if table.num_rows == 0:
        raise FileRejected("empty", f"{name}: the Parquet file has no rows; deliver a file with data")
    return pd.DataFrame({col: _arrow_to_text(table.column(col)) for col in table.column_names}, dtype=object)


def _arrow_to_text(column: Any) -> list[str]:
    """One Arrow column as text; null (and float NaN) becomes the empty string."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(column.type):
        column = pc.cast(column, column.type.value_type)
    if pa.types.is_floating(column.type):
        column = pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column)
    try:
        return pc.fill_null(pc.cast(column, pa.string()), "").to_pylist()
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        # Types Arrow cannot cast to text (lists, structs, binary that is not UTF-8, ...).
        return [_python_to_text(v) for v in column.to_pylist()]


def _python_to_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _check_header(header: list[str], name: str) -> None:
    if any(not h for h in header):
        raise FileRejected("bad_header", f"{name}: the header has an empty column name; name every column")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise FileRejected("bad_header", f"{name}: duplicate column name(s) {dupes}; each column must appear once")


# --------------------------------------------------------------------------- typing values
class _BadValue(ValueError):
    """A single value cannot be read as its column's type."""


def _parse_int(text: str) -> int:
    if _INT_TEXT.fullmatch(text):
        value = int(text)
    else:
        try:
            number = float(text)
        except ValueError:
            raise _BadValue("is not an integer") from None
        if not math.isfinite(number) or not number.is_integer():
            raise _BadValue("is not an integer")
        value = int(number)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise _BadValue("is outside the 64-bit integer range")
    return value


def _parse_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _BadValue("is not a number") from None
    if not math.isfinite(value):
        raise _BadValue("is not a finite number")
    return value


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise _BadValue("is not a boolean (use true/false, 1/0 or yes/no)")


def _parse_timestamp(text: str) -> pd.Timestamp:
    parsed = pd.to_datetime(pd.Series([text]), utc=True, errors="coerce", format="ISO8601").iloc[0]
    if pd.isna(parsed):
        raise _BadValue("is not an ISO-8601 timestamp between 1677 and 2262")
    return parsed


_PARSERS: dict[str, Callable[[str], Any]] = {
    "int": _parse_int,
    "float": _parse_float,
    "bool": _parse_bool,
    "timestamp": _parse_timestamp,
    "category": str,
    "string": str,
}


def _typed_column(texts: pd.Series, spec: ColumnSpec) -> tuple[list[Any], list[tuple[str, str] | None]]:
    """Parse one column; return the typed values (None for null/bad) and one problem per row.

    A problem is ``(code, message)`` with code ``<column>:<problem>``; ``None`` means the value is fine.
    """
    values: list[Any] = [None] * len(texts)
    problems: list[tuple[str, str] | None] = [None] * len(texts)
    strip = spec.type not in ("string", "category")
    if spec.type == "timestamp":
        stripped = texts.map(lambda t: t.strip() or None)
        parsed = pd.to_datetime(stripped, utc=True, errors="coerce", format="ISO8601")
    for i, text in enumerate(texts):
        raw = text.strip() if strip else text
        if raw == "":
            continue  # null; nullability is checked by the caller
        try:
            if spec.type == "timestamp":
                value = parsed.iloc[i]
                if pd.isna(value):
                    raise _BadValue("is not an ISO-8601 timestamp between 1677 and 2262")
            else:
                value = _PARSERS[spec.type](raw)
        except _BadValue as exc:
            problems[i] = (f"{spec.name}:wrong_type", f"{spec.name}: {_show(raw)} {exc}")
            continue
        values[i] = value
    return values, problems


def _allowed_values(spec: ColumnSpec) -> frozenset[Any] | None:
    """The contract's allowed values in the column's type (``[0, 1]`` compares as ints)."""
    if spec.allowed is None:
        return None
    parser = _PARSERS[spec.type]
    out = set()
    for value in spec.allowed:
        text = "true" if value is True else "false" if value is False else str(value)
        try:
            out.add(parser(text))
        except _BadValue as exc:
            raise ValueError(
                f"contract column {spec.name!r}: allowed value {value!r} {exc}; fix the contract"
            ) from None
    return frozenset(out)


def _check_value(value: Any, raw: str, spec: ColumnSpec, allowed: frozenset[Any] | None) -> tuple[str, str] | None:
    if spec.min is not None and spec.is_numeric and value < spec.min:
        return f"{spec.name}:below_min", f"{spec.name}: {raw} below min {_show_bound(spec.min)}"
    if spec.max is not None and spec.is_numeric and value > spec.max:
        return f"{spec.name}:above_max", f"{spec.name}: {raw} above max {_show_bound(spec.max)}"
    if allowed is not None and value not in allowed:
        return f"{spec.name}:not_allowed", f"{spec.name}: {_show(raw)} not in allowed {list(spec.allowed or ())}"
    return None


def _show(raw: str) -> str:
    return repr(raw if len(raw) <= 60 else raw[:57] + "...")


def _show_bound(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


# --------------------------------------------------------------------------- row keys
def canonical_value(value: Any, column_type: str) -> Any:
    """The value as it goes into a row key (see the module docstring); ``None`` for null."""
    if _is_null(value):
        return None
    if column_type == "int":
        return str(int(value))
    if column_type == "float":
        number = float(value)
        return repr(0.0 if number == 0 else number)
    if column_type == "bool":
        return "true" if bool(value) else "false"
    if column_type == "timestamp":
        stamp = pd.Timestamp(value)
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
        return stamp.isoformat()
    return str(value)


def _digest(payload: Any) -> str:
    blob = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:ROW_KEY_LENGTH]


def row_keys(typed: pd.DataFrame, contract: DatasetContract) -> list[str]:
    """``_row_key`` of every row of a typed frame (contract columns with contract dtypes)."""
    if contract.entity_key and contract.event_time:
        entity = [canonical_value(v, contract.column(contract.entity_key).type) for v in typed[contract.entity_key]]
        times = [canonical_value(v, "timestamp") for v in typed[contract.event_time]]
        return [_digest(["key", e, t]) for e, t in zip(entity, times)]
    names = sorted(contract.column_names)
    columns = [[canonical_value(v, contract.column(n).type) for v in typed[n]] for n in names]
    return [_digest(["row", [[n, v] for n, v in zip(names, values)]]) for values in zip(*columns)]


# --------------------------------------------------------------------------- validation
def validate(df: pd.DataFrame, contract: DatasetContract, source: str, ingested_at: pd.Timestamp) -> ValidationResult:
    """Check every row of ``df`` against ``contract``; split it into typed accepted and rejected rows.

    Args:
        df: the file's rows, ideally as text from :func:`read_source` (other values are turned
            into text first; ``None``/NaN become null).
        contract: the dataset contract.
        source: where the rows came from (file key or SQL table + watermark); kept in ``_source``.
        ingested_at: ingestion time, used as ``_event_time`` when the contract has no event time
            (naive values are taken as UTC).

    Raises:
        FileRejected: ``missing_columns`` or ``unknown_columns`` (with ``unknown_columns: reject``).
    """
    frame = _as_text(df)
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in contract.column_names if c not in frame.columns]
    if missing:
        raise FileRejected(
            "missing_columns",
            f"{source}: missing column(s) {missing} required by contract {contract.name!r}; "
            "add them to the file or change the contract",
        )
    unknown = [c for c in frame.columns if c not in contract.column_names]
    if unknown and contract.unknown_columns == "reject":
        raise FileRejected(
            "unknown_columns",
            f"{source}: column(s) {unknown} are not in contract {contract.name!r}; remove them from the file, "
            "add them to the contract, or set 'unknown_columns: drop' in the contract",
        )
    if unknown:
        log.info("%s: dropping column(s) %s not in contract %s", source, unknown, contract.name)
    frame = frame[contract.column_names].reset_index(drop=True)
    n = len(frame)

    problems: list[list[tuple[str, str]]] = [[] for _ in range(n)]
    typed: dict[str, pd.Series] = {}
    key_columns = set(contract.key_columns)
    for spec in contract.columns:
        texts = frame[spec.name]
        values, type_problems = _typed_column(texts, spec)
        allowed = _allowed_values(spec)
        for i, (value, problem) in enumerate(zip(values, type_problems)):
            if problem is not None:
                problems[i].append(problem)
            elif value is None:
                if spec.name in key_columns:
                    problems[i].append((f"{spec.name}:null", f"{spec.name}: null in key column (entity key and event time are required)"))
                elif not spec.nullable:
                    problems[i].append((f"{spec.name}:null", f"{spec.name}: null in non-nullable column"))
            else:
                check = _check_value(value, texts.iat[i].strip() if spec.is_numeric else texts.iat[i], spec, allowed)
                if check is not None:
                    problems[i].append(check)
        typed[spec.name] = pd.Series(values, dtype=object)

    good = [not p for p in problems]
    typed_frame = _to_dtypes(pd.DataFrame(typed, index=range(n)), contract).loc[good].reset_index(drop=True)
    positions = [i for i in range(n) if good[i]]
    keys = row_keys(typed_frame, contract)

    # A repeat of an earlier row of the same file is rejected; the first one is kept.
    first_seen: dict[str, int] = {}
    keep: list[bool] = []
    for pos, key in zip(positions, keys):
        if key in first_seen:
            problems[pos].append((DUPLICATE_ROW, f"{DUPLICATE_ROW}: same row key as data row {first_seen[key] + 1}"))
            keep.append(False)
        else:
            first_seen[key] = pos
            keep.append(True)

    accepted = typed_frame.loc[keep].reset_index(drop=True)
    accepted_keys = [k for k, kept in zip(keys, keep) if kept]
    accepted[EVENT_TIME_COLUMN] = _event_times(accepted, contract, ingested_at)
    if contract.entity_key:
        entity_type = contract.column(contract.entity_key).type
        entities = [canonical_value(v, entity_type) for v in accepted[contract.entity_key]]
    else:
        entities = accepted_keys
    accepted[ENTITY_COLUMN] = pd.Series(entities, dtype="string")
    accepted[ROW_KEY_COLUMN] = pd.Series(accepted_keys, dtype="string")
    accepted[SOURCE_COLUMN] = pd.Series([source] * len(accepted), dtype="string")

    bad = [i for i in range(n) if problems[i]]
    rejected = frame.iloc[bad].reset_index(drop=True).astype(object)
    rejected[REASON_COLUMN] = pd.Series(["; ".join(m for _, m in problems[i]) for i in bad], dtype=object)
    rejected[SOURCE_COLUMN] = pd.Series([source] * len(bad), dtype=object)
    rejected[ROW_NUMBER_COLUMN] = pd.Series([i + 1 for i in bad], dtype="int64")

    counts: Counter[str] = Counter()
    for i in bad:
        counts.update({code for code, _ in problems[i]})
    result = ValidationResult(accepted=accepted, rejected=rejected, source=source, reason_counts=dict(counts))
    log.info("validated %s against %s: %d accepted, %d rejected %s", source, contract.name, len(accepted), len(bad), dict(counts))
    return result


def _as_text(df: pd.DataFrame) -> pd.DataFrame:
    """Every value as a string; None/NaN/NA/NaT become the empty string (= null)."""

    def text(value: Any) -> str:
        if isinstance(value, str):
            return value
        if _is_null(value):
            return ""
        if isinstance(value, (bool, np.bool_)):
            return "true" if value else "false"
        if isinstance(value, pd.Timestamp):
            return value.isoformat()
        return _python_to_text(value)

    out = pd.DataFrame(index=range(len(df)))
    for position, name in enumerate(df.columns):
        out[name] = pd.Series([text(v) for v in df.iloc[:, position]], dtype=object)
    return out


def _is_null(value: Any) -> bool:
    """True for scalar nulls (None, NaN, NA, NaT); False for everything else, lists included."""
    result = pd.isna(value)
    return bool(result) if isinstance(result, (bool, np.bool_)) else False


def _to_dtypes(frame: pd.DataFrame, contract: DatasetContract) -> pd.DataFrame:
    """Typed Python values (None for null) -> the contract's pandas dtypes."""
    out = pd.DataFrame(index=frame.index)
    for spec in contract.columns:
        values = list(frame[spec.name])
        if spec.type == "timestamp":
            out[spec.name] = pd.to_datetime(pd.Series(values, index=frame.index, dtype=object), utc=True).astype(
                PANDAS_DTYPES["timestamp"]
            )
        elif spec.type == "float":
            out[spec.name] = pd.Series([np.nan if v is None else v for v in values], index=frame.index, dtype="float64")
        else:
            out[spec.name] = pd.Series(pd.array(values, dtype=PANDAS_DTYPES[spec.type]), index=frame.index)
    return out


def _event_times(accepted: pd.DataFrame, contract: DatasetContract, ingested_at: pd.Timestamp) -> pd.Series:
    if contract.event_time:
        return accepted[contract.event_time].astype(PANDAS_DTYPES["timestamp"])
    stamp = pd.Timestamp(ingested_at)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return pd.Series([stamp] * len(accepted), dtype=PANDAS_DTYPES["timestamp"], index=accepted.index)
