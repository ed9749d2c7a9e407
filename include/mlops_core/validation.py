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
place, with one set of rules, whatever the file format. Typing rules: outer whitespace is ignored
except in string/category values; ``int`` takes decimal digits or an integral number (``7.0``,
``1e3``) within 64 bits; ``float`` takes finite numbers only; ``bool`` takes true/false, 1/0,
yes/no in any case; ``timestamp`` takes ISO 8601 (naive = UTC) and is stored in UTC; the entity
key and event time may never be null, whatever ``nullable`` says. ``_row_number`` counts data
rows from 1 (the header and blank lines are not rows). A CSV whose last line was cut off exactly
at a field separator with all fields present cannot be told from a complete file.

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
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

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
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
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
            f"{name}: unsupported file type {suffix or '(no suffix)'!r}; "
            f"deliver {' or '.join(SUPPORTED_SUFFIXES)} files",
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
            f"{name}: not valid UTF-8 (byte {exc.start}: {data[exc.start : exc.start + 1]!r}); "
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
        raise FileRejected(
            "unparseable", f"{name}: not a valid CSV file ({exc}); fix the file and deliver it again"
        ) from exc

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
# One message per type; the value itself is quoted before it.
_TYPE_PROBLEMS = {
    "int": "is not a 64-bit integer",
    "float": "is not a finite number",
    "bool": "is not a boolean (use true/false, 1/0 or yes/no)",
    "timestamp": "is not an ISO-8601 timestamp between 1677 and 2262",
}


