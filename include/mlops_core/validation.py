"""Read a delivered file and check it against the dataset contract.

Two levels of answer:

* **File level** — the file as a whole cannot be used (not UTF-8, empty, cut off mid-write, a
  column missing, two columns with one name, an unknown column under ``unknown_columns:
  reject``, too large once decompressed). :func:`read_source` and :func:`validate` raise
  :class:`FileRejected` with a short ``reason`` code; the caller quarantines the raw bytes.
* **Row level** — single rows break the contract (wrong type, null where not allowed, out of
  range, not an allowed value, a repeat of an earlier row). :func:`validate` returns them in
  ``ValidationResult.rejected`` with the original values and a ``_reason``; the other rows are
  typed and returned in ``ValidationResult.accepted``.

Everything is read as text first (empty string = null) so that typing happens here, in one
place, with one set of rules, whatever the file format. Typing rules: outer whitespace is ignored
except in string/category values; ``int`` takes decimal digits or an integral number (``7.0``,
``1e3``) within 64 bits; ``float`` takes finite numbers only; ``bool`` takes true/false, 1/0,
yes/no in any case; ``timestamp`` takes ISO 8601 (naive = UTC) and is stored in UTC; the entity
key and event time may never be null, whatever ``nullable`` says. Parquet values are read as
the text a CSV export would hold; a nested value (list, struct, map) is ``wrong_type`` and binary
that is not UTF-8 is ``not_utf8``, per row, in any column. Header names are compared after
NFC normalisation and stripping outer whitespace; an empty name is an unknown column
(``<unnamed column N>``), two equal names are ``bad_header``. ``_row_number`` counts data
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

import codecs
import contextlib
import csv
import datetime
import decimal
import enum
import functools
import gzip
import hashlib
import importlib
import io
import json
import logging
import os
import re
import reprlib
import unicodedata
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final, overload

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
from mlops_core.delivered_files import MAX_FILE_BYTES
from mlops_core.delivered_files import FileRejected as FileRejected  # re-exported: raised by read_source/validate

log = logging.getLogger(__name__)

REASON_COLUMN = "_reason"  # why a row was rejected; several problems joined with "; "
ROW_NUMBER_COLUMN = "_row_number"  # 1-based position of the row among the file's data rows
DUPLICATE_ROW = "duplicate_row"
ROW_KEY_LENGTH = 32

SUPPORTED_SUFFIXES = (".csv.gz", ".csv", ".parquet")  # longest first: file_format() takes the first match
MAX_DECODED_BYTES = MAX_FILE_BYTES  # limit of a file's decoded content (gzip output, Parquet values)
DEFAULT_BATCH_BYTES = 16 * 1024**2  # text validated at a time by validate_file (dataset.ingest_batch_mb)

PANDAS_DTYPES = {
    "int": "Int64",
    "float": "float64",
    "bool": "boolean",
    "timestamp": "datetime64[ns, UTC]",
    "category": "string",
    "string": "string",
}

_UTC_NS: Final = "datetime64[ns, UTC]"  # PANDAS_DTYPES["timestamp"], typed for pandas-stubs
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_INT64_DIGITS = len(str(_INT64_MAX))


@dataclass(frozen=True)
class ValidationResult:
    """Outcome of validating one source against a contract.

    ``accepted``: typed contract columns plus ``_event_time``, ``_entity``, ``_row_key``,
    ``_source`` (a DataFrame made on first use from ``accepted_rows``, the same rows as an Arrow
    table: what ingest stages, without the detour through Python objects). ``rejected``: contract
    columns with the original text, plus ``_reason``, ``_source`` and ``_row_number``.
    ``reason_counts`` counts rejected rows per problem code (``<column>:<problem>`` or
    ``duplicate_row``); a row with two problems counts under both.
    """

    accepted_rows: Any  # pyarrow.Table, schema accepted_schema(contract)
    rejected: pd.DataFrame
    source: str = ""
    reason_counts: dict[str, int] = field(default_factory=dict)

    @functools.cached_property
    def accepted(self) -> pd.DataFrame:
        """The accepted rows as a DataFrame (made from ``accepted_rows`` when first asked for)."""
        frame: pd.DataFrame = self.accepted_rows.to_pandas()
        return frame

    def summary(self) -> dict[str, Any]:
        """Row counts for logs, quarantine records and asset-event metadata."""
        accepted = self.accepted_rows.num_rows
        return {
            "source": self.source,
            "rows_total": accepted + len(self.rejected),
            "rows_accepted": accepted,
            "rows_rejected": len(self.rejected),
            "reasons": dict(sorted(self.reason_counts.items())),
        }


# --------------------------------------------------------------------------- reading files
def file_format(name: str) -> str | None:
    """The format of a delivered file by its suffix, in any case: ``.csv``, ``.csv.gz``, ``.parquet`` or None."""
    lowered = name.lower()
    return next((suffix for suffix in SUPPORTED_SUFFIXES if lowered.endswith(suffix)), None)


Source = bytes | os.PathLike[str]  # a file's bytes, or a local file holding them (read as a stream)
Opener = Callable[[], BinaryIO]  # opens a fresh binary stream of a file's (decoded) content


class Restart(enum.Enum):
    """Yielded by a batch reader that starts over: forget every batch it gave so far."""

    RESTART = "restart"


RESTART: Final = Restart.RESTART


class NotPlainCsv(Exception):
    """A CSV read in blocks turned out not to be plain (see :func:`_read_plain_csv`) after its first block."""


class NeedsWholeFile(Exception):
    """Reading in blocks met something only whole-file reading answers exactly (damage, a file-level problem).

    :func:`validate_batches` then reads the file whole (:func:`read_source` without ``batch_bytes``),
    which gives today's reason and message.
    """


@overload
def read_source(
    data: Source, name: str, *, max_decoded_bytes: int = MAX_DECODED_BYTES, batch_bytes: None = None
) -> pd.DataFrame: ...
@overload
def read_source(
    data: Source, name: str, *, max_decoded_bytes: int = MAX_DECODED_BYTES, batch_bytes: int
) -> Iterator[pd.DataFrame | Restart]: ...
def read_source(
    data: Source, name: str, *, max_decoded_bytes: int = MAX_DECODED_BYTES, batch_bytes: int | None = None
) -> pd.DataFrame | Iterator[pd.DataFrame | Restart]:
    """Parse a delivered file into a DataFrame of text (empty string = null).

    With ``batch_bytes``, an iterator of DataFrames of consecutive rows instead, read as a stream
    so that memory does not grow with the file: a plain CSV (see :func:`_read_plain_csv`) by
    Arrow's streaming reader in blocks of about ``batch_bytes`` of text, any other CSV by Python's
    ``csv`` reader in batches of records (the reference reader, line by line), gzip through a
    streaming decompressor, Parquet by row batches of about ``batch_bytes``. A CSV that is not
    plain after all (a quote in a later block) makes the iterator yield :data:`RESTART` and start
    over with the ``csv`` reader. Damage, or any file-level problem, raises :class:`NeedsWholeFile`
    or :class:`FileRejected` from the iterator: :func:`validate_batches` then reads the whole file
    the reference way, so the answer is the same as without batches.

    The format is chosen by the suffix of ``name`` in any case (``.csv``, ``.csv.gz`` (gzip),
    ``.parquet``). Parquet values are turned into text so that :func:`validate` types every
    format the same way; values that have no text form (nested lists/structs/maps, binary that
    is not UTF-8) become :class:`InvalidValue` cells, rejected per row by :func:`validate`.
    Header names are normalised the same way for every format (:func:`normalise_header`).

    Args:
        data: the file's bytes, or the path of a local file holding them.
        name: the file's (escaped) name; used for the format and in messages.
        max_decoded_bytes: limit of the decoded content (gzip output, Parquet data in memory).

    Raises:
        FileRejected: with reason ``unsupported_format``, ``empty``, ``not_utf8``, ``truncated``,
            ``unparseable``, ``bad_header`` or ``too_large``.
    """
    suffix = file_format(name)
    if suffix is None:
        raise FileRejected(
            "unsupported_format",
            f"{name}: unsupported file type; deliver {', '.join(SUPPORTED_SUFFIXES)} files (any case)",
        )
    if batch_bytes is not None:
        return _read_batches(data, name, suffix, max_decoded_bytes, batch_bytes)
    if not isinstance(data, bytes):
        data = Path(data).read_bytes()
    if not data or data.isspace():
        raise FileRejected("empty", f"{name}: the file is empty; deliver a file with a header and data rows")
    if len(data) > max_decoded_bytes:
        raise FileRejected(
            "too_large", f"{name}: {len(data)} bytes, above the limit of {max_decoded_bytes}; split the file"
        )
    if suffix == ".parquet":
        return _read_parquet(data, name, max_decoded_bytes)
    if suffix == ".csv.gz":
        data = _gunzip(data, name, max_decoded_bytes)
    frame = next(_read_csv(data, name))
    assert isinstance(frame, pd.DataFrame)  # noqa: S101 - whole-file reading yields one frame
    log.info("read %s: %d rows, %d columns", name, len(frame), len(frame.columns))
    return frame


def _read_batches(
    data: Source, name: str, suffix: str, max_decoded_bytes: int, batch_bytes: int
) -> Iterator[pd.DataFrame | Restart]:
    size = len(data) if isinstance(data, bytes) else os.stat(data).st_size
    if size == 0:
        raise FileRejected("empty", f"{name}: the file is empty; deliver a file with a header and data rows")
    if size > max_decoded_bytes:
        raise NeedsWholeFile(name)  # whole-file reading says which of empty or too_large
    if suffix == ".parquet":
        return _read_parquet(data, name, max_decoded_bytes, batch_bytes)
    opener = _opener(data)
    if suffix == ".csv.gz":
        raw = opener

        def opener() -> BinaryIO:
            return _gunzip(raw(), name, max_decoded_bytes)

    return _read_csv(opener, name, batch_bytes)


def _file_verdict(data: Source, name: str, max_decoded_bytes: int) -> FileRejected | None:
    """Why whole-file reading rejects a CSV (``.csv``, ``.csv.gz``), found as a stream (:func:`_csv_verdict`);
    None for other formats, or when the stream cannot tell (then the file is read whole)."""
    suffix = file_format(name)
    if suffix not in (".csv", ".csv.gz"):
        return None
    raw = _opener(data)
    with raw() as stream:  # whole-file reading looks at the delivered bytes first
        size = 0
        blank = True
        while chunk := stream.read(_DECODE_CHUNK):
            size += len(chunk)
            blank = blank and chunk.isspace()
    if blank:
        return FileRejected("empty", f"{name}: the file is empty; deliver a file with a header and data rows")
    if size > max_decoded_bytes:
        return FileRejected(
            "too_large", f"{name}: {size} bytes, above the limit of {max_decoded_bytes}; split the file"
        )
    opener = raw
    if suffix == ".csv.gz":

        def opener() -> BinaryIO:
            return _gunzip(raw(), name, max_decoded_bytes)

    try:
        return _csv_verdict(opener, name)
    except FileRejected as exc:  # from the stream: a damaged gzip file
        return exc


def _opener(data: Source) -> Opener:
    if isinstance(data, bytes):
        return lambda: io.BytesIO(data)
    path = os.fspath(data)
    return lambda: open(path, "rb")


@overload
def _gunzip(data: bytes, name: str, max_bytes: int) -> bytes: ...
@overload
def _gunzip(data: BinaryIO, name: str, max_bytes: int) -> BinaryIO: ...
def _gunzip(data: bytes | BinaryIO, name: str, max_bytes: int) -> bytes | BinaryIO:
    """Decompress gzip (every member), refusing more than ``max_bytes`` of output (a gzip bomb).

    ``data``: the compressed bytes (the decompressed bytes are returned), or a binary stream of
    them (a stream of the decompressed bytes is returned, decompressed as it is read; it raises
    the same :class:`FileRejected` as it goes).
    """
    if not isinstance(data, bytes):
        return io.BufferedReader(_GunzipStream(data, name, max_bytes), buffer_size=1 << 20)
    out = bytearray()
    with _gzip_errors(name), gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb") as stream:
        while True:
            chunk = stream.read(min(1 << 20, max_bytes + 1 - len(out)))
            if not chunk:
                break
            out += chunk
            if len(out) > max_bytes:
                raise _gzip_too_large(name, max_bytes)
    return bytes(out)


@contextlib.contextmanager
def _gzip_errors(name: str) -> Iterator[None]:
    try:
        yield
    except EOFError as exc:
        raise FileRejected(
            "truncated",
            f"{name}: the gzip stream ends early ({exc}), so the file was cut off; deliver the complete file again",
        ) from exc
    except (OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise FileRejected(
            "unparseable", f"{name}: not a valid gzip file ({exc}); compress it with gzip and deliver it again"
        ) from exc


def _gzip_too_large(name: str, max_bytes: int) -> FileRejected:
    return FileRejected(
        "too_large",
        f"{name}: decompresses to more than {max_bytes} bytes (the limit); split the data into smaller files",
    )


class _GunzipStream(io.RawIOBase):
    """The decompressed bytes of a gzip stream, read on demand (see :func:`_gunzip`)."""

    def __init__(self, raw: BinaryIO, name: str, max_bytes: int) -> None:
        super().__init__()
        self._raw = raw
        self._gzip = gzip.GzipFile(fileobj=raw, mode="rb")
        self._name = name
        self._max = max_bytes
        self._size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        with _gzip_errors(self._name):
            chunk = self._gzip.read(min(len(view), self._max + 1 - self._size))
        self._size += len(chunk)
        if self._size > self._max:
            raise _gzip_too_large(self._name, self._max)
        view[: len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        if not self.closed:
            self._gzip.close()
            self._raw.close()
        super().close()


@overload
def _read_csv(data: bytes, name: str, batch_bytes: None = None) -> Iterator[pd.DataFrame]: ...
@overload
def _read_csv(data: Opener, name: str, batch_bytes: int) -> Iterator[pd.DataFrame | Restart]: ...
def _read_csv(
    data: bytes | Opener, name: str, batch_bytes: int | None = None
) -> Iterator[pd.DataFrame] | Iterator[pd.DataFrame | Restart]:
    """The CSV's rows: ``data`` (bytes) in one frame, or ``data()`` (a stream) in batches of about ``batch_bytes``.

    In batches: Arrow's streaming reader while the file is plain; when it turns out not to be,
    :data:`RESTART` and Python's ``csv`` reader from the start (:func:`_reference_csv_blocks`).
    """
    if isinstance(data, bytes):
        fast = _read_plain_csv(data, name)
        return iter([fast if fast is not None else _read_csv_reference(data, name)])
    if batch_bytes is None:
        raise ValueError("_read_csv: a stream is read in batches; give batch_bytes")
    return _csv_batches(data, name, batch_bytes)


def _csv_batches(opener: Opener, name: str, batch_bytes: int) -> Iterator[pd.DataFrame | Restart]:
    try:
        with opener() as stream:
            yield from _plain_csv_blocks(stream, name, batch_bytes)
        return
    except NotPlainCsv:
        pass
    yield RESTART
    with opener() as stream:
        yield from _reference_csv_blocks(stream, name, batch_bytes)


def _read_csv_reference(data: bytes, name: str) -> pd.DataFrame:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _not_utf8(name, exc.start, data[exc.start : exc.start + 1]) from exc
    if not text or text.isspace():
        raise FileRejected("empty", f"{name}: the file is empty; deliver a file with a header and data rows")

    records: list[list[str]] = []
    try:
        for record in csv.reader(io.StringIO(text, newline=""), strict=True):
            if record:  # a blank line is not a row
                records.append(record)
    except csv.Error as exc:
        raise _csv_error(name, exc) from exc

    header = normalise_header(records[0], name)
    rows = records[1:]
    if not rows:
        raise FileRejected("empty", f"{name}: the file has a header but no data rows; deliver a file with data")

    width = len(header)
    last = rows[-1]
    if len(last) < width and not text.endswith(("\n", "\r")):
        raise _last_line_cut(name, len(last), width)
    ragged = [(i, len(r)) for i, r in enumerate(rows, start=1) if len(r) != width]
    if ragged:
        first_row, first_len = ragged[0]
        raise _ragged_rows(name, len(ragged), width, first_row, first_len)
    return pd.DataFrame.from_records(rows, columns=header).astype(object)


_BOM = b"\xef\xbb\xbf"


def _not_utf8(name: str, start: int, byte: bytes) -> FileRejected:
    return FileRejected("not_utf8", f"{name}: not valid UTF-8 (byte {start}: {byte!r}); re-export the file as UTF-8")


def _csv_error(name: str, exc: csv.Error) -> FileRejected:
    if "unexpected end of data" in str(exc):
        return FileRejected(
            "truncated",
            f"{name}: the file ends inside a quoted value, so it was cut off while being written; "
            "deliver the complete file again",
        )
    if "field larger than field limit" in str(exc):
        return FileRejected(
            "too_large",
            f"{name}: a value is longer than {csv.field_size_limit()} characters, the CSV reader's limit "
            f"({exc}); shorten the value or deliver the data as Parquet",
        )
    return FileRejected("unparseable", f"{name}: not a valid CSV file ({exc}); fix the file and deliver it again")


def _last_line_cut(name: str, fields: int, width: int) -> FileRejected:
    return FileRejected(
        "truncated",
        f"{name}: the last line has {fields} of {width} fields and no line end, so the file was cut off "
        "while being written; deliver the complete file again",
    )


def _ragged_rows(name: str, count: int, width: int, first_row: int, first_len: int) -> FileRejected:
    return FileRejected(
        "truncated",
        f"{name}: {count} row(s) do not have the {width} fields of the header "
        f"(first: data row {first_row} has {first_len}); the file is damaged or was cut off, "
        "fix the file and deliver it again",
    )


class _Scan:
    """What :func:`_csv_verdict` learns in one pass over a CSV stream."""

    def __init__(self) -> None:
        self.decode_error: int | None = None  # where whole-file decoding fails (its UnicodeDecodeError.start)
        self.text = False  # a character that is not whitespace went by
        self.last_char = ""
        self.too_long = False  # a line longer than _LONGEST_LINE: not scanned


def _scanned_lines(stream: BinaryIO, scan: _Scan) -> Iterator[str]:
    """The lines of ``stream`` as whole-file reading splits them (UTF-8, one leading byte-order mark
    dropped, ``StringIO(newline="")``); stops at the first byte that is not UTF-8, noting where
    ``bytes.decode("utf-8-sig")`` of the whole file would report it."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    head = stream.read(len(_BOM))
    pending = head[len(_BOM) :] if head.startswith(_BOM) else head
    fed = 0  # bytes after the byte-order mark given to the decoder so far
    text = ""
    final = False
    while not final:
        chunk = pending if pending else stream.read(_DECODE_CHUNK)
        pending = b""
        final = not chunk
        held = len(decoder.getstate()[0])
        try:
            decoded = decoder.decode(chunk, final)
        except UnicodeDecodeError as exc:
            scan.decode_error = fed - held + exc.start
            return
        fed += len(chunk)
        text += decoded
        if decoded:
            scan.last_char = decoded[-1]
            if not scan.text and not decoded.isspace():
                scan.text = True
        position = 0
        for match in _LINE.finditer(text):
            if not final and match.end() == len(text) and text.endswith("\r"):
                break  # may be the first half of "\r\n"
            yield match.group()
            position = match.end()
        text = text[position:]
        if len(text) > _LONGEST_LINE:
            scan.too_long = True
            return
    if text:
        yield text


