"""Adversarial corpus: files generated from any contract, then damaged, through the real ingest stage.

Hypothesis builds a contract (any column types, bounds, allowed values, keys or none, either
unknown-column policy), writes CSV, gzip-compressed CSV and Parquet files from it, and damages
them: bad values (huge ints, NaN/inf, wrong types, nulls, values not allowed, nested Parquet
values, binary that is not UTF-8), broken structure (missing, extra, renamed, duplicate, blank,
padded columns; empty and header-only files; BOMs, CRLF, quotes and newlines inside values) and
broken bytes (cut at any byte, flipped, inserted, invalid UTF-8), under random names (bytes that
are not UTF-8, names that look alike once sanitised). A link to a canary file outside the drop
zone sits among them, and some batches carry a path outside the drop zone.

Invariants, checked on a real folder and the real LocalObjectStore:

* no exception escapes, except :class:`UntrustedPath` for paths outside the drop zone, which
  leaves the drop zone and the store untouched;
* every file ends once in the report: quarantined whole with a reason, or its rows in = rows
  accepted + rows quarantined (rows in counted by the generator, or by a reference parser for
  damaged bytes); rows the generator made invalid are among the quarantined ones;
* byte-identical files are counted once; no row key is stored twice;
* re-running the same run on the same files changes nothing in the store;
* nothing outside the drop zone is read (the canary's content never reaches the store);
* every quarantined source has its own record (keys never collide).

Size: ``MLOPS_ADVERSARIAL_EXAMPLES`` (default 100) examples per run; raise it for a bigger run.
``MLOPS_ADVERSARIAL_STATS=<file>`` writes the totals (files, rows in/accepted/quarantined) as JSON.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import gzip
import io
import json
import os
import tempfile
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_core.backends import backends_for
from mlops_core.contract import COLUMN_TYPES, ColumnSpec, DatasetContract
from mlops_core.datasets import DatasetStore
from mlops_core.delivered_files import UntrustedPath, escape_name
from mlops_core.settings import load_settings, with_overrides
from mlops_core.stages.ingest import ingest_files
from mlops_core.storage import LocalObjectStore
from tests.conftest import isolate_mlops_env
from tests.stages.churn_files import comparable_files

EXAMPLES = int(os.environ.get("MLOPS_ADVERSARIAL_EXAMPLES", "100"))
AT = "2026-03-01T00:00:00+00:00"
CANARY_TOKEN = "CANARY-41f0c8e2a9d7"
EXTRA, RENAMED = "zz extra", "zz renamed"

# --------------------------------------------------------------------------- contracts
_name_chars = st.sampled_from(list("abcdefghijklmnopqrstuvwxyz0123456789_- éü€名"))
column_names = (
    st.text(_name_chars, min_size=1, max_size=10)
    .map(lambda s: unicodedata.normalize("NFC", s).strip())
    .filter(lambda s: s and not s.startswith(("_", "zz")))
)
short_texts = st.text(min_size=1, max_size=6).filter(lambda s: "zz" not in s)


@st.composite
def contracts(draw: st.DrawFn) -> DatasetContract:
    names = draw(st.lists(column_names, min_size=2, max_size=6, unique=True))
    columns: list[dict[str, Any]] = []
    for name in names:
        ctype = draw(st.sampled_from(COLUMN_TYPES))
        column: dict[str, Any] = {"name": name, "type": ctype, "nullable": draw(st.booleans())}
        if ctype in ("int", "category", "string") and draw(st.integers(0, 3)) == 0:
            values = st.integers(-50, 50) if ctype == "int" else short_texts
            column["allowed"] = draw(st.lists(values, min_size=1, max_size=4, unique=True))
        elif ctype in ("int", "float") and draw(st.booleans()):
            low, high = sorted(draw(st.lists(st.integers(-1000, 1000), min_size=2, max_size=2)))
            column.update({k: v for k, v in (("min", low), ("max", high)) if draw(st.booleans())})
        columns.append(column)
    task = draw(st.sampled_from(["classification", "regression"]))
    target = columns[-1]
    target.update(nullable=False)
    if task == "regression":
        target.update(type=draw(st.sampled_from(["int", "float"])))
        target.pop("allowed", None)
    else:
        target.update(type="int", allowed=[0, 1])
        target.pop("min", None)
        target.pop("max", None)
    raw: dict[str, Any] = {"name": "adv", "task": task, "target": target["name"], "columns": columns}
    raw["unknown_columns"] = draw(st.sampled_from(["reject", "drop"]))
    if draw(st.booleans()) and len(columns) >= 3:
        key = columns[0]
        key.update(type=draw(st.sampled_from(["string", "int"])), nullable=False)
        key.pop("min", None)
        key.pop("max", None)
        key.pop("allowed", None)
        raw["entity_key"] = key["name"]
        if len(columns) >= 4 and draw(st.booleans()):
            columns[1].update(type="timestamp")
            for k in ("min", "max", "allowed"):
                columns[1].pop(k, None)
            raw["event_time"] = columns[1]["name"]
    return DatasetContract.from_dict(raw)


# --------------------------------------------------------------------------- values
def valid_text(draw: st.DrawFn, spec: ColumnSpec, is_key: bool) -> str:
    if spec.nullable and not is_key and draw(st.integers(0, 5)) == 0:
        return ""
    if spec.allowed is not None:
        return str(draw(st.sampled_from(list(spec.allowed))))
    if spec.type == "int":
        low = int(spec.min) if spec.min is not None else -(10**12)
        high = int(spec.max) if spec.max is not None else 10**12
        return str(draw(st.integers(low, high)))
    if spec.type == "float":
        low = spec.min if spec.min is not None else -1e9
        high = spec.max if spec.max is not None else 1e9
        return repr(draw(st.floats(low, high, allow_nan=False, allow_infinity=False)))
    if spec.type == "bool":
        return draw(st.sampled_from(["true", "false", "1", "0", "yes", "NO", "True"]))
    if spec.type == "timestamp":
        moment = draw(st.datetimes(datetime.datetime(1971, 1, 1), datetime.datetime(2200, 1, 1)))
        return moment.isoformat() + draw(st.sampled_from(["", "Z", "+00:00", "+05:30"]))
    return draw(st.text(min_size=1, max_size=10))  # string/category: quotes, commas, newlines, any script


def bad_text(draw: st.DrawFn, spec: ColumnSpec, is_key: bool) -> str | None:
    """A value the contract must reject in this column, or None when the column accepts anything."""
    options: list[str] = []
    if spec.type == "int":
        options += ["9" * 5000, "-" + "9" * 4400, "1.5", "x1", "NaN", "99999999999999999999"]
    elif spec.type == "float":
        options += ["nan", "inf", "-inf", "abc", "1e999"]
    elif spec.type == "bool":
        options += ["maybe", "2"]
    elif spec.type == "timestamp":
        options += ["yesterday", "3000-01-01", "2024-13-45"]
    if spec.allowed is not None and spec.type in ("string", "category"):
        options.append("zz not allowed")
    if spec.type in ("int", "float") and spec.allowed is None:
        if spec.min is not None:
            options.append(str(int(spec.min) - 1))
        if spec.max is not None:
            options.append(str(int(spec.max) + 1))
    if not spec.nullable or is_key:
        options.append("")
    return draw(st.sampled_from(options)) if options else None


# --------------------------------------------------------------------------- files
# Weighted by repetition: most files are well formed, so that most batches commit rows.
STRUCTURE = ["clean"] * 6 + ["missing", "extra", "renamed", "duplicate", "blank", "padded", "empty", "header_only"]
BYTE_DAMAGE = ["none"] * 6 + ["truncate", "flip", "insert", "bad_utf8"]
PARQUET_ONLY = ["none", "nested", "binary"]
LOOK_ALIKE = [b"a b", b"a_b", b"a?b", b"a%3Fb", b"a\xffb", b"a%FFb", b"duplicate-rows", b"A B"]
SUFFIXES = {"csv": [b".csv", b".CSV"], "csv.gz": [b".csv.gz", b".CSV.GZ"], "parquet": [b".parquet", b".Parquet"]}


@dataclass
class Delivery:
    name: bytes
    data: bytes
    fmt: str
    rows_in: int | None  # from the generator; None when the bytes were damaged
    bad_rows: set[int] = field(default_factory=set)
    expect_reject: str | None = None  # reason code the structure forces
    structure: str = "clean"
    damage: str = "none"


def _expected_reject(structure: str, contract: DatasetContract) -> str | None:
    reject_unknown = contract.unknown_columns == "reject"
    return {
        "missing": "missing_columns",
        "renamed": "missing_columns",
        "duplicate": "bad_header",
        "empty": "empty",
        "header_only": "empty",
        "extra": "unknown_columns" if reject_unknown else None,
        "blank": "unknown_columns" if reject_unknown else None,
    }.get(structure)


@st.composite
def deliveries(draw: st.DrawFn, contract: DatasetContract) -> Delivery:
    fmt = draw(st.sampled_from(["csv", "csv.gz", "parquet"]))
    structure = draw(st.sampled_from(STRUCTURE))
    n_rows = 0 if structure in ("empty", "header_only") else draw(st.integers(1, 12))
    keys = set(contract.key_columns)
    header = list(contract.column_names)
    rows: list[list[str]] = []
    bad_rows: set[int] = set()
    bad_columns: set[int] = set()
    for number in range(1, n_rows + 1):
        row = [valid_text(draw, spec, spec.name in keys) for spec in contract.columns]
        if draw(st.integers(0, 4)) == 0:
            position = draw(st.integers(0, len(header) - 1))
            spec = contract.columns[position]
            value = bad_text(draw, spec, spec.name in keys)
            if value is not None:
                row[position] = value
                bad_rows.add(number)
                bad_columns.add(position)
        rows.append(row)

    # Parquet-only damage: a nested column or binary values that are not UTF-8 (per row).
    special = draw(st.sampled_from(PARQUET_ONLY)) if fmt == "parquet" and n_rows and draw(st.booleans()) else "none"
    special_column = draw(st.integers(0, len(header) - 1))
    if special == "nested":
        bad_rows |= set(range(1, n_rows + 1))
    binary_bad: set[int] = set()
    if special == "binary":
        binary_bad = {n for n in range(1, n_rows + 1) if draw(st.booleans())}
        bad_rows |= binary_bad

    # Structure damage.
    columns = list(range(len(header)))
    names = list(header)
    if structure == "missing":
        drop = draw(st.integers(0, len(header) - 1))
        columns.remove(drop)
        names.pop(drop)
    elif structure == "renamed":
        names[draw(st.integers(0, len(header) - 1))] = RENAMED
    elif structure == "duplicate":
        copy = draw(st.integers(0, len(header) - 1))
        columns.append(copy)
        names.append(header[copy])
    elif structure == "padded":
        pads = st.sampled_from(["  ", "\t", "", " ", "\ufeff"])
        names = [draw(pads) + n + draw(pads) for n in names]
    out_rows = [[row[c] for c in columns] for row in rows]
    if structure == "extra":
        names.append(EXTRA)
        out_rows = [[*r, draw(st.text(max_size=5))] for r in out_rows]
    elif structure == "blank":
        names.insert(0, draw(st.sampled_from(["", " ", "  "])))
        out_rows = [[str(i), *r] for i, r in enumerate(out_rows)]
    offset = 1 if structure == "blank" else 0

    if fmt == "parquet":
        data = _parquet_bytes(
            draw,
            contract,
            names,
            out_rows,
            columns,
            offset,
            special,
            special_column,
            binary_bad,
            bad_columns,
            structure,
        )
    else:
        data = _csv_bytes(draw, names, out_rows, structure)
        if fmt == "csv.gz":
            data = gzip.compress(data, mtime=0)

    damage = "none" if structure == "empty" else draw(st.sampled_from(BYTE_DAMAGE))
    if damage != "none" and data:
        at = draw(st.integers(0, len(data)))
        if damage == "truncate":
            data = data[:at]
        elif damage == "flip" and at < len(data):
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
        elif damage == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
        elif damage == "bad_utf8":
            data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe2\x82"])) + data[at:]
    stem = draw(st.sampled_from(LOOK_ALIKE) | st.binary(min_size=1, max_size=10))
    stem = stem.replace(b"/", b"_").replace(b"\x00", b"_").lstrip(b".") or b"x"
    name = stem + draw(st.sampled_from(SUFFIXES[fmt]))
    return Delivery(
        name=name,
        data=data,
        fmt=fmt,
        rows_in=None if damage != "none" else n_rows,
        bad_rows=bad_rows if structure not in ("missing", "renamed") else set(),
        expect_reject=_expected_reject(structure, contract),
        structure=structure,
        damage=damage,
    )


def _csv_bytes(draw: st.DrawFn, names: list[str], rows: list[list[str]], structure: str) -> bytes:
    if structure == "empty":
        return draw(st.sampled_from([b"", b"\n", b"  \r\n", b"\xef\xbb\xbf"]))
    line_end = draw(st.sampled_from(["\n", "\r\n"]))
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    if line_end == "\n" and any("\r" in v for r in rows for v in r):
        quoting = csv.QUOTE_ALL  # Python's writer leaves a lone \r unquoted with \n line ends
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=line_end, quoting=quoting)
    writer.writerow(names)
    writer.writerows(rows)
    text = buffer.getvalue()
    if rows and draw(st.booleans()) and rows[-1][-1] != "":
        text = text[: -len(line_end)]  # no line end after the last row
    bom = "\ufeff" if draw(st.booleans()) else ""
    return (bom + text).encode("utf-8")


def _parquet_bytes(
    draw: st.DrawFn,
    contract: DatasetContract,
    names: list[str],
    rows: list[list[str]],
    columns: list[int],
    offset: int,
    special: str,
    special_column: int,
    binary_bad: set[int],
    bad_columns: set[int],
    structure: str,
) -> bytes:
    if structure == "empty":
        return b""
    arrays = []
    for position in range(len(names)):
        texts = [r[position] for r in rows]
        source = columns[position - offset] if offset <= position < offset + len(columns) else None
        spec = contract.columns[source] if source is not None else None
        if spec is not None and source == special_column and special == "nested":
            arrays.append(pa.array([[t, t] for t in texts], pa.list_(pa.string())))
        elif spec is not None and source == special_column and special == "binary":
            values = [b"\xff\xfe" + t.encode() if n in binary_bad else t.encode() for n, t in enumerate(texts, 1)]
            arrays.append(pa.array([None if v == b"" else v for v in values], pa.binary()))
        elif spec is not None and source not in bad_columns and draw(st.booleans()):
            arrays.append(_typed_array(spec, texts))
        else:
            arrays.append(pa.array([t or None for t in texts], pa.string()))
    table = pa.Table.from_arrays(arrays, names=names) if arrays else pa.table({})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression=draw(st.sampled_from(["snappy", "gzip", "none"])))
    return buffer.getvalue()


def _typed_array(spec: ColumnSpec, texts: list[str]) -> pa.Array:
    """Valid values in the column's own Arrow type (nulls as nulls)."""

    def convert(t: str) -> Any:
        if t == "":
            return None
        if spec.type == "int":
            return int(t)
        if spec.type == "float":
            return float(t)
        if spec.type == "bool":
            return t.lower() in ("true", "1", "yes")
        if spec.type == "timestamp":
            stamp = pd.Timestamp(t)
            return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")).to_pydatetime()
        return t

    arrow_type = {
        "int": pa.int64(),
        "float": pa.float64(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }.get(spec.type, pa.string())
    return pa.array([convert(t) for t in texts], arrow_type)


@st.composite
def batches(draw: st.DrawFn) -> tuple[DatasetContract, list[Delivery], bool, bool]:
    contract = draw(contracts())
    files = draw(st.lists(deliveries(contract), min_size=1, max_size=5))
    if draw(st.integers(0, 3)) == 0:  # a byte-identical copy under another name
        original = draw(st.sampled_from(files))
        files.append(dataclasses.replace(original, name=b"copy-of-" + original.name))
    unique: dict[bytes, Delivery] = {}
    for f in files:
        unique.setdefault(f.name, f)
    return contract, list(unique.values()), draw(st.booleans()), draw(st.integers(0, 3)) == 0


# --------------------------------------------------------------------------- independent counts
def reference_rows(delivery: Delivery) -> int | None:
    """Data rows a tolerant reader sees in damaged bytes; None when it cannot read them at all."""
    data = delivery.data
    try:
        if delivery.fmt == "parquet":
            return pq.read_table(pa.BufferReader(data)).num_rows
        if delivery.fmt == "csv.gz":
            data = gzip.decompress(data)
        records = [r for r in csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""), strict=True) if r]
    except Exception:
        return None
    return max(len(records) - 1, 0)