def _parse(texts: pd.Series, column_type: str) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Parse one column of text, column-wise.

    ``texts`` holds strings only, already stripped of outer whitespace except for
    string/category columns (where whitespace is part of the value). Returns the values in the
    contract dtype (NA where null or invalid), a mask of present (non-empty) values and a mask of
    present values that are not of the type.
    """
    index = texts.index
    n = len(texts)
    if column_type in ("string", "category"):
        present = (texts != "").to_numpy(dtype=bool)
        values = pd.Series(texts, dtype="string").mask(~present)
        return values, present, np.zeros(n, dtype=bool)

    raw = texts.tolist()
    present = np.array([t != "" for t in raw], dtype=bool)
    if column_type == "int":
        numbers = np.zeros(n, dtype=np.int64)
        ok = np.zeros(n, dtype=bool)
        others = []
        for i, text in enumerate(raw):
            if not text:
                continue
            if _INT_TEXT.fullmatch(text):  # exact for any number of digits
                value = int(text)
                if _INT64_MIN <= value <= _INT64_MAX:
                    numbers[i], ok[i] = value, True
            else:
                others.append(i)
        if others:  # "7.0", "1e3": accepted when integral
            rows = np.array(others)
            floats = pd.to_numeric(pd.Series([raw[i] for i in others], dtype=object), errors="coerce").to_numpy(
                dtype=float
            )
            with np.errstate(invalid="ignore"):
                integral = np.isfinite(floats) & (np.floor(floats) == floats) & (np.abs(floats) < 2.0**63)
            numbers[rows[integral]] = floats[integral].astype(np.int64)
            ok[rows[integral]] = True
        values = pd.Series(pd.arrays.IntegerArray(numbers, ~ok), index=index)
    elif column_type == "float":
        floats = pd.to_numeric(pd.Series([t or None for t in raw], dtype=object), errors="coerce").to_numpy(dtype=float)
        ok = present & np.isfinite(floats)
        values = pd.Series(np.where(ok, floats, np.nan), index=index, dtype="float64")
    elif column_type == "bool":
        lowered = [t.lower() for t in raw]
        truth = np.fromiter((t in _TRUE for t in lowered), dtype=bool, count=n)
        ok = truth | np.fromiter((t in _FALSE for t in lowered), dtype=bool, count=n)
        values = pd.Series(pd.arrays.BooleanArray(truth, ~ok), index=index)
    elif column_type == "timestamp":
        stamps = pd.to_datetime(
            pd.Series([t or None for t in raw], dtype=object), utc=True, errors="coerce", format="ISO8601"
        )
        ok = present & stamps.notna().to_numpy(dtype=bool)
        if str(stamps.dtype) != PANDAS_DTYPES["timestamp"]:
            stamps = stamps.astype(PANDAS_DTYPES["timestamp"])
        values = stamps.set_axis(index).where(ok)
    else:  # pragma: no cover - the contract only allows COLUMN_TYPES
        raise ValueError(f"unknown column type {column_type!r}")
    return values, present, present & ~ok


def _allowed_values(spec: ColumnSpec) -> pd.Series | None:
    """The contract's allowed values in the column's type (``[0, 1]`` compares as ints)."""
    if spec.allowed is None:
        return None
    spelled = ["true" if v is True else "false" if v is False else str(v) for v in spec.allowed]
    texts = pd.Series(spelled if spec.type in ("string", "category") else [t.strip() for t in spelled], dtype=object)
    values, present, bad = _parse(texts, spec.type)
    if bad.any() or not present.all():
        wrong = [v for v, b, p in zip(spec.allowed, bad, present, strict=True) if b or not p]
        raise ValueError(
            f"contract column {spec.name!r}: allowed value(s) {wrong} are not of type {spec.type}; fix the contract"
        )
    return values


def _show(raw: str) -> str:
    return repr(raw if len(raw) <= 60 else raw[:57] + "...")


def _show_bound(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


@dataclass
class _ColumnProblems:
    """At most one problem per row for one column: a code and a message, None where fine."""

    name: str
    codes: np.ndarray
    messages: np.ndarray
    open: np.ndarray  # rows without a problem yet

    @classmethod
    def empty(cls, name: str, n: int) -> _ColumnProblems:
        return cls(name, np.full(n, None, dtype=object), np.full(n, None, dtype=object), np.ones(n, dtype=bool))

    def flag(self, mask: np.ndarray, kind: str, texts: np.ndarray, describe: Callable[[str], str]) -> None:
        rows = np.flatnonzero(mask & self.open)
        if len(rows):
            self.codes[rows] = f"{self.name}:{kind}"
            self.messages[rows] = [f"{self.name}: {describe(t)}" for t in texts[rows]]
            self.open[rows] = False


def _check_column(texts: pd.Series, spec: ColumnSpec, is_key: bool) -> tuple[pd.Series, _ColumnProblems]:
    shown = texts.to_numpy(dtype=object)
    if spec.type not in ("string", "category"):
        shown = np.array([t.strip() for t in shown], dtype=object)
    values, present, bad_type = _parse(pd.Series(shown, index=texts.index, dtype=object), spec.type)
    problems = _ColumnProblems.empty(spec.name, len(texts))
    problems.flag(bad_type, "wrong_type", shown, lambda t: f"{_show(t)} {_TYPE_PROBLEMS[spec.type]}")
    if is_key:
        problems.flag(~present, "null", shown, lambda t: "null in key column (entity key and event time are required)")
    elif not spec.nullable:
        problems.flag(~present, "null", shown, lambda t: "null in non-nullable column")
    low, high = spec.min, spec.max
    if spec.is_numeric and low is not None:
        below = (values < low).fillna(False).to_numpy(dtype=bool)
        problems.flag(below, "below_min", shown, lambda t: f"{t} below min {_show_bound(low)}")
    if spec.is_numeric and high is not None:
        above = (values > high).fillna(False).to_numpy(dtype=bool)
        problems.flag(above, "above_max", shown, lambda t: f"{t} above max {_show_bound(high)}")
    allowed = _allowed_values(spec)
    if allowed is not None:
        outside = present & ~bad_type & ~values.isin(allowed).fillna(False).to_numpy(dtype=bool)
        listed = list(spec.allowed or ())
        problems.flag(outside, "not_allowed", shown, lambda t: f"{_show(t)} not in allowed {listed}")
    return values, problems


# --------------------------------------------------------------------------- row keys
_encode = json.encoder.encode_basestring  # the encoder json.dumps(ensure_ascii=False) uses


def _json_text(value: str | None) -> str:
    return "null" if value is None else _encode(value)


def canonical_values(values: pd.Series, column_type: str) -> list[str | None]:
    """A typed column as the text that goes into row keys (see the module docstring); None for null."""
    if column_type == "timestamp":
        utc = pd.to_datetime(values, utc=True).dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
        return [None if t == "NaT" else _iso_utc(t) for t in np.datetime_as_string(utc, unit="ns")]
    items = values.astype(object).tolist()
    if column_type == "int":
        return [None if v is pd.NA or v is None else str(int(v)) for v in items]
    if column_type == "float":
        return [None if v is None or v != v else repr(0.0 if v == 0 else float(v)) for v in items]
    if column_type == "bool":
        return [None if v is pd.NA or v is None else ("true" if v else "false") for v in items]
    return [None if v is pd.NA or v is None else str(v) for v in items]


def _iso_utc(text: str) -> str:
    """``YYYY-MM-DDTHH:MM:SS.fffffffff`` -> what ``Timestamp.isoformat()`` gives in UTC."""
    fraction = text[20:]
    if fraction == "000000000":
        text = text[:19]
    elif fraction.endswith("000"):
        text = text[:26]
    return text + "+00:00"


def _digest(payload: str) -> str:
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:ROW_KEY_LENGTH]


def _key_payload(entity: str | None, time: str | None) -> str:
    return f'["key",{_json_text(entity)},{_json_text(time)}]'


def row_keys(typed: pd.DataFrame, contract: DatasetContract) -> list[str]:
    """``_row_key`` of every row of a typed frame (contract columns with contract dtypes)."""
    if contract.entity_key and contract.event_time:
        entities = canonical_values(typed[contract.entity_key], contract.column(contract.entity_key).type)
        times = canonical_values(typed[contract.event_time], "timestamp")
        return [_digest(_key_payload(e, t)) for e, t in zip(entities, times, strict=True)]
    names = sorted(contract.column_names)
    cells = [
        [f"[{_encode(name)},{_json_text(v)}]" for v in canonical_values(typed[name], contract.column(name).type)]
        for name in names
    ]
    return [_digest('["row",[' + ",".join(row) + "]]") for row in zip(*cells, strict=True)] if cells else []


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

    typed: dict[str, pd.Series] = {}
    column_problems: list[_ColumnProblems] = []
    for spec in contract.columns:
        values, problems = _check_column(frame[spec.name], spec, is_key=spec.name in contract.key_columns)
        typed[spec.name] = values
        column_problems.append(problems)

    bad = np.zeros(n, dtype=bool)
    for problems in column_problems:
        bad |= ~problems.open
    good_rows = np.flatnonzero(~bad)
    typed_frame = pd.DataFrame(typed).iloc[good_rows].reset_index(drop=True)
    keys = row_keys(typed_frame, contract)

    # A repeat of an earlier row of the same file is rejected; the first one is kept.
    first_seen: dict[str, int] = {}
    keep = np.ones(len(good_rows), dtype=bool)
    duplicates = _ColumnProblems.empty(DUPLICATE_ROW, n)
    for j, (position, key) in enumerate(zip(good_rows.tolist(), keys, strict=True)):
        first = first_seen.setdefault(key, position)
        if first != position:
            keep[j] = False
            duplicates.codes[position] = DUPLICATE_ROW
            duplicates.messages[position] = f"{DUPLICATE_ROW}: same row key as data row {first + 1}"
            duplicates.open[position] = False
    column_problems.append(duplicates)
    bad |= ~duplicates.open

    accepted = typed_frame.loc[keep].reset_index(drop=True)
    accepted_keys = [k for k, kept in zip(keys, keep, strict=True) if kept]
    accepted[EVENT_TIME_COLUMN] = _event_times(accepted, contract, ingested_at)
    entities: list[str | None]
    if contract.entity_key:
        entities = canonical_values(accepted[contract.entity_key], contract.column(contract.entity_key).type)
    else:
        entities = list(accepted_keys)
    accepted[ENTITY_COLUMN] = pd.Series(entities, dtype="string")
    accepted[ROW_KEY_COLUMN] = pd.Series(accepted_keys, dtype="string")
    accepted[SOURCE_COLUMN] = pd.Series([source] * len(accepted), dtype="string")

    bad_rows = np.flatnonzero(bad)
    rejected = frame.iloc[bad_rows].reset_index(drop=True)
    messages = zip(*(p.messages[bad_rows] for p in column_problems), strict=True)
    rejected[REASON_COLUMN] = pd.Series(["; ".join(m for m in row if m is not None) for row in messages], dtype=object)
    rejected[SOURCE_COLUMN] = pd.Series([source] * len(bad_rows), dtype=object)
    rejected[ROW_NUMBER_COLUMN] = pd.Series(bad_rows + 1, dtype="int64")

    counts: Counter[str] = Counter()
    for problems in column_problems:
        counts.update(code for code in problems.codes[bad_rows] if code is not None)
    result = ValidationResult(accepted=accepted, rejected=rejected, source=source, reason_counts=dict(counts))
    log.info(
        "validated %s against %s: %d accepted, %d rejected %s",
        source,
        contract.name,
        len(accepted),
        len(bad_rows),
        dict(counts),
    )
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

    out = {}
    for position, name in enumerate(df.columns):
        column = df.iloc[:, position]
        if column.dtype == object and pd.api.types.infer_dtype(column, skipna=False) == "string":
            out[name] = column.reset_index(drop=True)  # already text, as read_source returns it
        else:
            out[name] = pd.Series([text(v) for v in column], dtype=object)
    return (
        pd.DataFrame(out, index=range(len(df)), columns=list(df.columns)) if out else pd.DataFrame(index=range(len(df)))
    )


def _is_null(value: Any) -> bool:
    """True for scalar nulls (None, NaN, NA, NaT); False for everything else, lists included."""
    result = pd.isna(value)
    return bool(result) if isinstance(result, (bool, np.bool_)) else False


def _event_times(accepted: pd.DataFrame, contract: DatasetContract, ingested_at: pd.Timestamp) -> pd.Series:
    if contract.event_time:
        return accepted[contract.event_time].astype(PANDAS_DTYPES["timestamp"])
    stamp = pd.Timestamp(ingested_at)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return pd.Series([stamp] * len(accepted), dtype=PANDAS_DTYPES["timestamp"], index=accepted.index)