def _csv_verdict(opener: Opener, name: str) -> FileRejected | None:
    """The :class:`FileRejected` that whole-file reading (:func:`_read_csv_reference`) gives for this CSV,
    found in one streaming pass that holds a line at a time; None when the file reads fine, or
    when a line is too long to tell this way (then read it whole).

    The precedence is whole-file reading's: the stream's own errors (gzip) anywhere, then bytes that
    are not UTF-8 anywhere, then an empty file, then the first CSV error, then the header, then no
    data rows, a cut-off last line, rows of another width.
    """
    scan = _Scan()
    csv_error: csv.Error | None = None
    header: list[str] | None = None
    width = rows = ragged = first_ragged = first_len = last_len = 0
    with opener() as stream:
        records = csv.reader(_scanned_lines(stream, scan), strict=True)
        try:
            for record in records:
                if not record:
                    continue  # a blank line is not a row
                if header is None:
                    header, width = record, len(record)
                    continue
                rows += 1
                last_len = len(record)
                if last_len != width:
                    ragged += 1
                    if ragged == 1:
                        first_ragged, first_len = rows, last_len
        except csv.Error as exc:
            csv_error = exc
        while stream.read(_DECODE_CHUNK):  # to the end: a damaged gzip stream anywhere decides first
            pass
    if scan.too_long:
        return None
    if scan.decode_error is not None:
        with opener() as stream:  # the byte whole-file reading shows: at that offset of the whole file
            stream.read(scan.decode_error)
            return _not_utf8(name, scan.decode_error, stream.read(1))
    if not scan.text:
        return FileRejected("empty", f"{name}: the file is empty; deliver a file with a header and data rows")
    if csv_error is not None:
        return _csv_error(name, csv_error)
    if header is None:
        return None  # pragma: no cover - a file with text has a record
    try:
        normalise_header(header, name)
    except FileRejected as exc:
        return exc
    if not rows:
        return FileRejected("empty", f"{name}: the file has a header but no data rows; deliver a file with data")
    if last_len < width and scan.last_char not in ("\n", "\r"):
        return _last_line_cut(name, last_len, width)
    if ragged:
        return _ragged_rows(name, ragged, width, first_ragged, first_len)
    return None


# Bytes after which Python's csv reader and Arrow's could disagree; a file holding none of them
# (and starting with neither a byte-order mark nor a blank line) is split the same way by both.
_PLAIN_CSV_BLOCKERS = (b'"', b"\r", b"\x00")