# --------------------------------------------------------------------------- the property
@pytest.fixture(scope="module")
def base_settings(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    isolate_mlops_env(patch, tmp_path_factory.mktemp("adversarial") / "mlops")
    yield load_settings("dev")
    patch.undo()


@pytest.fixture(scope="module")
def corpus_stats():
    stats: Counter[str] = Counter()
    yield stats
    target = os.environ.get("MLOPS_ADVERSARIAL_STATS")
    if target:
        Path(target).write_text(json.dumps(dict(sorted(stats.items())), indent=2))


def _store_text(root: Path) -> str:
    """Everything in the store as text: raw bytes and the values inside Parquet objects."""
    parts = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            parts.append(data.decode("latin-1"))
            if path.suffix == ".parquet":
                parts.append(json.dumps(pq.read_table(path, partitioning=None).to_pylist(), default=str))
    return "\n".join(parts)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(batch=batches())
def test_hostile_batches_keep_every_invariant(base_settings, corpus_stats, batch):
    contract, files, with_canary, with_outside_path = batch
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        contract_path = root / "contract.yaml"
        contract_path.write_text(yaml.safe_dump(contract.to_dict(), allow_unicode=True))
        drop = root / "drop"
        drop.mkdir()
        run_settings = with_overrides(
            base_settings, dataset={"contract": contract_path, "drop_zone": drop}, storage={"root": str(root / "store")}
        )
        canary = root / "outside.csv"
        canary.write_text(f"{contract.column_names[0]}\n{CANARY_TOKEN}\n")

        def deliver() -> list[str]:
            paths = []
            for f in files:
                path = drop / os.fsdecode(f.name)
                path.write_bytes(f.data)
                paths.append(str(path))
            if with_canary:
                link = drop / "linked.csv"
                if not os.path.lexists(link):
                    link.symlink_to(canary)
                paths.append(str(link))
            return paths

        paths = deliver()
        if with_outside_path:
            before = sorted(os.listdir(drop))
            with pytest.raises(UntrustedPath):
                ingest_files(
                    run_settings, [*paths, str(canary)], backends_for(run_settings), run_id="r1", ingested_at=AT
                )
            assert sorted(os.listdir(drop)) == before and not (root / "store").exists()
            corpus_stats["outside_paths_refused"] += 1

        report = ingest_files(run_settings, paths, backends_for(run_settings), run_id="r1", ingested_at=AT)
        json.dumps(report, ensure_ascii=False, allow_nan=False).encode("utf-8")  # JSON-safe
        ds = DatasetStore(LocalObjectStore(root / "store"), contract.name)
        _check_batch(ds, contract, files, report, with_canary, corpus_stats)
        assert not os.listdir(drop), "every entry moves on"
        first = {str(p.relative_to(root)): p.read_bytes() for p in (root / "store").rglob("*") if p.is_file()}

        deliver()  # the same files again, as after a crash before the archive: a re-run changes nothing
        again = ingest_files(run_settings, paths, backends_for(run_settings), run_id="r1", ingested_at=AT)
        after = {str(p.relative_to(root)): p.read_bytes() for p in (root / "store").rglob("*") if p.is_file()}
        assert after == first, "a re-run of the same run changed the store"

        # Same report, but for where and how much the first attempt archived (a re-run moves nothing).
        assert comparable_files(again["files"]) == comparable_files(report["files"])

        assert CANARY_TOKEN not in _store_text(root / "store"), "content from outside the drop zone was read"
        assert canary.read_text().endswith(f"{CANARY_TOKEN}\n")


def _check_batch(
    ds: DatasetStore,
    contract: DatasetContract,
    files: list[Delivery],
    report: dict[str, Any],
    with_canary: bool,
    stats: Counter[str],
) -> None:
    entries = [f["file"] for f in report["files"]]
    assert len(entries) == len(set(entries)), "a file was counted twice"
    by_file = {f["file"]: f for f in report["files"]}
    expected_names = {escape_name(os.fsdecode(f.name)) for f in files} | ({"linked.csv"} if with_canary else set())
    assert set(by_file) == expected_names

    versions = [m["version_id"] for m in ds.list_versions()]
    stored = ds.read_versions(versions) if versions else pd.DataFrame({"_source": [], "_row_key": []})
    assert stored["_row_key"].is_unique, "a row was stored twice"
    stored_by_source = stored["_source"].value_counts().to_dict()
    records = ds.list_quarantine("r1")
    quarantined_rows: Counter[str] = Counter()
    rejected_numbers: dict[str, set[int]] = {}
    for record in records:
        if record["rejected_key"]:
            rows = ds.read_quarantined_rows(record)
            quarantined_rows.update(rows["_source"].astype(str))
            if record["kind"] == "file":
                rejected_numbers[record["source"]] = set(rows["_row_number"].astype(int))
    file_records = Counter(r["source"] for r in records if r["kind"] == "file")

    if with_canary:
        assert by_file["linked.csv"]["reason_code"] == "not_regular_file"
    by_content: dict[bytes, list[str]] = {}
    for f in files:
        shown = escape_name(os.fsdecode(f.name))
        entry = by_file[shown]
        by_content.setdefault(f.data, []).append(entry["status"])
        stats["files"] += 1
        stats[f"status:{entry['status']}"] += 1
        if entry["status"] == "duplicate_file":
            assert stored_by_source.get(shown, 0) == 0 and quarantined_rows.get(shown, 0) == 0
            assert file_records[shown] == 1
            continue
        if entry["status"] == "rejected":
            assert entry["reason"] and entry["reason_code"], entry
            assert entry["reason_code"] != "unreadable", entry  # an exception: every damage has its own reason
            assert file_records[shown] == 1
            assert stored_by_source.get(shown, 0) == 0
            stats[f"rejected:{entry['reason_code']}"] += 1
            if f.damage == "none":
                assert f.expect_reject in (None, entry["reason_code"]), (f.structure, entry)
            continue
        assert entry["status"] == "accepted", entry
        assert f.damage != "none" or f.expect_reject is None, (f.structure, entry)
        rows_in = f.rows_in if f.rows_in is not None else reference_rows(f)
        assert rows_in is not None, f"{shown}: accepted, but a reference reader cannot read it ({f.damage})"
        accepted_here = stored_by_source.get(shown, 0)
        quarantined_here = quarantined_rows.get(shown, 0)
        assert rows_in == accepted_here + quarantined_here == entry["rows_in"], (shown, f.structure, f.damage)
        assert file_records[shown] == (1 if entry["rows_rejected"] else 0)
        if f.damage == "none":
            assert f.bad_rows <= rejected_numbers.get(shown, set()), (shown, f.bad_rows, entry)
        stats["rows_in"] += rows_in
        stats["rows_accepted"] += accepted_here
        stats["rows_quarantined"] += quarantined_here
    for statuses in by_content.values():  # byte-identical files: one counted, the others duplicates
        assert sum(s != "duplicate_file" for s in statuses) == 1, statuses
    stats["batches"] += 1
    stats["canary_links"] += int(with_canary)