def _read_plain_csv(data: bytes, name: str) -> pd.DataFrame | None:
    """Arrow's CSV reader on a file that ``csv.reader`` reads the same way; None when unsure.

    Only a file without quotes, carriage returns and NUL bytes, whose first line is a header that
    is not blank, with a data row and the same number of fields on every line, valid UTF-8 and
    no value longer than the csv module's field limit qualifies: Python's ``csv.reader`` splits
    such a file exactly on commas and line feeds, as Arrow does. Anything else (every damaged
    file) is left to the reference reader, which gives today's answers and messages.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if not _is_plain_csv(data):
        return None
    header = _plain_header(data)
    options = _plain_csv_options(len(header), 1 << 24)
    try:
        table = pacsv.read_csv(pa.BufferReader(data), *options)
    except (pa.ArrowException, ValueError):
        return None  # a ragged line, bytes that are not UTF-8, ...: the reference reader decides
    if table.num_rows == 0:
        return None
    frame = _plain_frame(table, header, name)
    return frame


def _is_plain_csv(data: bytes) -> bool:
    """No quote, carriage return or NUL; no BOM or blank first line; a header that is text and not blank."""
    if any(blocker in data for blocker in _PLAIN_CSV_BLOCKERS) or data.startswith((b"\xef\xbb\xbf", b"\n")):
        return False
    end = data.find(b"\n")
    if end < 0 or data.count(b"\n", end + 1) == len(data) - end - 1:
        return False  # no data line: the reference reader says why
    try:
        header = data[:end].decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not (header.isspace() or header.replace(",", "") == "")


def _plain_header(data: bytes) -> list[str]:
    return data[: data.find(b"\n")].decode("utf-8").split(",")


def _plain_csv_options(width: int, block_size: int) -> tuple[Any, Any, Any]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = [f"f{i}" for i in range(width)]
    return (
        pacsv.ReadOptions(column_names=names, skip_rows=1, use_threads=True, block_size=block_size),
        pacsv.ParseOptions(delimiter=",", quote_char=False, newlines_in_values=False),
        pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
            check_utf8=True,
        ),
    )


def _plain_frame(table: Any, header: list[str], name: str) -> pd.DataFrame | None:
    """Arrow text columns as a DataFrame; None when a value is longer than the csv module allows."""
    limit = csv.field_size_limit()
    columns: dict[int, Any] = {}
    for position in range(table.num_columns):
        column = table.column(position)
        if len(column) and _max_byte_length(column) > limit:
            return None
        columns[position] = pd.arrays.ArrowExtensionArray(_combined(column))  # one chunk: no copy on each use
    frame = pd.DataFrame(columns, index=range(table.num_rows))
    frame.columns = pd.Index(normalise_header(header, name), dtype=object)  # may raise bad_header, as the reference
    return frame


_HEADER_LIMIT = 1 << 20  # a plain CSV's header line is shorter than this
_PARSE_BLOCK = 1 << 18  # Arrow parses a block in pieces of this size, in parallel (and reads ahead up to
# 32 of them: a larger piece is no faster here and holds more raw text)


def _plain_csv_blocks(stream: BinaryIO, name: str, batch_bytes: int) -> Iterator[pd.DataFrame]:
    """A plain CSV read from ``stream`` in blocks of about ``batch_bytes``; :class:`NotPlainCsv` when it is not plain.

    Arrow's streaming reader parses pieces of :data:`_PARSE_BLOCK` bytes (a few read ahead, in
    parallel); they are gathered into frames of about ``batch_bytes`` of text. Every byte Arrow
    reads is checked on the way (:class:`_PlainWatch`): a quote, carriage return or NUL anywhere
    makes the file not plain, also after frames were yielded (the caller starts over).
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    first = stream.readline(_HEADER_LIMIT)
    if not first.endswith(b"\n") or not _is_plain_csv(first + b"-"):  # "-": stands for a data line
        raise NotPlainCsv(name)
    header = _plain_header(first)
    watched = _PlainWatch(first, stream)
    rows = 0
    try:
        reader = pacsv.open_csv(watched, *_plain_csv_options(len(header), min(batch_bytes, _PARSE_BLOCK)))
        for table in _gathered(reader, batch_bytes):
            if watched.blocked:
                raise NotPlainCsv(name)
            frame = _plain_frame(table, header, name)
            del table  # the frame holds the text as one array per column
            if frame is None:
                raise NotPlainCsv(name)
            rows += len(frame)
            yield frame
            del frame
    except FileRejected:
        raise  # from the stream (gzip): no reader decides otherwise
    except (pa.ArrowException, ValueError) as exc:
        raise NotPlainCsv(name) from exc
    if watched.blocked or rows == 0:
        raise NotPlainCsv(name)


def _gathered(reader: Any, batch_bytes: int) -> Iterator[Any]:
    """Record batches of a streaming reader joined into tables of about ``batch_bytes``, one chunk per column.

    The batches are held as their columns' pieces; each column is joined in turn and its pieces let
    go of at once, so joining a batch holds its text once plus one column, not twice.
    """

    schema: Any = None
    pieces: list[list[Any]] = []
    size = 0
    for batch in reader:
        if batch.num_rows:
            if schema is None:
                schema, pieces = batch.schema, [[] for _ in batch.schema]
            for column, array in zip(pieces, batch.columns, strict=True):
                column.append(array)
            size += batch.nbytes
        del batch
        if size >= batch_bytes:
            table = _joined(schema, pieces)
            schema, pieces, size = None, [], 0  # the table is the only holder: the consumer lets go of it
            yield table
            del table
    if pieces:
        yield _joined(schema, pieces)


def _joined(schema: Any, pieces: list[list[Any]]) -> Any:
    """A table of ``schema`` whose column ``i`` joins ``pieces[i]``; ``pieces`` is emptied on the way."""
    import pyarrow as pa

    arrays = []
    for i, column in enumerate(pieces):
        arrays.append(column[0] if len(column) == 1 else pa.concat_arrays(column))
        pieces[i] = []  # this column's pieces go now, before the next column is joined
        del column
    pieces.clear()
    return pa.Table.from_arrays(arrays, schema=schema)


class _PlainWatch(io.RawIOBase):
    """``prefix`` then the rest of ``stream``, noting whether any byte that makes a CSV not plain went by."""

    def __init__(self, prefix: bytes, stream: BinaryIO) -> None:
        super().__init__()
        self._prefix = prefix
        self._stream = stream
        self.blocked = any(blocker in prefix for blocker in _PLAIN_CSV_BLOCKERS)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            chunk, self._prefix = self._prefix[: len(view)], self._prefix[len(view) :]
        else:
            chunk = self._stream.read(len(view))
            if not self.blocked and any(blocker in chunk for blocker in _PLAIN_CSV_BLOCKERS):
                self.blocked = True
        view[: len(chunk)] = chunk
        return len(chunk)


_LINE = re.compile(r"[^\r\n]*(?:\r\n|\n|\r)")
_DECODE_CHUNK = 1 << 20
_LONGEST_LINE = 1 << 22  # characters of one CSV line held before handing the file to whole-file reading


def _reference_csv_blocks(stream: BinaryIO, name: str, batch_bytes: int) -> Iterator[pd.DataFrame]:
    """Python's ``csv`` reader over the decoded text of ``stream``, in frames of about ``batch_bytes`` // 4 of text.

    Reads what :func:`_read_csv_reference` reads, the same way (UTF-8 with an optional byte-order
    mark, lines split as ``io.StringIO(newline="")`` splits them, ``csv.reader(strict=True)``,
    blank records skipped), but never holds more than a batch of records. Anything the reference
    reader rejects the file for (bytes that are not UTF-8, a CSV error, a row with another number of
    fields than the header, no data rows, only whitespace, a bad header) raises
    :class:`NeedsWholeFile` (or :class:`FileRejected`): the whole-file reader says why.
    """
    budget = max(1, batch_bytes // 4)  # Python strings take several times the text they hold
    state = {"text": False}
    header: list[str] | None = None
    rows: list[list[str]] = []
    held = 0
    yielded = False
    try:
        for record in csv.reader(_text_lines(stream, max(batch_bytes, _LONGEST_LINE), state), strict=True):
            if not record:
                continue  # a blank line is not a row
            if header is None:
                header = normalise_header(record, name)
                continue
            if len(record) != len(header):
                raise NeedsWholeFile(name)  # ragged or cut off: whole-file reading counts them
            rows.append(record)
            held += sum(map(len, record)) + len(record)
            if held >= budget:
                yield pd.DataFrame.from_records(rows, columns=header).astype(object)
                rows, held, yielded = [], 0, True
    except (csv.Error, UnicodeDecodeError) as exc:
        raise NeedsWholeFile(name) from exc
    if header is None or not state["text"] or not (rows or yielded):
        raise NeedsWholeFile(name)  # empty, only whitespace, or a header without rows
    if rows:
        yield pd.DataFrame.from_records(rows, columns=header).astype(object)


def _text_lines(stream: BinaryIO, limit: int, state: dict[str, bool]) -> Iterator[str]:
    """The lines of ``stream`` as UTF-8 text (no leading byte-order mark), split as ``StringIO(newline="")`` does.

    Sets ``state["text"]`` once a character that is not whitespace went by. A line longer than
    ``limit`` characters raises :class:`NeedsWholeFile`.
    """
    decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
    pending = ""
    final = False
    while not final:
        chunk = stream.read(_DECODE_CHUNK)
        final = not chunk
        pending += decoder.decode(chunk, final)
        if not state["text"] and pending and not pending.isspace():
            state["text"] = True
        position = 0
        for match in _LINE.finditer(pending):
            if not final and match.end() == len(pending) and pending.endswith("\r"):
                break  # may be the first half of "\r\n"
            yield match.group()
            position = match.end()
        pending = pending[position:]
        if len(pending) > limit:
            raise NeedsWholeFile("a line longer than a batch")
    if pending:
        yield pending  # the last line, without a line end


def _max_byte_length(column: Any) -> int:
    import pyarrow.compute as pc

    longest = pc.max(pc.binary_length(column)).as_py()
    return int(longest or 0)


_PARQUET_READ_BUFFER = 1 << 20  # Parquet column chunks are read through a buffer of this size, not whole


@overload
def _read_parquet(data: bytes, name: str, max_decoded_bytes: int, batch_bytes: None = None) -> pd.DataFrame: ...
@overload
def _read_parquet(data: Source, name: str, max_decoded_bytes: int, batch_bytes: int) -> Iterator[pd.DataFrame]: ...
def _read_parquet(
    data: Source, name: str, max_decoded_bytes: int, batch_bytes: int | None = None
) -> pd.DataFrame | Iterator[pd.DataFrame]:
    """A Parquet file as text: one frame (``data`` bytes), or frames of about ``batch_bytes`` of data.

    In batches the file's own checks (readable footer, header, declared size, rows) come first,
    as whole; a row batch that cannot be read, holds invalid data, or takes the expanded values
    past ``max_decoded_bytes`` raises :class:`NeedsWholeFile` (whole-file reading says why).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    unreadable = (pa.ArrowException, OSError, ValueError, IndexError, KeyError, TypeError)
    source = pa.BufferReader(data) if isinstance(data, bytes) else os.fspath(data)
    try:
        metadata = pq.ParquetFile(source).metadata
        schema = metadata.schema.to_arrow_schema()
    except unreadable as exc:
        raise FileRejected(
            "unparseable", f"{name}: not a readable Parquet file ({exc}); re-export the file and deliver it again"
        ) from exc
    header = normalise_header(list(schema.names), name)
    declared = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    if declared > max_decoded_bytes:
        raise FileRejected(
            "too_large",
            f"{name}: its data takes {declared} bytes once decompressed, above the limit of {max_decoded_bytes}; "
            "split it into smaller files",
        )
    if metadata.num_rows == 0:
        raise FileRejected("empty", f"{name}: the Parquet file has no rows; deliver a file with data")
    # Text columns stay dictionary-encoded while being read, so a small file whose dictionary
    # repeats one long value millions of times is measured before it is expanded.
    text_columns = [f.name for f in schema if _is_bytes_type(f.type)]
    if batch_bytes is not None:
        rows = max(1, batch_bytes // 4 * metadata.num_rows // max(1, declared))  # as text in Python: several times
        return _parquet_batches(source, name, header, text_columns, rows, max_decoded_bytes, unreadable)
    assert isinstance(data, bytes)  # noqa: S101 - whole-file reading is given the bytes (read_source)
    try:
        table = pq.ParquetFile(pa.BufferReader(data), read_dictionary=text_columns).read()
    except unreadable as exc:
        raise FileRejected(
            "unparseable", f"{name}: not a readable Parquet file ({exc}); re-export the file and deliver it again"
        ) from exc
    try:  # Parquet readers do not check decoded values: text that is not UTF-8, indexes out of range
        table.validate(full=True)
    except pa.ArrowException as exc:
        if "UTF8" in str(exc):
            raise FileRejected(
                "not_utf8",
                f"{name}: a text column holds bytes that are not valid UTF-8 ({exc}); re-export the file as UTF-8 "
                "(or store such values as binary, then each bad value is rejected on its own)",
            ) from exc
        raise FileRejected(
            "unparseable", f"{name}: the Parquet file holds invalid data ({exc}); re-export it and deliver it again"
        ) from exc
    expanded = sum(_expanded_bytes(table.column(i)) for i in range(table.num_columns))
    if expanded > max_decoded_bytes:
        raise FileRejected(
            "too_large",
            f"{name}: its values take {expanded} bytes once expanded, above the limit of {max_decoded_bytes}; "
            "split it into smaller files",
        )
    if table.num_rows == 0:
        raise FileRejected("empty", f"{name}: the Parquet file has no rows; deliver a file with data")
    return _parquet_frame(table, header)


def _parquet_batches(
    source: Any,
    name: str,
    header: list[str],
    text_columns: list[str],
    rows: int,
    max_decoded_bytes: int,
    unreadable: tuple[type[BaseException], ...],
) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    expanded = 0
    try:
        reader = pq.ParquetFile(
            source, read_dictionary=text_columns, buffer_size=_PARQUET_READ_BUFFER, pre_buffer=False
        )
        batches = reader.iter_batches(batch_size=rows, use_threads=False)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            table = pa.Table.from_batches([batch])
            table.validate(full=True)
            expanded += sum(_expanded_bytes(table.column(i)) for i in range(table.num_columns))
            if expanded > max_decoded_bytes:
                raise NeedsWholeFile(name)
            if table.num_rows:
                yield _parquet_frame(table, header)
    except unreadable as exc:
        raise NeedsWholeFile(name) from exc


def _parquet_frame(table: Any, header: list[str]) -> pd.DataFrame:
    columns = {position: _arrow_to_text(table.column(position)) for position in range(table.num_columns)}
    frame = pd.DataFrame(columns, index=range(table.num_rows), dtype=object)
    frame.columns = pd.Index(header, dtype=object)
    return frame


def _is_bytes_type(arrow_type: Any) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or pa.types.is_binary(arrow_type)
        or pa.types.is_large_binary(arrow_type)
    )


def _expanded_bytes(column: Any) -> int:
    """Memory a column takes once its dictionary-encoded chunks are expanded."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_dictionary(column.type):
        return int(column.nbytes)
    total = 0
    for chunk in column.chunks:
        if _is_bytes_type(chunk.dictionary.type):
            lengths = pc.binary_length(chunk.dictionary)
            taken = pc.sum(pc.take(lengths, chunk.indices)).as_py()
            total += int(taken or 0) + 8 * len(chunk)
        else:
            total += int(chunk.nbytes)
    return total


_NESTED_TYPE_CHECKS = ("is_list", "is_large_list", "is_fixed_size_list", "is_list_view", "is_large_list_view")


def _is_nested_type(arrow_type: Any) -> bool:
    import pyarrow as pa

    checks = [getattr(pa.types, check, None) for check in _NESTED_TYPE_CHECKS]
    return bool(
        any(check(arrow_type) for check in checks if check is not None)
        or pa.types.is_struct(arrow_type)
        or pa.types.is_map(arrow_type)
        or pa.types.is_union(arrow_type)
    )


def _arrow_to_text(column: Any) -> list[str | InvalidValue]:
    """One Arrow column as text; null (and float NaN) becomes the empty string.

    Scalars take Arrow's text form (what a CSV export would hold). Nested values (list, struct,
    map, union) and binary that is not UTF-8 become :class:`InvalidValue` cells.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    arrow_type = column.type
    if isinstance(arrow_type, pa.ExtensionType):
        column = pa.chunked_array([chunk.storage for chunk in column.chunks], arrow_type.storage_type)
        arrow_type = column.type
    if pa.types.is_dictionary(arrow_type):
        column = pc.cast(column, arrow_type.value_type)
        arrow_type = column.type
    if _is_nested_type(arrow_type):
        return [_cell_text(v) for v in column.to_pylist()]
    if pa.types.is_floating(arrow_type):
        column = pc.if_else(pc.is_nan(column), pa.scalar(None, arrow_type), column)
    try:
        texts: list[str] = pc.fill_null(pc.cast(column, pa.string()), "").to_pylist()
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        # Binary that is not UTF-8, and types Arrow cannot turn into text: value by value.
        return [_cell_text(v) for v in column.to_pylist()]
    return list(texts)


@dataclass(frozen=True)
class InvalidValue:
    """A delivered value that has no text form: nested (list, struct, map) or binary that is not UTF-8.

    :func:`validate` rejects the row with ``<column>:<problem>``; ``shown`` is what the rejected
    row and its reason show instead of the value.
    """

    problem: str  # "wrong_type" | "not_utf8"
    shown: str

    def __str__(self) -> str:
        return self.shown


def _cell_text(value: Any) -> str | InvalidValue:
    """One value of any origin (Arrow, pandas, a database driver) as text, or :class:`InvalidValue`."""
    if isinstance(value, (str, InvalidValue)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return InvalidValue("not_utf8", _show_text(f"binary {raw[:40]!r}{'...' if len(raw) > 40 else ''}"))
    if isinstance(value, (list, tuple, dict, set, frozenset, np.ndarray)):
        kind = "struct" if isinstance(value, dict) else "list"
        return InvalidValue("wrong_type", _show_text(f"{kind} {_short_repr(value)}"))
    if _is_null(value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (pd.Timestamp, datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (int, float, decimal.Decimal, np.number, uuid.UUID, str)):
        return str(value)
    return InvalidValue("wrong_type", _show_text(f"{type(value).__name__} {_short_repr(value)}"))


def _short_repr(value: Any) -> str:
    text = reprlib.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _show_text(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."


def unnamed_column(position: int) -> str:
    """The name an empty header cell gets (1-based position): an unknown column like any other."""
    return f"<unnamed column {position}>"


def normalise_header(names: Sequence[object], source: str) -> list[str]:
    """Header names as compared with the contract, the same for every format.

    Each name is NFC-normalised and stripped of outer whitespace (and byte-order marks); an
    empty name becomes :func:`unnamed_column` (an unknown column: dropped or rejected by the
    contract's ``unknown_columns``).

    Raises:
        FileRejected: ``bad_header`` when two columns have the same name after this.
    """
    header = []
    for position, raw in enumerate(names, start=1):
        text = unicodedata.normalize("NFC", str(raw)).strip().strip("\ufeff").strip()
        header.append(text or unnamed_column(position))
    counts = Counter(header)
    dupes = sorted(h for h, n in counts.items() if n > 1)
    if dupes:
        spelled = sorted({repr(str(raw)) for raw, h in zip(names, header, strict=True) if counts[h] > 1})
        raise FileRejected(
            "bad_header",
            f"{source}: duplicate column name(s) {dupes} (spelled {', '.join(spelled)}; names are compared "
            "without outer spaces); each column must appear once",
        )
    return header


# --------------------------------------------------------------------------- typing values
# One message per type; the value itself is quoted before it.
_INVALID_PROBLEMS = {  # formatted with the InvalidValue as the only argument (its str is what it shows)
    "wrong_type": "{} is a nested or non-scalar value; every contract column holds single values",
    "not_utf8": "{} is not valid UTF-8 text",
}
_TYPE_PROBLEMS = {
    "int": "is not a 64-bit integer",
    "float": "is not a finite number",
    "bool": "is not a boolean (use true/false, 1/0 or yes/no)",
    "timestamp": "is not an ISO-8601 timestamp between 1677 and 2262",
}


def _parse(texts: pd.Series | Any, column_type: str) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Parse one column of text (a Series of str or an Arrow string array), vectorized.

    Values in the shapes that are common and unambiguous (``-123``, ``12.5`` with at most 15
    digits, ``true``, ``2024-01-01T00:00:00Z``) are parsed by Arrow; every other value goes
    through :func:`_parse_reference`, value by value, so the answer is the reference's
    (``tests/core/test_validation.py`` compares both on generated text).
    """
    import pyarrow as pa

    arr = texts if isinstance(texts, (pa.Array, pa.ChunkedArray)) else pa.array(texts.tolist(), pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = _combined(arr)
    index = texts.index if isinstance(texts, pd.Series) else pd.RangeIndex(len(arr))
    return _parse_arrow(arr, column_type, index)


_FAST_INT = r"^-?[0-9]{1,18}$"
# At most 15 characters (so at most 15 digits): pandas' parser and Arrow's agree exactly there.
_FAST_FLOAT = r"^-?[0-9]+(\.[0-9]+)?$"
_FAST_FLOAT_CHARS = 15
_FAST_TIMESTAMP = (
    r"^(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"[T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](Z|\+00:00)?$"
)


# Bytes a whole int/float column may hold for Arrow to parse it in one cast (see _cast_whole_column).
_INT_BYTES = (0x30, 0x39, b"-")
_FLOAT_BYTES = (0x30, 0x39, b"-.")
# A timestamp column whose sampled values repeat this often is parsed once per distinct value.
_DISTINCT_SAMPLE = 4096
_DISTINCT_SHARE = 0.5


class _SlowValues(Exception):
    """A value needs the reference parser where the caller asked for the vectorized answer only."""


def _parse_arrow(
    arr: Any, column_type: str, index: pd.Index, *, by_distinct: bool = True, vectorized_only: bool = False
) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(arr)
    raw = _text_bytes(arr)
    if raw is not None:
        present = np.diff(raw[0]) > 0
    else:
        present = pc.not_equal(arr, "").to_numpy(zero_copy_only=False).astype(bool, copy=False)
    if column_type in ("string", "category"):
        return _string_values(arr, present, index), present, np.zeros(n, dtype=bool)
    if column_type == "bool":
        lowered = pc.ascii_lower(arr)  # no text outside ASCII lowers to one of the spellings
        truth = pc.is_in(lowered, pa.array(sorted(_TRUE))).to_numpy(zero_copy_only=False).astype(bool)
        ok = truth | pc.is_in(lowered, pa.array(sorted(_FALSE))).to_numpy(zero_copy_only=False).astype(bool)
        return pd.Series(pd.arrays.BooleanArray(truth, ~ok), index=index), present, present & ~ok
    if column_type == "timestamp" and by_distinct and raw is not None and _repeats_often(arr):
        try:
            return _parse_distinct(arr, index)
        except _SlowValues:
            pass  # some values need the reference: the column as a whole, in row order, as ever
    pattern = {"int": _FAST_INT, "float": _FAST_FLOAT, "timestamp": _FAST_TIMESTAMP}.get(column_type)
    if pattern is None:  # pragma: no cover - the contract only allows COLUMN_TYPES
        raise ValueError(f"unknown column type {column_type!r}")
    whole = _cast_whole_column(arr, raw, present, column_type)
    if whole is not None:  # every present value parsed at once: nothing for the reference
        fast = present.copy()
        if column_type == "int":
            numbers = np.zeros(n, dtype=np.int64)
            numbers[present] = whole
        else:
            floats = np.full(n, np.nan)
            floats[present] = whole
    else:
        matches = pc.match_substring_regex(arr, pattern)
        if column_type == "float":
            matches = pc.and_(matches, pc.less_equal(pc.utf8_length(arr), _FAST_FLOAT_CHARS))
        fast = matches.to_numpy(zero_copy_only=False).astype(bool)
        chosen = pc.filter(arr, pa.array(fast))
        if column_type == "int":
            numbers = np.zeros(n, dtype=np.int64)
            numbers[fast] = pc.cast(chosen, pa.int64()).to_numpy()
        elif column_type == "float":
            floats = np.full(n, np.nan)
            floats[fast] = pc.cast(chosen, pa.float64()).to_numpy()
        else:
            stamps = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
            plain = pc.replace_substring(pc.utf8_slice_codeunits(chosen, 0, 19), " ", "T")
            parsed = pc.strptime(plain, format="%Y-%m-%dT%H:%M:%S", unit="ns", error_is_null=True)
            # strptime rolls a day past the month's end over (2023-02-30 -> 2023-03-02) instead of
            # failing: a parsed day of month other than the written one is not a calendar date.
            values = parsed.to_numpy(zero_copy_only=False).astype("datetime64[ns]")
            days = (values.astype("datetime64[D]") - values.astype("datetime64[M]")).astype(np.int64) + 1
            written = pc.cast(pc.utf8_slice_codeunits(plain, 8, 10), pa.int64()).to_numpy(zero_copy_only=False)
            valid = ~np.isnat(values) & (days == written)
            rows = np.flatnonzero(fast)
            fast[rows[~valid]] = False  # not a calendar date (2023-02-30): the reference decides
            stamps[rows[valid]] = values[valid]
    ok = fast.copy()
    slow = np.flatnonzero(present & ~fast)
    if len(slow) and vectorized_only:
        raise _SlowValues(column_type)
    if len(slow):
        texts = pd.Series(pc.take(arr, pa.array(slow)).to_pylist(), dtype=object)
        slow_values, _, slow_bad = _parse_reference(texts, column_type)
        slow_ok = ~slow_bad
        ok[slow] = slow_ok
        if column_type == "int":
            numbers[slow[slow_ok]] = slow_values[slow_ok].to_numpy(dtype=np.int64)
        elif column_type == "float":
            floats[slow[slow_ok]] = slow_values[slow_ok].to_numpy(dtype=float)
        else:
            stamps[slow[slow_ok]] = slow_values[slow_ok].dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    if column_type == "int":
        return pd.Series(pd.arrays.IntegerArray(numbers, ~ok), index=index), present, present & ~ok
    if column_type == "float":
        ok &= np.isfinite(floats)
        return pd.Series(np.where(ok, floats, np.nan), index=index, dtype="float64"), present, present & ~ok
    return _utc_values(stamps, ok, index), present, present & ~ok


def _utc_values(stamps: np.ndarray, ok: np.ndarray, index: pd.Index) -> pd.Series:
    """Naive UTC ``datetime64[ns]`` as a ``datetime64[ns, UTC]`` Series, NaT where not ``ok``."""
    utc: pd.Series = pd.Series(stamps, index=index).dt.tz_localize("UTC").where(ok)
    return utc


def _string_values(arr: Any, present: np.ndarray, index: pd.Index) -> pd.Series:
    """A string/category column as pandas ``string`` values, NA where empty.

    Arrow's ``to_pandas`` makes one Python string per distinct value (a category column of a
    million rows makes a handful), where ``to_numpy`` would make one per row.
    """
    cells = arr.to_pandas().to_numpy(dtype=object)
    if not present.all():
        cells = cells.copy()
        cells[~present] = None
    return pd.Series(cells, index=index, dtype="string")


def _repeats_often(arr: Any) -> bool:
    """Whether the values of a long column repeat, judged on a run of consecutive values (event times
    often come in order, many rows a second): then each distinct value is parsed once."""
    import pyarrow.compute as pc

    if len(arr) < 2 * _DISTINCT_SAMPLE:
        return False
    sample = arr.slice((len(arr) - _DISTINCT_SAMPLE) // 2, _DISTINCT_SAMPLE)
    return len(pc.unique(sample)) <= _DISTINCT_SHARE * len(sample)


def _parse_distinct(arr: Any, index: pd.Index) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Timestamps parsed once per distinct text (the same rules: :func:`_parse_arrow` on the distinct values).

    Raises:
        _SlowValues: a value needs the reference parser, whose answer for one value can depend on
            the values before it (pandas reads a naive time after one with an offset in that
            offset): the caller then parses the column in row order, as without this shortcut.
    """
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(arr)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    distinct = encoded.dictionary
    values, present, bad = _parse_arrow(
        distinct, "timestamp", pd.RangeIndex(len(distinct)), by_distinct=False, vectorized_only=True
    )
    ok = (present & ~bad)[codes]
    stamps = values.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")[codes]
    return _utc_values(stamps, ok, index), present[codes], bad[codes]


def _cast_whole_column(arr: Any, raw: Any, present: np.ndarray, column_type: str) -> np.ndarray | None:
    """Every present value of an int/float column parsed by one Arrow cast, or None (the general path decides).

    Only columns whose values hold nothing but digits, ``-`` (and ``.`` for floats) qualify, floats
    of at most :data:`_FAST_FLOAT_CHARS` characters: there Arrow's answer is the reference's
    (``tests/core/test_validation.py`` compares them). Any value Arrow refuses (``1-2``, ``.``,
    out of range) sends the whole column back to the general path.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if raw is None or column_type not in ("int", "float") or not present.any():
        return None
    offsets, data = raw
    low, high, others = _INT_BYTES if column_type == "int" else _FLOAT_BYTES
    outside = (data - np.uint8(low)) > np.uint8(high - low)
    for byte in others:
        outside &= data != byte
    if outside.any():
        return None
    if column_type == "float" and int(np.diff(offsets).max()) > _FAST_FLOAT_CHARS:
        return None
    chosen = arr if present.all() else arr.filter(pa.array(present))
    try:
        numbers = pc.cast(chosen, pa.int64() if column_type == "int" else pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    result: np.ndarray = numbers.to_numpy()
    return result


def _parse_reference(texts: pd.Series, column_type: str) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Parse one column of text value by value (the reference :func:`_parse` falls back to).

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
                sign = "-" if text.startswith("-") else ""
                digits = text.lstrip("+-").lstrip("0") or "0"
                if len(digits) > _INT64_DIGITS:  # out of range; int() would refuse >4300 digits anyway
                    continue
                value = int(sign + digits)
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
        floats = _reference_floats(raw)
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
        if str(stamps.dtype) != _UTC_NS:
            stamps = stamps.astype(_UTC_NS)
        values = stamps.set_axis(index).where(ok)
    else:  # pragma: no cover - the contract only allows COLUMN_TYPES
        raise ValueError(f"unknown column type {column_type!r}")
    return values, present, present & ~ok


def _reference_floats(raw: list[str]) -> np.ndarray:
    """Float values of texts (NaN where empty or not a number), each on its own.

    Integers (``[+-]digits``) go through Python's ``int`` and ``float`` (correctly rounded);
    everything else through ``pd.to_numeric``. pandas reads a long integer exactly when it is
    alone but through an approximate parser when other values sit beside it, so handing it the
    integers would make a value's answer depend on its neighbours.
    """
    floats = np.full(len(raw), np.nan)
    others = []
    for i, text in enumerate(raw):
        if not text:
            continue
        if _INT_TEXT.fullmatch(text):
            digits = text.lstrip("+-").lstrip("0")
            try:
                floats[i] = float(int(text)) if len(digits) <= 400 else np.inf
            except OverflowError:
                floats[i] = np.inf  # beyond a float: not finite, rejected
        else:
            others.append(i)
    if others:
        texts = pd.Series([raw[i] for i in others], dtype=object)
        floats[others] = pd.to_numeric(texts, errors="coerce").to_numpy(dtype=float)
    return floats


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


def check_contract(contract: DatasetContract) -> None:
    """Fail before any file is read when the contract itself cannot validate rows.

    Raises:
        ValueError: an ``allowed`` value is not of its column's type (every file would fail).
    """
    for spec in contract.columns:
        _allowed_values(spec)


def _show(raw: str) -> str:
    return repr(_clip(raw))


def _clip(raw: str) -> str:
    return raw if len(raw) <= 60 else raw[:57] + "..."


def _show_bound(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


@dataclass
class _ColumnProblems:
    """At most one problem per row for one column: a code and a message, None where fine.

    ``codes`` and ``messages`` are made on the first problem: a column without any keeps none.
    """

    name: str
    open: np.ndarray  # rows without a problem yet
    _codes: np.ndarray | None = None
    _messages: np.ndarray | None = None

    @classmethod
    def empty(cls, name: str, n: int) -> _ColumnProblems:
        return cls(name, np.ones(n, dtype=bool))

    @property
    def codes(self) -> np.ndarray:
        if self._codes is None:
            self._codes = np.full(len(self.open), None, dtype=object)
        return self._codes

    @property
    def messages(self) -> np.ndarray:
        if self._messages is None:
            self._messages = np.full(len(self.open), None, dtype=object)
        return self._messages

    def codes_at(self, rows: np.ndarray) -> np.ndarray:
        return np.full(len(rows), None, dtype=object) if self._codes is None else self._codes[rows]

    def messages_at(self, rows: np.ndarray) -> np.ndarray:
        return np.full(len(rows), None, dtype=object) if self._messages is None else self._messages[rows]

    def flag(self, mask: np.ndarray, kind: str, texts: Any, describe: Callable[[str], str]) -> None:
        rows = np.flatnonzero(mask & self.open)
        if len(rows):
            self.codes[rows] = f"{self.name}:{kind}"
            self.messages[rows] = [f"{self.name}: {describe(t)}" for t in texts[rows]]
            self.open[rows] = False


def _check_column(texts: pd.Series, spec: ColumnSpec, is_key: bool) -> tuple[Any, _ColumnProblems, Any]:
    """One column's typed values (an Arrow array of the accepted type, null where empty or invalid),
    its problems, and the Arrow text its values were parsed from."""
    import pyarrow as pa
    import pyarrow.compute as pc

    problems = _ColumnProblems.empty(spec.name, len(texts))
    arrow = _arrow_text(texts)
    if arrow is None:  # object cells: text, or InvalidValue where a value has no text form
        cells = texts.to_numpy(dtype=object)
        invalid = np.fromiter((isinstance(t, InvalidValue) for t in cells), dtype=bool, count=len(cells))
        if invalid.any():  # values without a text form: rejected whatever the column's type
            for problem in ("wrong_type", "not_utf8"):
                kind = np.fromiter(
                    (isinstance(t, InvalidValue) and t.problem == problem for t in cells), dtype=bool, count=len(cells)
                )
                problems.flag(kind, problem, cells, _INVALID_PROBLEMS[problem].format)
            cells = np.where(invalid, "", cells)
        arrow = pa.array(cells.tolist(), pa.string())
    shown = arrow if spec.type in ("string", "category") else _strip(arrow)
    if spec.type in ("string", "category"):  # the text is the value: no Python strings made
        values = None
        present = _present(shown)
        bad_type = np.zeros(len(shown), dtype=bool)
    else:
        values, present, bad_type = _parse(shown, spec.type)
    texts_of = _LazyTexts(shown)
    problems.flag(bad_type, "wrong_type", texts_of, lambda t: f"{_show(t)} {_TYPE_PROBLEMS[spec.type]}")
    if is_key:
        problems.flag(
            ~present, "null", texts_of, lambda t: "null in key column (entity key and event time are required)"
        )
    elif not spec.nullable:
        problems.flag(~present, "null", texts_of, lambda t: "null in non-nullable column")
    low, high = spec.min, spec.max
    bounded = values is not None and spec.is_numeric and (low is not None or high is not None)
    numbers = _numbers(values, spec.type) if bounded and values is not None else None
    if numbers is not None and low is not None:
        below = numbers[1] & (numbers[0] < low)
        problems.flag(below, "below_min", texts_of, lambda t: f"{_clip(t)} below min {_show_bound(low)}")
    if numbers is not None and high is not None:
        above = numbers[1] & (numbers[0] > high)
        problems.flag(above, "above_max", texts_of, lambda t: f"{_clip(t)} above max {_show_bound(high)}")
    allowed = _allowed_values(spec)
    if allowed is not None:
        if values is None:  # string/category: compared as Arrow text, the same answer, faster
            inside = pc.is_in(shown, value_set=pa.array(allowed.astype(object).tolist(), pa.string()))
            outside = present & ~bad_type & ~inside.to_numpy(zero_copy_only=False).astype(bool)
        elif spec.type in ("int", "float"):  # compared as numbers: the same answer as Series.isin, faster
            data, valid = _numbers(values, spec.type)
            allowed_data, allowed_valid = _numbers(allowed, spec.type)
            outside = present & ~bad_type & ~(valid & np.isin(data, allowed_data[allowed_valid]))
        else:
            outside = present & ~bad_type & ~values.isin(allowed).fillna(False).to_numpy(dtype=bool)
        listed = list(spec.allowed or ())
        problems.flag(outside, "not_allowed", texts_of, lambda t: f"{_show(t)} not in allowed {listed}")
    if values is None:
        typed = shown if present.all() else pc.if_else(pa.array(present), shown, pa.scalar(None, pa.string()))
    else:
        typed = _arrow_values(values, spec.type)
    return typed, problems, shown


def _present(text: Any) -> np.ndarray:
    """Where an Arrow string array holds a non-empty value."""
    import pyarrow.compute as pc

    raw = _text_bytes(text)
    if raw is not None:
        present: np.ndarray = np.diff(raw[0]) > 0
        return present
    return np.asarray(pc.not_equal(text, "").to_numpy(zero_copy_only=False), dtype=bool)


def _arrow_values(values: pd.Series, column_type: str) -> Any:
    """A typed column (the contract dtype) as the Arrow array ``pa.Table.from_pandas`` makes of it (NA/NaN: null)."""
    import pyarrow as pa

    if column_type in ("string", "category"):
        cells = values.to_numpy(dtype=object)
        cells[values.isna().to_numpy(dtype=bool)] = None
        return pa.array(cells, pa.string())
    if column_type == "float":
        return pa.array(values.to_numpy(dtype=np.float64, na_value=np.nan), pa.float64(), from_pandas=True)
    if column_type == "timestamp":
        return pa.array(values.astype(_UTC_NS).array, pa.timestamp("ns", tz="UTC"))
    return pa.array(values.array, pa.int64() if column_type == "int" else pa.bool_())


def _numbers(values: pd.Series, column_type: str) -> tuple[np.ndarray, np.ndarray]:
    """An int/float column as (numpy numbers, mask of non-null); what pandas compares underneath."""
    if column_type == "int":
        valid = values.notna().to_numpy(dtype=bool)
        return values.to_numpy(dtype=np.int64, na_value=0), valid
    floats = values.to_numpy(dtype=np.float64, na_value=np.nan)
    return floats, ~np.isnan(floats)


class _LazyTexts:
    """Values of an Arrow string array, taken as Python strings only for the rows asked for."""

    def __init__(self, arrow: Any) -> None:
        self.arrow = arrow

    def __getitem__(self, rows: np.ndarray) -> list[str]:
        import pyarrow as pa

        taken: list[str] = self.arrow.take(pa.array(rows, pa.int64())).to_pylist()
        return taken


def _arrow_text(texts: pd.Series) -> Any:
    """The Arrow string array behind a column :func:`_read_csv` made, or None for other columns."""
    import pyarrow as pa

    dtype = texts.dtype
    if isinstance(dtype, pd.ArrowDtype) and pa.types.is_string(dtype.pyarrow_dtype):
        array = texts.array._pa_array  # the column as read; no copy
        combined = _combined(array)
        return None if combined.null_count else combined
    return None


def _text_bytes(arrow: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """The values of an Arrow string/binary array without nulls as (offsets from 0, UTF-8 bytes), no copy.

    None for other arrays (nulls, other types): callers then take their general path.
    """
    import pyarrow as pa

    kind = arrow.type
    if arrow.null_count or not (pa.types.is_string(kind) or pa.types.is_binary(kind) or pa.types.is_large_string(kind)):
        return None
    width = np.int64 if pa.types.is_large_string(kind) else np.int32
    n = len(arrow)
    if n == 0:
        return np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.uint8)
    buffers = arrow.buffers()
    offsets = np.frombuffer(buffers[1], dtype=width, count=n + 1, offset=arrow.offset * np.dtype(width).itemsize)
    first, last = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(buffers[2], dtype=np.uint8)[first:last] if last > first else np.zeros(0, dtype=np.uint8)
    return offsets.astype(np.int64) - first, data


def _any_in(data: np.ndarray, low: int, high: int) -> bool:
    """Whether any byte of ``data`` is in ``low..high`` (one vectorized pass, uint8 wrap-around)."""
    return bool(((data - np.uint8(low)) <= np.uint8(high - low)).any())


def _needs_python_strip(data: np.ndarray) -> bool:
    """A byte outside ASCII, or a separator 0x1C-0x1F: ``str.strip()`` may remove what Arrow's trim keeps."""
    return bool((data >= 0x80).any()) or _any_in(data, 0x1C, 0x1F)


def _has_ascii_space(data: np.ndarray) -> bool:
    """A byte Arrow's ``ascii_trim_whitespace`` trims: space, tab, line feed, vertical tab, form feed, CR."""
    return bool((data == 0x20).any()) or _any_in(data, 0x09, 0x0D)


def _strip(arrow: Any) -> Any:
    """``str.strip()`` of every value, vectorized where the value is ASCII without separators 0x1C-0x1F."""
    import pyarrow as pa
    import pyarrow.compute as pc

    raw = _text_bytes(arrow)
    if raw is not None and not _needs_python_strip(raw[1]):  # the usual case: plain ASCII
        return pc.ascii_trim_whitespace(arrow) if _has_ascii_space(raw[1]) else arrow
    special = pc.or_(pc.invert(pc.string_is_ascii(arrow)), pc.match_substring_regex(arrow, "[\x1c-\x1f]"))
    trimmed = pc.ascii_trim_whitespace(arrow)
    if not pc.any(special).as_py():
        return trimmed
    rows = np.flatnonzero(special.to_numpy(zero_copy_only=False))
    stripped = [t.strip() for t in arrow.take(pa.array(rows, pa.int64())).to_pylist()]
    values = trimmed.to_numpy(zero_copy_only=False).astype(object)
    values[rows] = stripped
    return pa.array(values.tolist(), pa.string())


# --------------------------------------------------------------------------- row keys
_encode = json.encoder.encode_basestring  # the encoder json.dumps(ensure_ascii=False) uses


def _json_text(value: str | None) -> str:
    return "null" if value is None else _encode(value)


def canonical_values(values: pd.Series, column_type: str) -> list[str | None]:
    """A typed column as the text that goes into row keys (see the module docstring); None for null."""
    if column_type == "timestamp":
        utc = _naive_utc(values)
        ticks = utc.view(np.int64)
        whole = ~np.isnat(utc) & (ticks % 1_000_000_000 == 0)
        if whole.all():  # the usual case, vectorized: no fraction to trim
            return [t + "+00:00" for t in np.datetime_as_string(utc.astype("datetime64[s]"), unit="s").tolist()]
        return [None if t == "NaT" else _iso_utc(t) for t in np.datetime_as_string(utc, unit="ns")]
    if column_type in ("string", "category"):
        cells = values.to_numpy(dtype=object)
        cells[values.isna().to_numpy(dtype=bool)] = None
        texts: list[str | None] = cells.tolist()
        return texts
    items = values.astype(object).tolist()
    if column_type == "int":
        return [None if v is pd.NA or v is None else str(int(v)) for v in items]
    if column_type == "float":
        return [None if v is None or v != v else repr(0.0 if v == 0 else float(v)) for v in items]
    if column_type == "bool":
        return [None if v is pd.NA or v is None else ("true" if v else "false") for v in items]
    return [None if v is pd.NA or v is None else str(v) for v in items]


def _naive_utc(values: pd.Series) -> np.ndarray:
    """Timestamps as naive UTC ``datetime64[ns]`` (naive values are UTC), as ``pd.to_datetime(utc=True)``."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):  # as validate types them: nothing to parse
        aware = values.dt.tz_convert("UTC")
    else:
        aware = pd.to_datetime(values, utc=True)
    utc: np.ndarray = aware.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    return utc


def _iso_utc(text: str) -> str:
    """``YYYY-MM-DDTHH:MM:SS.fffffffff`` -> what ``Timestamp.isoformat()`` gives in UTC."""
    fraction = text[20:]
    if fraction == "000000000":
        text = text[:19]
    elif fraction.endswith("000"):
        text = text[:26]
    return text + "+00:00"


def _sha256_constructor() -> Callable[[bytes], Any]:
    """SHA-256 for many short payloads: the faster, on this machine, of OpenSSL's (``hashlib``: fast where
    the CPU has SHA instructions) and CPython's own (``_sha2``, ``_sha256`` before 3.12: less call overhead
    where it has not), timed on a few thousand ~50-byte inputs; the digest is the same either way."""
    import time

    candidates: list[Callable[[bytes], Any]] = [hashlib.sha256]
    for module in ("_sha2", "_sha256"):
        try:
            constructor: Callable[[bytes], Any] = importlib.import_module(module).sha256
        except (ImportError, AttributeError):
            continue
        if constructor(b"abc").hexdigest() == hashlib.sha256(b"abc").hexdigest():
            candidates.append(constructor)
            break
    if len(candidates) == 1:
        return candidates[0]
    sample = [b'["key","C%07d","2024-01-01T00:00:00+00:00"]' % i for i in range(2000)]

    def seconds(constructor: Callable[[bytes], Any]) -> float:
        start = time.perf_counter()
        for payload in sample:
            constructor(payload).digest()
        return time.perf_counter() - start

    best = [min(seconds(c) for _ in range(3)) for c in candidates]
    return candidates[best.index(min(best))]


_sha256 = _sha256_constructor()
_DIGEST_CHUNK = 1 << 16  # payloads turned into Python bytes at a time (bounds the temporaries)


def _key_payloads(entities: list[str | None], times: list[str | None]) -> list[bytes]:
    """:func:`_key_payload` of every row as UTF-8, built by Arrow where no value needs a JSON escape."""
    import pyarrow as pa

    ent, tim = pa.array(entities, pa.string()), pa.array(times, pa.string())
    joined = _arrow_key_payloads(ent, tim)
    if joined is None:
        return [_key_payload(e, t).encode("utf-8") for e, t in zip(entities, times, strict=True)]
    payloads: list[bytes] = joined.to_numpy(zero_copy_only=False).tolist()
    return payloads


def _arrow_key_payloads(ent: Any, tim: Any) -> Any:
    """:func:`_key_payload` of every row as an Arrow binary array; None when a value is null or needs a
    JSON escape (a quote, a backslash, a control character): then the caller encodes row by row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = []
    for texts in (ent, tim):
        raw = _text_bytes(texts)
        if raw is None or _needs_json_escape(raw[1]):
            return None
        parts.append(raw)
    fixed = _fixed_width_payloads(len(ent), *parts)
    if fixed is not None:
        return fixed
    joined = pc.binary_join_element_wise('["key","', ent, '","', tim, '"]', "")
    return pc.cast(joined, pa.binary())


def _fixed_width_payloads(n: int, ent: tuple[np.ndarray, np.ndarray], tim: tuple[np.ndarray, np.ndarray]) -> Any:
    """The payloads of ``n`` rows whose entities all have one length, and times another (ids of one
    width, whole-second times), laid out by numpy; None otherwise."""
    import pyarrow as pa

    widths = []
    for offsets, data in (ent, tim):
        width = int(offsets[1] - offsets[0]) if n else 0
        if width == 0 or len(data) != n * width or not (np.diff(offsets) == width).all():
            return None
        widths.append(width)
    prefix, middle, suffix = (np.frombuffer(b, dtype=np.uint8) for b in (b'["key","', b'","', b'"]'))
    blocks = [prefix, ent[1].reshape(n, widths[0]), middle, tim[1].reshape(n, widths[1]), suffix]
    total = sum(block.shape[-1] for block in blocks)
    if n * total >= 2**31:  # binary offsets are 32-bit
        return None
    out = np.empty((n, total), dtype=np.uint8)
    column = 0
    for block in blocks:  # a constant piece is broadcast over the rows
        out[:, column : column + block.shape[-1]] = block
        column += block.shape[-1]
    offsets = np.arange(0, n * total + 1, total, dtype=np.int32)
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(out)])


def _needs_json_escape(data: np.ndarray) -> bool:
    """A byte ``json`` escapes (``encode_basestring``): a control character, ``"`` or ``\\``."""
    return bool((data < 0x20).any() or (data == 0x22).any() or (data == 0x5C).any())


def _key_payload(entity: str | None, time: str | None) -> str:
    return f'["key",{_json_text(entity)},{_json_text(time)}]'


def row_keys(typed: pd.DataFrame, contract: DatasetContract, *, texts: dict[str, Any] | None = None) -> list[str]:
    """``_row_key`` of every row of a typed frame (contract columns with contract dtypes).

    ``texts``: the Arrow text of some string/category columns of ``typed`` (same rows, no
    nulls), as :func:`validate` has it at hand; it spares converting those columns again.
    """
    names = _key_columns(contract)
    columns = {
        name: _arrow_values(_utc_if_time(typed[name], contract.column(name).type), contract.column(name).type)
        for name in names
    }
    keys: list[str] = _row_key_array(columns, contract, texts=texts).to_pylist()
    return keys


def _utc_if_time(values: pd.Series, column_type: str) -> pd.Series:
    """Timestamps as ``datetime64[ns, UTC]`` (naive values are UTC, as ``pd.to_datetime(utc=True)``)."""
    if column_type != "timestamp" or isinstance(values.dtype, pd.DatetimeTZDtype):
        return values
    utc: pd.Series = pd.to_datetime(values, utc=True)
    return utc


def _key_columns(contract: DatasetContract) -> list[str]:
    """The columns a row key is made of: entity key and event time, or every contract column."""
    if contract.entity_key and contract.event_time:
        return [contract.entity_key, contract.event_time]
    return sorted(contract.column_names)


def _row_key_array(
    columns: Mapping[str, Any], contract: DatasetContract, *, texts: Mapping[str, Any] | None = None
) -> Any:
    """``_row_key`` of every row as an Arrow string array, from the typed Arrow columns (:func:`_arrow_values`).

    Made :data:`_DIGEST_CHUNK` rows at a time, so the payloads hashed are never held for a whole batch.
    """
    import pyarrow as pa

    names = _key_columns(contract)
    if not names:
        return pa.array([], pa.string())
    canonical = {
        name: _canonical_of(columns[name], contract.column(name).type, (texts or {}).get(name)) for name in names
    }
    n = len(canonical[names[0]])
    chunks = []
    for start in range(0, n, _DIGEST_CHUNK):
        part = {name: text.slice(start, _DIGEST_CHUNK) for name, text in canonical.items()}
        chunks.append(_key_chunk(part, contract))
    return _hex_keys(b"".join(chunks))


def _key_chunk(canonical: Mapping[str, Any], contract: DatasetContract) -> bytes:
    """The first :data:`ROW_KEY_LENGTH` // 2 bytes of the SHA-256 of each row's payload, joined."""
    if contract.entity_key and contract.event_time:
        ent, tim = canonical[contract.entity_key], canonical[contract.event_time]
        payloads = _arrow_key_payloads(ent, tim)
        if payloads is None:
            return _digest_bytes(_key_payloads(ent.to_pylist(), tim.to_pylist()))
        return _digest_bytes(payloads.to_numpy(zero_copy_only=False))
    row_payloads = _arrow_row_payloads(dict(canonical))
    if row_payloads is not None:
        return _digest_bytes(row_payloads.to_numpy(zero_copy_only=False))
    names = list(canonical)
    cells = [[f"[{_encode(name)},{_json_text(v)}]" for v in canonical[name].to_pylist()] for name in names]
    return _digest_bytes([('["row",[' + ",".join(row) + "]]").encode("utf-8") for row in zip(*cells, strict=True)])


def _digest_bytes(payloads: Any) -> bytes:
    sha256 = _sha256
    half = ROW_KEY_LENGTH // 2
    return b"".join([sha256(p).digest()[:half] for p in payloads])


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _hex_keys(raw: bytes) -> Any:
    """Keys of :data:`ROW_KEY_LENGTH` // 2 bytes each as an Arrow string array of lowercase hex digits."""
    import pyarrow as pa

    half = ROW_KEY_LENGTH // 2
    digits = np.frombuffer(raw, dtype=np.uint8).reshape(-1, half)
    n = len(digits)
    text = np.empty((n, ROW_KEY_LENGTH), dtype=np.uint8)
    text[:, 0::2], text[:, 1::2] = _HEX[digits >> 4], _HEX[digits & 15]
    offsets = np.arange(0, ROW_KEY_LENGTH * n + 1, ROW_KEY_LENGTH, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(text)])


def _arrow_row_payloads(texts: dict[str, Any]) -> Any:
    """``["row",[[column, value], ...]]`` of every row (columns in the given order, null as JSON
    ``null``) as an Arrow binary array; None when a value needs a JSON escape (then row by row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts: list[Any] = ['["row",[']
    for position, (name, text) in enumerate(texts.items()):
        raw = _text_bytes(text.drop_null())
        if raw is None or _needs_json_escape(raw[1]):
            return None
        head = ("," if position else "") + f"[{_encode(name)},"
        quoted = pc.binary_join_element_wise(head + '"', text, '"]', "")  # null where the value is null
        parts.append(pc.fill_null(quoted, head + "null]"))
    parts.append("]]")
    return pc.cast(pc.binary_join_element_wise(*parts, ""), pa.binary())


def _canonical_arrow(values: pd.Series, column_type: str, text: Any = None) -> Any:
    """:func:`canonical_values` as an Arrow string array (null for null), vectorized for the usual types.

    ``text``: the column's Arrow text when at hand (string/category columns without nulls).
    """
    return _canonical_of(_arrow_values(_utc_if_time(values, column_type), column_type), column_type, text)


def _canonical_of(column: Any, column_type: str, text: Any = None) -> Any:
    """:func:`canonical_values` of a typed Arrow column (:func:`_arrow_values`) as an Arrow string array.

    Timestamps are made by :func:`canonical_values` once per distinct value.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if column_type in ("string", "category"):
        if text is not None and len(text) == len(column) and not text.null_count:
            return text
        return column
    if column_type == "timestamp":
        ticks = pc.cast(column, pa.int64()).fill_null(np.iinfo(np.int64).min).to_numpy()  # null: NaT
        codes, distinct = pd.factorize(ticks)  # NaT is one more value: its text is None
        texts = canonical_values(pd.Series(distinct.view("datetime64[ns]")).dt.tz_localize("UTC"), "timestamp")
        return pa.array(texts, pa.string()).take(pa.array(codes))
    if column_type == "int":
        return pc.cast(column, pa.string())  # decimal digits, as str(int)
    if column_type == "bool":
        return pc.if_else(column, "true", "false")
    if column_type == "float":  # repr once per distinct value, -0.0 as 0.0
        codes, distinct = pd.factorize(column.to_numpy(zero_copy_only=False))  # NaN (null): code -1
        texts = [*map(repr, np.where(distinct == 0, 0.0, distinct).tolist()), None]
        return pa.array(texts, pa.string()).take(pa.array(np.where(codes < 0, len(texts) - 1, codes)))
    raise ValueError(f"unknown column type {column_type!r}")  # pragma: no cover - the contract only allows these


# --------------------------------------------------------------------------- validation
def validate(
    df: pd.DataFrame,
    contract: DatasetContract,
    source: str,
    ingested_at: pd.Timestamp,
    *,
    row_offset: int = 0,
    seen_keys: dict[str, int] | SeenRowKeys | None = None,
) -> ValidationResult:
    """Check every row of ``df`` against ``contract``; split it into typed accepted and rejected rows.

    Args:
        df: the file's rows, ideally as text from :func:`read_source` (other values are turned
            into text first; ``None``/NaN become null).
        contract: the dataset contract.
        source: where the rows came from (file key or SQL table + watermark); kept in ``_source``.
        ingested_at: ingestion time, used as ``_event_time`` when the contract has no event time
            (naive values are taken as UTC).
        row_offset: data rows of the same file before ``df`` (when a file is validated in
            batches, :func:`validate_file`): ``_row_number`` and messages count from there.
        seen_keys: row key -> data row number of the accepted rows of the earlier batches of the
            same file (a dict, or a :class:`SeenRowKeys`, which records them for less); a repeat of
            one is rejected as ``duplicate_row``. Updated in place.

    Raises:
        FileRejected: ``missing_columns``, ``unknown_columns`` (with ``unknown_columns: reject``) or
            ``bad_header`` (two columns with one name once normalised).
    """
    frame = _as_text(df)
    frame.columns = pd.Index(normalise_header(list(df.columns), source), dtype=object)
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

    import pyarrow as pa

    typed: dict[str, Any] = {}  # Arrow arrays of the accepted types
    shown: dict[str, Any] = {}  # Arrow text of a string/category entity key, for the row keys
    column_problems: list[_ColumnProblems] = []
    for spec in contract.columns:
        values, problems, text = _check_column(frame[spec.name], spec, is_key=spec.name in contract.key_columns)
        typed[spec.name] = values
        column_problems.append(problems)
        if spec.name == contract.entity_key and spec.type in ("string", "category"):
            shown[spec.name] = text
        del values, text

    bad = np.zeros(n, dtype=bool)
    for problems in column_problems:
        bad |= ~problems.open
    good_rows = np.flatnonzero(~bad)
    table = pa.table(typed)
    del typed
    if len(good_rows) < n:
        taken = _arrow_array(good_rows)
        table = table.take(taken)
        shown = {name: text.take(taken) for name, text in shown.items()}
    columns = {name: _combined(table.column(name)) for name in _key_columns(contract)}
    keys = _row_key_array(columns, contract, texts=shown)
    del columns

    # A repeat of an earlier row of the same file is rejected; the first one is kept.
    numbers = good_rows + 1 + row_offset
    repeat, first = _find_repeats(keys, numbers, seen_keys)
    duplicates = _ColumnProblems.empty(DUPLICATE_ROW, n)
    if repeat.any():
        for position, first_row in zip(good_rows[repeat].tolist(), first[repeat].tolist(), strict=True):
            duplicates.codes[position] = DUPLICATE_ROW
            duplicates.messages[position] = f"{DUPLICATE_ROW}: same row key as data row {first_row}"
            duplicates.open[position] = False
        kept = _arrow_array(~repeat)
        table, keys = table.filter(kept), keys.filter(kept)
        shown = {name: text.filter(kept) for name, text in shown.items()}
    column_problems.append(duplicates)
    bad |= ~duplicates.open

    if contract.entity_key:
        entity = contract.entity_key
        entities = _canonical_of(_combined(table.column(entity)), contract.column(entity).type, shown.get(entity))
    else:
        entities = keys
    accepted = _accepted_table(contract, table, _event_times(table, contract, ingested_at), entities, keys, source)
    del table, entities, keys, shown

    bad_rows = np.flatnonzero(bad)
    rejected = frame.iloc[bad_rows].reset_index(drop=True).astype(object)
    messages = zip(*(p.messages_at(bad_rows) for p in column_problems), strict=True)
    rejected[REASON_COLUMN] = pd.Series(["; ".join(m for m in row if m is not None) for row in messages], dtype=object)
    rejected[SOURCE_COLUMN] = pd.Series([source] * len(bad_rows), dtype=object)
    rejected[ROW_NUMBER_COLUMN] = pd.Series(bad_rows + 1 + row_offset, dtype="int64")

    counts: Counter[str] = Counter()
    for problems in column_problems:
        counts.update(code for code in problems.codes_at(bad_rows) if code is not None)
    result = ValidationResult(accepted_rows=accepted, rejected=rejected, source=source, reason_counts=dict(counts))
    log.info(
        "validated %s against %s: %d accepted, %d rejected %s",
        source,
        contract.name,
        accepted.num_rows,
        len(bad_rows),
        dict(counts),
    )
    return result


def _combined(column: Any) -> Any:
    """A column as one Arrow array: its only chunk as it is (``combine_chunks`` copies even that)."""
    if not hasattr(column, "num_chunks"):
        return column
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


_SCHEMAS: dict[tuple[tuple[str, str], ...], Any] = {}


def accepted_schema(contract: DatasetContract) -> Any:
    """The Arrow schema of ``ValidationResult.accepted_rows``: what ``pa.Table.from_pandas`` makes of
    ``ValidationResult.accepted`` (its pandas metadata included, so ``to_pandas`` gives those dtypes back)."""
    import pyarrow as pa

    shape = tuple((spec.name, spec.type) for spec in contract.columns)
    if shape not in _SCHEMAS:
        empty = {name: pd.Series(dtype=PANDAS_DTYPES[kind]) for name, kind in shape}
        empty[EVENT_TIME_COLUMN] = pd.Series(dtype=_UTC_NS)
        for name in (ENTITY_COLUMN, ROW_KEY_COLUMN, SOURCE_COLUMN):
            empty[name] = pd.Series(dtype="string")
        _SCHEMAS[shape] = pa.Schema.from_pandas(pd.DataFrame(empty), preserve_index=False)
    return _SCHEMAS[shape]


def _accepted_table(
    contract: DatasetContract, table: Any, event_times: Any, entities: Any, keys: Any, source: str
) -> Any:
    import pyarrow as pa

    n = table.num_rows
    source_column = pa.array([source], pa.string()).take(pa.array(np.zeros(n, dtype=np.int32)))
    arrays = [*(table.column(name) for name in contract.column_names), event_times, entities, keys, source_column]
    return pa.Table.from_arrays(arrays, schema=accepted_schema(contract))


class SeenRowKeys:
    """Row keys of the accepted rows of the earlier batches of one file, with their data row numbers.

    What :func:`validate` needs from its ``seen_keys`` dict, for less per key: a set of the keys,
    and per batch the keys and their row numbers in order, turned into a key -> first row number
    dict only when a repeat asks for one (a file without repeats never builds it).
    """

    def __init__(self) -> None:
        self._keys: set[str] = set()
        self._batches: list[tuple[list[str], np.ndarray]] = []
        self._first: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def clear(self) -> None:
        self._keys.clear()
        self._batches.clear()
        self._first = None

    def record(self, keys: list[str], numbers: np.ndarray) -> int:
        """Add a batch's row keys (in row order) and data row numbers; how many keys were new."""
        before = len(self._keys)
        self._keys.update(keys)
        self._batches.append((keys, numbers))
        if self._first is not None:
            for key, number in zip(keys, numbers.tolist(), strict=True):
                self._first.setdefault(key, number)
        return len(self._keys) - before

    def get(self, key: str, default: int | None = None) -> int | None:
        """The data row number of the first recorded row with this key."""
        if key not in self._keys:
            return default
        return self._first_rows().get(key, default)

    def first_rows(self, keys: list[str]) -> np.ndarray:
        """The data row number of the first recorded row of each key (each must be recorded)."""
        first = self._first_rows()
        return np.fromiter((first[k] for k in keys), dtype=np.int64, count=len(keys))

    def _first_rows(self) -> dict[str, int]:
        if self._first is None:
            self._first = {}
            for keys, numbers in reversed(self._batches):  # the earliest row of a key is written last
                self._first.update(zip(reversed(keys), reversed(numbers.tolist()), strict=True))
        return self._first


def _find_repeats(
    arrow_keys: Any, numbers: np.ndarray, seen: dict[str, int] | SeenRowKeys | None
) -> tuple[np.ndarray, np.ndarray]:
    """Which rows repeat the key of an earlier row of the file, and the data row number of each
    key's first row (where a row repeats); records this batch's keys in ``seen``.

    ``arrow_keys``: the row keys (an Arrow string array); ``numbers``: the data row number of each
    key's row. Without repeats and without ``seen`` (the usual case) this is one count of distinct
    values by Arrow; otherwise one pass over the keys as Python strings: a set update
    (:class:`SeenRowKeys`), a dict update, or a set.
    """
    n = len(arrow_keys)
    no_repeat = np.zeros(n, dtype=bool)
    if seen is None and _all_distinct(arrow_keys):
        return no_repeat, numbers
    keys: list[str] = arrow_keys.to_pylist()
    if isinstance(seen, SeenRowKeys):
        if seen.record(keys, numbers) == n:
            return no_repeat, numbers
        first = seen.first_rows(keys)
        return first != numbers, first
    if seen is None:
        if len(set(keys)) == n:
            return no_repeat, numbers
        earliest = dict(zip(reversed(keys), reversed(numbers.tolist()), strict=True))
        first = np.fromiter((earliest[k] for k in keys), dtype=np.int64, count=n)
        return first != numbers, first
    earlier = no_repeat
    if seen and not seen.keys().isdisjoint(keys):  # a repeat of a row of an earlier batch
        earlier = np.fromiter((k in seen for k in keys), dtype=bool, count=n)
    fresh = [k for k, e in zip(keys, earlier.tolist(), strict=True) if not e] if earlier.any() else keys
    fresh_numbers = numbers[~earlier] if earlier.any() else numbers
    before = len(seen)
    seen.update(zip(fresh, fresh_numbers.tolist(), strict=True))
    if len(seen) - before == n:
        return no_repeat, numbers
    earliest = dict(zip(reversed(fresh), reversed(fresh_numbers.tolist()), strict=True))
    seen.update(earliest)  # a repeat within this batch was recorded over its first row
    first = np.fromiter((seen[k] for k in keys), dtype=np.int64, count=n)
    return first != numbers, first


def _all_distinct(keys: Any) -> bool:
    """Whether row keys (an Arrow string array) are all distinct: by a 64-bit mix of their first 16
    hex digits (64 bits of the digest), sorted (distinct there: distinct keys); by Arrow's hash
    count where some share it (a repeat, or a chance in about 2**64 / n**2)."""
    import pyarrow.compute as pc

    raw = _text_bytes(keys)
    n = len(keys)
    if raw is not None and n and len(raw[1]) == n * ROW_KEY_LENGTH:
        words = raw[1].reshape(n, ROW_KEY_LENGTH)[:, :16].copy().view(np.uint64)  # (n, 2)
        with np.errstate(over="ignore"):
            heads = np.sort((words[:, 0] * np.uint64(0x9E3779B97F4A7C15)) ^ words[:, 1])
        if not (heads[1:] == heads[:-1]).any():
            return True
    return bool(pc.count_distinct(keys).as_py() == n)


def _arrow_array(values: np.ndarray) -> Any:
    """Row positions (int64) or a row mask (bool) as an Arrow array, for ``take``/``filter``."""
    import pyarrow as pa

    return pa.array(values)


VALIDATE_SLICES = 4  # a batch of text is validated in this many slices of rows
_MIN_SLICE_ROWS = 16_384  # ... of at least this many rows (fewer calls of validate on small batches)


def _row_slices(n: int) -> list[slice]:
    """Row ranges a batch of ``n`` rows is validated in: :data:`VALIDATE_SLICES` of about equal size.

    The typed values, row keys and accepted rows that validating makes are held for one slice, not for
    the whole batch: with the batch's text, that is what bounds memory. A slice is validated as a batch
    of its own (``row_offset``, ``seen_keys``), so the answers are those of smaller batches.
    """
    count = max(1, min(VALIDATE_SLICES, n // _MIN_SLICE_ROWS))
    size = -(-n // count) if n else 0
    return [slice(start, min(n, start + size)) for start in range(0, n, size)] if n else [slice(0, 0)]


def validate_batches(
    data: Source,
    name: str,
    contract: DatasetContract,
    ingested_at: pd.Timestamp,
    *,
    max_decoded_bytes: int = MAX_DECODED_BYTES,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    seen_keys: dict[str, int] | None = None,
) -> Iterator[ValidationResult | Restart]:
    """:func:`read_source` then :func:`validate`, batch by batch, as a stream: memory does not grow with the file.

    Yields one :class:`ValidationResult` per slice of rows (:func:`_row_slices`) of each batch of about
    ``batch_bytes`` of text (see :func:`read_source`), in file order, with ``_row_number`` counting
    through the file. It may yield :data:`RESTART`: forget every result yielded so far, the file is read again from its
    start. When any batch shows a file-level problem (damage, a missing column, ...), the file is
    read and validated whole the reference way, so the reason (and which one wins when there are
    several) is exactly what whole-file validation gives: :class:`FileRejected` is raised, after
    :data:`RESTART` when results were yielded; nothing of a rejected file may be kept.

    ``seen_keys`` is passed to :func:`validate` (a repeat of a row key of an earlier batch is
    then rejected as ``duplicate_row``; give a dict that keeps every key for whole-file answers,
    as :func:`validate_file` does). It is cleared whenever the file is read again.

    Raises:
        FileRejected: as :func:`read_source` and :func:`validate`.
    """
    offset = 0
    yielded = False
    refused: FileRejected | None = None
    frames = read_source(data, name, max_decoded_bytes=max_decoded_bytes, batch_bytes=batch_bytes)
    try:
        for frame in frames:
            if frame is RESTART:
                if yielded:
                    yield RESTART
                offset, yielded = 0, False
                if seen_keys is not None:
                    seen_keys.clear()
                continue
            for rows in _row_slices(len(frame)):
                try:
                    part = validate(
                        frame.iloc[rows], contract, name, ingested_at, row_offset=offset, seen_keys=seen_keys
                    )
                except FileRejected as exc:
                    refused = exc  # a header the contract refuses: missing, unknown or clashing columns
                    break
                offset += rows.stop - rows.start
                yielded = True
                if rows.stop == len(frame):
                    del frame  # the batch's text is validated: not held while the caller stages the result
                yield part
                del part
            if refused is not None:
                del frame
                break
        if refused is None:
            return
        # Whole-file reading would report damage further on first: read on, keeping nothing. A
        # file that reads to its end gets exactly this answer, without being read whole.
        for _ in frames:
            pass
    except (NeedsWholeFile, FileRejected):
        refused = None
    if refused is not None:
        if yielded:
            yield RESTART
        raise refused
    verdict = _file_verdict(data, name, max_decoded_bytes)  # damage found without reading the file whole
    if yielded:
        yield RESTART
    if verdict is not None:
        raise verdict
    if seen_keys is not None:
        seen_keys.clear()
    frame = read_source(data, name, max_decoded_bytes=max_decoded_bytes)
    yield validate(frame, contract, name, ingested_at, seen_keys=seen_keys)


def validate_file(
    data: Source,
    name: str,
    contract: DatasetContract,
    ingested_at: pd.Timestamp,
    *,
    max_decoded_bytes: int = MAX_DECODED_BYTES,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
) -> ValidationResult:
    """:func:`validate_batches` gathered into one result: the same as whole-file validation.

    Repeats of a row of an earlier batch are found through the row keys seen so far (kept in
    memory: for files whose rows should not be, consume :func:`validate_batches` instead).

    Raises:
        FileRejected: as :func:`read_source` and :func:`validate`.
    """
    parts: list[ValidationResult] = []
    seen: dict[str, int] = {}
    for part in validate_batches(
        data, name, contract, ingested_at, max_decoded_bytes=max_decoded_bytes, batch_bytes=batch_bytes, seen_keys=seen
    ):
        if part is RESTART:
            parts.clear()
        else:
            parts.append(part)
    if len(parts) == 1:
        return parts[0]
    counts: Counter[str] = Counter()
    for part in parts:
        counts.update(part.reason_counts)
    import pyarrow as pa

    return ValidationResult(
        accepted_rows=pa.concat_tables([p.accepted_rows for p in parts]),
        rejected=pd.concat([p.rejected for p in parts], ignore_index=True),
        source=name,
        reason_counts=dict(counts),
    )


def _as_text(df: pd.DataFrame) -> pd.DataFrame:
    """Every value as text (see :func:`_cell_text`), columns by position; null becomes ``""``."""
    columns: dict[int, pd.Series] = {}
    for position in range(df.shape[1]):
        column = df.iloc[:, position]
        if _arrow_text(column) is not None:
            columns[position] = column.reset_index(drop=True)  # Arrow text, as read_source returns it for CSV
        elif column.dtype == object and pd.api.types.infer_dtype(column, skipna=False) == "string":
            columns[position] = column.reset_index(drop=True)  # already text, as read_source returns it
        else:
            columns[position] = pd.Series([_cell_text(v) for v in column], dtype=object)
    frame = pd.DataFrame(columns, index=range(len(df)), columns=range(df.shape[1]))
    return frame


def _is_null(value: Any) -> bool:
    """True for scalar nulls (None, NaN, NA, NaT); False for everything else, lists included."""
    result = pd.isna(value)
    return bool(result) if isinstance(result, (bool, np.bool_)) else False


def _event_times(table: Any, contract: DatasetContract, ingested_at: pd.Timestamp) -> Any:
    """``_event_time`` of the accepted rows: their event time, or the ingestion time (UTC) for all."""
    import pyarrow as pa

    if contract.event_time:
        return table.column(contract.event_time)
    stamp = pd.Timestamp(ingested_at)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    ticks = np.full(table.num_rows, stamp.as_unit("ns").value, dtype=np.int64)
    return pa.array(ticks, pa.int64()).cast(pa.timestamp("ns", tz="UTC"))
