"""read_source + validate: every bad-file case, typed output, row keys."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import CHURN_HEADER, INGESTED_AT, churn_row, to_csv
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_core import validation
from mlops_core.contract import ENTITY_COLUMN, EVENT_TIME_COLUMN, ROW_KEY_COLUMN, SOURCE_COLUMN, DatasetContract
from mlops_core.validation import (
    REASON_COLUMN,
    RESTART,
    ROW_NUMBER_COLUMN,
    FileRejected,
    InvalidValue,
    ValidationResult,
    read_source,
    row_keys,
    validate,
)


def run(contract: DatasetContract, rows: list[dict[str, str]], name: str = "batch.csv") -> ValidationResult:
    return validate(read_source(to_csv(rows), name), contract, name, INGESTED_AT)


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def reason_of(result: ValidationResult, row_number: int) -> str:
    rejected = result.rejected
    return rejected.loc[rejected[ROW_NUMBER_COLUMN] == row_number, REASON_COLUMN].item()


# --------------------------------------------------------------------------- read_source
class TestReadSource:
    def test_csv_is_read_as_text_with_empty_string_for_null(self):
        frame = read_source(b"a,b,c\n1,,NA\n2,x,null\n", "f.csv")
        assert list(frame.columns) == ["a", "b", "c"]
        assert frame.to_dict("records") == [{"a": "1", "b": "", "c": "NA"}, {"a": "2", "b": "x", "c": "null"}]
        assert all(isinstance(v, str) for v in frame.to_numpy().ravel())

    def test_utf8_bom_blank_lines_and_quoted_newlines(self):
        data = '\ufeffname,note\n\n"Zoë","two\nlines"\nb,"with, comma"\n'.encode("utf-8")
        frame = read_source(data, "f.CSV")
        assert list(frame.columns) == ["name", "note"]
        assert frame["note"].tolist() == ["two\nlines", "with, comma"]
        assert frame["name"].tolist() == ["Zoë", "b"]

    def test_last_line_without_newline_is_fine_when_complete(self):
        assert read_source(b"a,b\n1,2\n3,4", "f.csv")["b"].tolist() == ["2", "4"]

    @pytest.mark.parametrize("data", [b"", b"   \n\n", b"\xef\xbb\xbf"])
    def test_empty_file(self, data):
        with pytest.raises(FileRejected) as exc:
            read_source(data, "empty.csv")
        assert exc.value.reason == "empty"
        assert "empty.csv" in str(exc.value)

    def test_header_only(self):
        with pytest.raises(FileRejected) as exc:
            read_source(b"a,b,c\n", "h.csv")
        assert exc.value.reason == "empty"
        assert "no data rows" in str(exc.value)

    def test_not_utf8(self):
        with pytest.raises(FileRejected) as exc:
            read_source("name\nJosé\n".encode("latin-1"), "latin.csv")
        assert exc.value.reason == "not_utf8"
        assert "UTF-8" in str(exc.value) and isinstance(exc.value, ValueError)

    def test_last_line_cut_off(self):
        with pytest.raises(FileRejected) as exc:
            read_source(b"a,b,c\n1,2,3\n4,5", "cut.csv")
        assert exc.value.reason == "truncated"
        assert "2 of 3 fields" in str(exc.value)

    def test_cut_inside_quoted_value(self):
        with pytest.raises(FileRejected) as exc:
            read_source(b'a,b\n1,"unfinished', "cut.csv")
        assert exc.value.reason == "truncated"

    @pytest.mark.parametrize("data", [b"a,b,c\n1,2\n3,4,5\n", b"a,b\n1,2,3\n3,4\n"])
    def test_ragged_rows(self, data):
        with pytest.raises(FileRejected) as exc:
            read_source(data, "ragged.csv")
        assert exc.value.reason == "truncated"
        assert "data row 1" in str(exc.value)

    def test_duplicate_header(self):
        with pytest.raises(FileRejected) as exc:
            read_source(b"a,b,a\n1,2,3\n", "dup.csv")
        assert exc.value.reason == "bad_header"
        assert "['a']" in str(exc.value)

    @pytest.mark.parametrize("name", ["data.json", "data.gz", "data.parquet.gz", "noext"])
    def test_unsupported_format(self, name):
        with pytest.raises(FileRejected) as exc:
            read_source(b"a,b\n1,2\n", name)
        assert exc.value.reason == "unsupported_format"

    def test_bad_parquet(self):
        with pytest.raises(FileRejected) as exc:
            read_source(b"PAR1 this is not parquet at all", "bad.parquet")
        assert exc.value.reason == "unparseable"

    def test_parquet_cut_off_is_unparseable(self):
        data = parquet_bytes(pa.table({"a": [1, 2, 3]}))
        with pytest.raises(FileRejected) as exc:
            read_source(data[: len(data) // 2], "half.parquet")
        assert exc.value.reason == "unparseable"

    def test_parquet_without_rows(self):
        with pytest.raises(FileRejected) as exc:
            read_source(parquet_bytes(pa.table({"a": pa.array([], pa.int64())})), "none.parquet")
        assert exc.value.reason == "empty"

    def test_parquet_any_dtype_becomes_text(self):
        table = pa.table(
            {
                "i": pa.array([1, None], pa.int64()),
                "f": pa.array([1.5, float("nan")]),
                "b": pa.array([True, None]),
                "t": pa.array([pd.Timestamp("2024-01-01", tz="UTC"), None]),
                "d": pa.array(["x", "y"]).dictionary_encode(),
                "l": pa.array([[1, 2], None]),
                "bin": pa.array([b"\xff\xfe", b"ok"], pa.binary()),
            }
        )
        frame = read_source(parquet_bytes(table), "typed.parquet")
        assert frame["i"].tolist() == ["1", ""]
        assert frame["f"].tolist() == ["1.5", ""]  # NaN is null, as in pandas
        assert frame["b"].tolist() == ["true", ""]
        assert frame["t"].iloc[0].startswith("2024-01-01 00:00:00") and frame["t"].iloc[1] == ""
        assert frame["d"].tolist() == ["x", "y"]
        assert frame["l"].tolist() == [InvalidValue("wrong_type", "list [1, 2]"), ""]  # no text form
        assert frame["bin"].tolist() == [InvalidValue("not_utf8", "binary b'\\xff\\xfe'"), "ok"]


# --------------------------------------------------------------------------- file-level checks
class TestFileLevel:
    def test_missing_columns_are_listed(self, churn):
        rows = [{k: v for k, v in churn_row().items() if k not in ("plan", "churned")}]
        with pytest.raises(FileRejected) as exc:
            run(churn, rows)
        assert exc.value.reason == "missing_columns"
        assert "['plan', 'churned']" in str(exc.value)

    def test_unknown_columns_rejected_by_default(self, churn):
        assert churn.unknown_columns == "reject"
        with pytest.raises(FileRejected) as exc:
            run(churn, [churn_row(extra="1")])
        assert exc.value.reason == "unknown_columns"
        assert "['extra']" in str(exc.value) and "unknown_columns: drop" in str(exc.value)

    def test_unknown_columns_dropped_with_drop_policy(self, keyless):
        result = run(keyless, [{"x": "1.5", "flag": "", "y": "3", "extra": "zzz", "_row_key": "forged"}])
        assert len(result.accepted) == 1
        assert "extra" not in result.accepted.columns
        assert result.accepted[ROW_KEY_COLUMN].iloc[0] != "forged"

    def test_header_names_are_stripped(self, keyless):
        frame = read_source(b" x , flag ,y\n1.0,,2\n", "spaces.csv")
        assert validate(frame, keyless, "spaces.csv", INGESTED_AT).accepted["y"].tolist() == [2]


# --------------------------------------------------------------------------- row-level checks
class TestRowLevel:
    def test_typed_output_dtypes_and_reserved_columns(self, churn):
        result = run(churn, [churn_row("c1"), churn_row("c2", last_payment_delay_days="3.5", autopay="No")])
        accepted = result.accepted
        assert result.rejected.empty
        expected = {
            "customer_id": "string",
            "event_time": "datetime64[ns, UTC]",
            "tenure_months": "Int64",
            "monthly_charges": "float64",
            "plan": "string",
            "autopay": "boolean",
            "churned": "Int64",
            EVENT_TIME_COLUMN: "datetime64[ns, UTC]",
            ENTITY_COLUMN: "string",
            ROW_KEY_COLUMN: "string",
            SOURCE_COLUMN: "string",
        }
        assert {c: str(accepted[c].dtype) for c in expected} == expected
        assert list(accepted.columns) == [
            *CHURN_HEADER,
            EVENT_TIME_COLUMN,
            ENTITY_COLUMN,
            ROW_KEY_COLUMN,
            SOURCE_COLUMN,
        ]
        assert accepted["autopay"].tolist() == [True, False]
        assert (
            pd.isna(accepted["last_payment_delay_days"].iloc[0]) and accepted["last_payment_delay_days"].iloc[1] == 3.5
        )
        assert (accepted[EVENT_TIME_COLUMN] == accepted["event_time"]).all()
        assert accepted[ENTITY_COLUMN].tolist() == ["c1", "c2"]
        assert accepted[SOURCE_COLUMN].tolist() == ["batch.csv", "batch.csv"]
        assert accepted[ROW_KEY_COLUMN].str.fullmatch(r"[0-9a-f]{32}").all()

    def test_out_of_range(self, churn):
        result = run(
            churn,
            [
                churn_row("a", tenure_months="300"),
                churn_row("b", monthly_charges="-0.5"),
                churn_row("c", tenure_months="240"),
            ],
        )
        assert result.accepted["customer_id"].tolist() == ["c"]  # the bound itself is allowed
        assert reason_of(result, 1) == "tenure_months: 300 above max 240"
        assert reason_of(result, 2) == "monthly_charges: -0.5 below min 0"
        assert result.reason_counts == {"tenure_months:above_max": 1, "monthly_charges:below_min": 1}

    def test_not_allowed(self, churn):
        result = run(
            churn,
            [churn_row("a", plan="gold"), churn_row("b", churned="2"), churn_row("c", churned="01", plan="premium")],
        )
        assert reason_of(result, 1) == "plan: 'gold' not in allowed ['basic', 'standard', 'premium']"
        assert reason_of(result, 2).startswith("churned: '2' not in allowed [0, 1]")
        assert result.accepted["churned"].tolist() == [1]  # int allowed values compare as ints

    def test_null_in_non_nullable(self, churn):
        result = run(
            churn,
            [churn_row("a", plan=""), churn_row("b", last_payment_delay_days=""), churn_row("", tenure_months="")],
        )
        assert reason_of(result, 1) == "plan: null in non-nullable column"
        assert 2 not in result.rejected[ROW_NUMBER_COLUMN].tolist()
        assert reason_of(result, 3) == (
            "customer_id: null in key column (entity key and event time are required); "
            "tenure_months: null in non-nullable column"
        )

    @pytest.mark.parametrize(
        ("column", "value", "message"),
        [
            ("tenure_months", "twelve", "is not a 64-bit integer"),
            ("tenure_months", "1.5", "is not a 64-bit integer"),
            ("tenure_months", "99999999999999999999", "is not a 64-bit integer"),
            ("monthly_charges", "12,5", "is not a finite number"),
            ("monthly_charges", "inf", "is not a finite number"),
            ("monthly_charges", "nan", "is not a finite number"),
            ("autopay", "maybe", "is not a boolean (use true/false, 1/0 or yes/no)"),
            ("event_time", "yesterday", "is not an ISO-8601 timestamp between 1677 and 2262"),
            ("event_time", "3000-01-01", "is not an ISO-8601 timestamp between 1677 and 2262"),
        ],
    )
    def test_wrong_types(self, churn, column, value, message):
        result = run(churn, [churn_row(**{column: value}), churn_row("ok")])
        assert result.accepted["customer_id"].tolist() == ["ok"]
        assert reason_of(result, 1) == f"{column}: {value!r} {message}"
        assert result.reason_counts == {f"{column}:wrong_type": 1}

    @pytest.mark.parametrize(
        ("text", "value"), [("TRUE", True), ("yes", True), ("1", True), ("False", False), ("NO", False), ("0", False)]
    )
    def test_bool_spellings(self, churn, text, value):
        assert run(churn, [churn_row(autopay=text)]).accepted["autopay"].tolist() == [value]

    def test_int_accepts_integral_spellings(self, churn):
        result = run(
            churn,
            [
                churn_row("a", tenure_months=" 7 "),
                churn_row("b", tenure_months="7.0"),
                churn_row("c", tenure_months="+7"),
            ],
        )
        assert result.accepted["tenure_months"].tolist() == [7, 7, 7]

    def test_timestamps_become_utc(self, churn):
        result = run(
            churn,
            [
                churn_row("naive", event_time="2024-01-01 10:00:00"),
                churn_row("offset", event_time="2024-01-01T12:00:00+02:00"),
                churn_row("date", event_time="2024-01-01"),
            ],
        )
        times = dict(zip(result.accepted["customer_id"], result.accepted["event_time"], strict=True))
        assert times["naive"] == pd.Timestamp("2024-01-01T10:00:00Z")
        assert times["offset"] == pd.Timestamp("2024-01-01T10:00:00Z")
        assert times["date"] == pd.Timestamp("2024-01-01T00:00:00Z")

    def test_several_problems_are_joined_and_original_text_kept(self, churn):
        result = run(churn, [churn_row("a", tenure_months="-1", region="mars", autopay="?")])
        row = result.rejected.iloc[0]
        assert row[REASON_COLUMN].split("; ") == [
            "tenure_months: -1 below min 0",
            "region: 'mars' not in allowed ['north', 'south', 'east', 'west']",
            "autopay: '?' is not a boolean (use true/false, 1/0 or yes/no)",
        ]
        assert row["tenure_months"] == "-1" and row["autopay"] == "?" and row["region"] == "mars"
        assert row[SOURCE_COLUMN] == "batch.csv" and row[ROW_NUMBER_COLUMN] == 1

    def test_duplicates_within_file_keep_the_first(self, churn):
        rows = [
            churn_row("a", event_time="2024-01-01T00:00:00Z", tenure_months="1"),
            churn_row("b"),
            churn_row("a", event_time="2024-01-01 00:00:00+00:00", tenure_months="2"),  # same key, other spelling
            churn_row("a", event_time="2024-01-02T00:00:00Z"),
        ]
        result = run(churn, rows)
        assert result.accepted["tenure_months"].tolist() == [1, 12, 12]
        assert result.rejected[ROW_NUMBER_COLUMN].tolist() == [3]
        assert reason_of(result, 3) == "duplicate_row: same row key as data row 1"
        assert result.summary() == {
            "source": "batch.csv",
            "rows_total": 4,
            "rows_accepted": 3,
            "rows_rejected": 1,
            "reasons": {"duplicate_row": 1},
        }

    def test_no_row_lost_accepted_plus_rejected_is_input(self, churn):
        rows = [churn_row(f"c{i}", tenure_months=str(i * 40)) for i in range(10)]
        result = run(churn, rows)
        assert len(result.accepted) + len(result.rejected) == 10
        assert sorted(result.accepted["customer_id"].tolist() + result.rejected["customer_id"].tolist()) == sorted(
            r["customer_id"] for r in rows
        )
        assert result.rejected[ROW_NUMBER_COLUMN].tolist() == [8, 9, 10]  # 280, 320, 360 > 240

    def test_all_rows_rejected_gives_empty_typed_accepted(self, churn):
        result = run(churn, [churn_row(plan="gold")])
        assert result.accepted.empty and len(result.rejected) == 1
        assert str(result.accepted["tenure_months"].dtype) == "Int64"
        assert str(result.accepted[EVENT_TIME_COLUMN].dtype) == "datetime64[ns, UTC]"

    def test_typed_dataframe_input_is_validated_the_same_way(self, keyless):
        typed = pd.DataFrame({"x": [1.0, None], "flag": [True, None], "y": [3, -1]})
        result = validate(typed, keyless, "sql:table", INGESTED_AT)
        assert result.accepted["x"].tolist() == [1.0]
        assert reason_of(result, 2) == "x: null in non-nullable column; y: -1 below min 0"


# --------------------------------------------------------------------------- keys and event time
class TestRowKeys:
    def test_entity_and_event_time_key_matches_documented_formula(self, churn):
        key = run(churn, [churn_row("c1", event_time="2024-01-01T00:00:00Z")]).accepted[ROW_KEY_COLUMN].item()
        payload = json.dumps(["key", "c1", "2024-01-01T00:00:00+00:00"], separators=(",", ":")).encode()
        assert key == hashlib.sha256(payload).hexdigest()[:32]

    def test_key_is_stable_across_spellings_formats_and_values(self, churn):
        csv_key = run(churn, [churn_row("c1", event_time="2024-01-01T02:00:00+02:00")]).accepted[ROW_KEY_COLUMN].item()
        other_values = run(churn, [churn_row("c1", event_time="2024-01-01 00:00:00", tenure_months="99")])
        assert other_values.accepted[ROW_KEY_COLUMN].item() == csv_key  # key = entity + time, not content
        table = pa.table({k: [v] for k, v in churn_row("c1", event_time="2024-01-01T00:00:00Z").items()})
        frame = read_source(parquet_bytes(table), "same.parquet")
        assert validate(frame, churn, "same.parquet", INGESTED_AT).accepted[ROW_KEY_COLUMN].item() == csv_key

    def test_keyless_contract_hashes_full_row_and_uses_ingestion_time(self, keyless):
        result = run(
            keyless,
            [
                {"x": "1", "flag": "", "y": "2"},
                {"x": "1.0", "flag": "", "y": "02"},
                {"x": "1", "flag": "yes", "y": "2"},
            ],
        )
        assert result.rejected[ROW_NUMBER_COLUMN].tolist() == [2]  # same canonical content as row 1
        assert result.accepted[ROW_KEY_COLUMN].nunique() == 2
        assert (result.accepted[ENTITY_COLUMN] == result.accepted[ROW_KEY_COLUMN]).all()
        assert (result.accepted[EVENT_TIME_COLUMN] == INGESTED_AT).all()
        payload = json.dumps(["row", [["flag", None], ["x", "1.0"], ["y", "2"]]], separators=(",", ":")).encode()
        assert result.accepted[ROW_KEY_COLUMN].iloc[0] == hashlib.sha256(payload).hexdigest()[:32]

    def test_naive_ingestion_time_is_utc(self, keyless):
        result = validate(read_source(b"x,flag,y\n1,,2\n", "f.csv"), keyless, "f.csv", pd.Timestamp("2024-05-05 08:00"))
        assert result.accepted[EVENT_TIME_COLUMN].item() == pd.Timestamp("2024-05-05T08:00:00Z")

    def test_row_keys_function_matches_validate(self, churn):
        accepted = run(churn, [churn_row("a"), churn_row("b")]).accepted
        assert row_keys(accepted, churn) == accepted[ROW_KEY_COLUMN].tolist()


# --------------------------------------------------------------------------- hostile values and files
def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


class TestHugeNumbers:
    @pytest.mark.parametrize("value", ["9" * 5000, "-" + "9" * 5000, "1" + "0" * 4400, "+" + "7" * 100_000])
    def test_int_with_thousands_of_digits_is_a_row_level_wrong_type(self, churn, value):
        """Before: int() raised ValueError (Python's 4300-digit limit) and the whole run failed."""
        result = run(churn, [churn_row("a", tenure_months=value), churn_row("ok")])
        assert result.accepted["customer_id"].tolist() == ["ok"]
        assert result.reason_counts == {"tenure_months:wrong_type": 1}
        assert len(reason_of(result, 1)) < 200  # the value is shown shortened

    def test_leading_zeros_do_not_count_as_digits(self, churn):
        result = run(churn, [churn_row("a", tenure_months="0" * 5000 + "12")])
        assert result.accepted["tenure_months"].tolist() == [12]

    def test_huge_int_in_parquet_text_column(self, churn):
        row = churn_row("a", support_calls="9" * 5000)
        table = pa.table({k: [v] for k, v in {**row, "customer_id": "a"}.items()})
        result = validate(read_source(parquet_bytes(table), "big.parquet"), churn, "big.parquet", INGESTED_AT)
        assert result.reason_counts == {"support_calls:wrong_type": 1}


class TestHeaderNormalisation:
    def test_parquet_columns_colliding_after_trimming_are_bad_header(self):
        """Before: ' customer_id' and 'customer_id' made read_source raise (ArrowInvalid / KeyError)."""
        table = pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"])], names=["customer_id", " customer_id"])
        with pytest.raises(FileRejected) as exc:
            read_source(parquet_bytes(table), "dup.parquet")
        assert exc.value.reason == "bad_header" and "customer_id" in str(exc.value)

    def test_parquet_exact_duplicate_names_are_bad_header(self):
        table = pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["x", "x"])
        with pytest.raises(FileRejected) as exc:
            read_source(parquet_bytes(table), "dup.parquet")
        assert exc.value.reason == "bad_header"

    def test_csv_and_parquet_normalise_the_same_way(self, keyless):
        names = ["\ufeff x ", "flag\t", " y"]
        csv_frame = read_source(",".join(names).encode() + b"\n1.0,,2\n", "n.csv")
        parquet_frame = read_source(
            parquet_bytes(pa.Table.from_arrays([pa.array(["1.0"]), pa.array([""]), pa.array(["2"])], names=names)),
            "n.parquet",
        )
        assert list(csv_frame.columns) == list(parquet_frame.columns) == ["x", "flag", "y"]
        nfd = "cafe\u0301"  # 'café' decomposed: the same name as the NFC spelling
        with pytest.raises(FileRejected) as exc:
            read_source(f"caf\u00e9,{nfd}\n1,2\n".encode(), "nfc.csv")
        assert exc.value.reason == "bad_header"

    def test_validate_checks_after_normalising_typed_frames_too(self, keyless):
        frame = pd.DataFrame([[1.0, 2.0, None, 3]], columns=["x", " x", "flag", "y"])
        with pytest.raises(FileRejected) as exc:
            validate(frame, keyless, "sql:t", INGESTED_AT)
        assert exc.value.reason == "bad_header"


class TestUnnamedColumns:
    def test_pandas_index_column_is_dropped_under_drop(self, keyless):
        """Before: the empty first header made the whole file bad_header even with unknown_columns: drop."""
        data = pd.DataFrame({"x": [1.5, 2.5], "flag": [True, None], "y": [3, 4]}).to_csv().encode()
        assert data.startswith(b",x,flag,y")
        result = validate(read_source(data, "indexed.csv"), keyless, "indexed.csv", INGESTED_AT)
        assert result.accepted["y"].tolist() == [3, 4] and result.rejected.empty

    def test_unnamed_column_is_an_unknown_column_under_reject(self, churn):
        rows = [churn_row("a")]
        data = to_csv(rows, header=[*CHURN_HEADER]).replace(b"customer_id,", b" ,customer_id,", 1)
        data = data.replace(b"\na,", b"\nzzz,a,", 1)
        with pytest.raises(FileRejected) as exc:
            validate(read_source(data, "unnamed.csv"), churn, "unnamed.csv", INGESTED_AT)
        assert exc.value.reason == "unknown_columns" and "<unnamed column 1>" in str(exc.value)

    def test_two_unnamed_columns_are_two_unknown_columns_not_duplicates(self, keyless):
        frame = read_source(b"x,,flag,,y\n1,a,,b,2\n", "two.csv")
        assert list(frame.columns) == ["x", "<unnamed column 2>", "flag", "<unnamed column 4>", "y"]
        assert validate(frame, keyless, "two.csv", INGESTED_AT).accepted["y"].tolist() == [2]


class TestParquetValues:
    def _churn_table(self, **columns: pa.Array) -> pa.Table:
        rows = [churn_row("a"), churn_row("b"), churn_row("c")]
        data = {k: pa.array([r[k] for r in rows]) for k in CHURN_HEADER}
        data.update(columns)
        return pa.table(data)

    def test_list_in_a_string_column_is_wrong_type_per_row(self, churn):
        """Before: the list was stored as its Python repr "['x', 'y']"."""
        table = self._churn_table(customer_id=pa.array([["x", "y"], None, ["z"]], pa.list_(pa.string())))
        result = validate(read_source(parquet_bytes(table), "nested.parquet"), churn, "nested.parquet", INGESTED_AT)
        assert result.accepted.empty
        assert result.reason_counts == {"customer_id:wrong_type": 2, "customer_id:null": 1}
        assert "nested" in reason_of(result, 1) and "list" in reason_of(result, 1)

    @pytest.mark.parametrize(
        "column",
        [
            pa.array([{"a": 1}, {"a": 2}, {"a": 3}]),
            pa.array([[("k", 1)], [("k", 2)], [("k", 3)]], pa.map_(pa.string(), pa.int64())),
            pa.array([[1], [2], [3]], pa.list_(pa.int64(), 1)),
        ],
        ids=["struct", "map", "fixed_size_list"],
    )
    def test_nested_types_are_wrong_type_in_any_column(self, churn, column):
        table = self._churn_table(tenure_months=column)
        result = validate(read_source(parquet_bytes(table), "n.parquet"), churn, "n.parquet", INGESTED_AT)
        assert result.accepted.empty and result.reason_counts == {"tenure_months:wrong_type": 3}

    def test_binary_that_is_not_utf8_is_rejected_per_row_not_merged(self, churn):
        """Before: both ids decoded to 'id\ufffd' (replacement character): two customers became one."""
        ids = pa.array([b"id\xff", b"id\xfe", "ok-\u00e9".encode()], pa.binary())
        table = self._churn_table(customer_id=ids)
        result = validate(read_source(parquet_bytes(table), "bin.parquet"), churn, "bin.parquet", INGESTED_AT)
        assert result.accepted["customer_id"].tolist() == ["ok-\u00e9"]  # valid UTF-8 binary is text
        assert result.reason_counts == {"customer_id:not_utf8": 2}
        assert set(result.rejected["customer_id"].map(str)) == {"binary b'id\\xff'", "binary b'id\\xfe'"}

    def test_parquet_and_csv_type_scalars_the_same_way(self, churn):
        table = self._churn_table(
            tenure_months=pa.array([1.5, float("inf"), 7.0]), autopay=pa.array([1, 0, 1], pa.int8())
        )
        result = validate(read_source(parquet_bytes(table), "s.parquet"), churn, "s.parquet", INGESTED_AT)
        csv_result = run(
            churn,
            [
                churn_row("a", tenure_months="1.5", autopay="1"),
                churn_row("b", tenure_months="inf", autopay="0"),
                churn_row("c", tenure_months="7.0", autopay="1"),
            ],
        )
        assert result.reason_counts == csv_result.reason_counts == {"tenure_months:wrong_type": 2}
        assert result.accepted["tenure_months"].tolist() == csv_result.accepted["tenure_months"].tolist() == [7]

    def test_quarantined_rows_with_invalid_values_can_be_stored(self, churn, tmp_path):
        from mlops_core.datasets import DatasetStore
        from mlops_core.storage import LocalObjectStore

        table = self._churn_table(customer_id=pa.array([b"\xff", b"b", b"c"], pa.binary()))
        result = validate(read_source(parquet_bytes(table), "q.parquet"), churn, "q.parquet", INGESTED_AT)
        ds = DatasetStore(LocalObjectStore(tmp_path), "churn")
        record = json.loads(LocalObjectStore(tmp_path).get_bytes(ds.quarantine("r", "q.parquet", result.rejected, "x")))
        assert ds.read_quarantined_rows(record)["customer_id"].tolist() == ["binary b'\\xff'"]


class TestCompressionAndCase:
    @pytest.mark.parametrize("name", ["f.csv.gz", "F.CSV.GZ", "f.Csv.Gz"])
    def test_gzip_csv_is_read_like_csv(self, churn, name):
        data = to_csv([churn_row("a"), churn_row("b")])
        result = validate(read_source(gzip_bytes(data), name), churn, name, INGESTED_AT)
        assert result.accepted["customer_id"].tolist() == ["a", "b"]

    def test_multi_member_gzip(self):
        data = gzip_bytes(b"a,b\n1,2\n") + gzip_bytes(b"3,4\n")
        assert read_source(data, "m.csv.gz")["b"].tolist() == ["2", "4"]

    @pytest.mark.parametrize("name", ["f.CSV", "f.Parquet", "f.PARQUET"])
    def test_suffix_in_any_case(self, name):
        data = parquet_bytes(pa.table({"a": ["1"]})) if "arquet" in name.lower() else b"a\n1\n"
        assert read_source(data, name)["a"].tolist() == ["1"]

    def test_gzip_bomb_is_too_large_not_an_out_of_memory(self):
        bomb = gzip_bytes(b"a\n" + b"1\n" * 5_000_000)  # 10 MB of text in ~10 KB
        assert len(bomb) < 100_000
        with pytest.raises(FileRejected) as exc:
            read_source(bomb, "bomb.csv.gz", max_decoded_bytes=1_000_000)
        assert exc.value.reason == "too_large" and "1000000" in str(exc.value)

    @pytest.mark.parametrize(
        ("data", "reason"),
        [
            (gzip_bytes(b"a,b\n1,2\n")[:-10], "truncated"),
            (b"\x1f\x8b\x08garbage", "truncated"),
            (b"not gzip at all", "unparseable"),
            (gzip_bytes(b""), "empty"),
            (gzip_bytes("a\nJos\u00e9\n".encode("latin-1")), "not_utf8"),
        ],
        ids=["cut", "cut_header", "not_gzip", "empty_inside", "latin1_inside"],
    )
    def test_damaged_gzip(self, data, reason):
        with pytest.raises(FileRejected) as exc:
            read_source(data, "d.csv.gz")
        assert exc.value.reason == reason

    def test_parquet_dictionary_bomb_is_too_large(self):
        long_value = "x" * 10_000
        table = pa.table({"a": pa.array([long_value] * 2_000).dictionary_encode()})
        data = parquet_bytes(table)
        assert len(data) < 200_000
        with pytest.raises(FileRejected) as exc:
            read_source(data, "dict.parquet", max_decoded_bytes=5_000_000)
        assert exc.value.reason == "too_large"

    def test_text_column_that_is_not_utf8_rejects_the_file_like_csv(self):
        """Parquet readers do not check UTF-8: before, such a file raised UnicodeDecodeError while being read."""
        raw = pa.array([b"ok", b"\xff\xfe"], pa.binary())
        table = pa.table({"a": pa.Array.from_buffers(pa.string(), 2, raw.buffers())})
        with pytest.raises(FileRejected) as exc:
            read_source(parquet_bytes(table), "bad-text.parquet")
        assert exc.value.reason == "not_utf8"

    def test_file_above_the_limit(self):
        with pytest.raises(FileRejected) as exc:
            read_source(b"a\n" + b"1\n" * 100, "big.csv", max_decoded_bytes=50)
        assert exc.value.reason == "too_large"

    def test_field_above_the_csv_readers_limit_is_too_large(self):
        import csv

        data = b"a,b\n1," + b"x" * (csv.field_size_limit() + 1) + b"\n"
        with pytest.raises(FileRejected) as exc:
            read_source(data, "wide.csv")
        assert exc.value.reason == "too_large" and "CSV reader's limit" in str(exc.value)


# --------------------------------------------------------------------------- vectorized = reference
_VALUE_TEXTS = st.one_of(
    st.text(max_size=8),
    st.from_regex(r"\A[ \t]?[+-]?[0-9]{1,22}(\.[0-9]{0,18})?([eE][+-]?[0-9]{1,3})?[ \t\x1c]?\Z"),
    st.from_regex(
        r"\A(19|20|18|23)[0-9]{2}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|\+00:00|\+02:00)?\Z"
    ),
    st.sampled_from(["true", "FALSE", "Yes", "no", "1", "0", " 1 ", "\u00a07", "٣", "nan", "inf", "-0", "9" * 19]),
)


@settings(max_examples=200, deadline=None)
@given(
    texts=st.lists(_VALUE_TEXTS, min_size=1, max_size=30), column_type=st.sampled_from(sorted(validation.PANDAS_DTYPES))
)
def test_vectorized_parsing_gives_the_reference_answer(texts, column_type):
    strip = column_type not in ("string", "category")
    shown = [t.strip() for t in texts] if strip else texts
    reference = validation._parse_reference(pd.Series(shown, dtype=object), column_type)
    arrow = validation._strip(pa.array(texts, pa.string())) if strip else pa.array(texts, pa.string())
    assert arrow.to_pylist() == shown
    fast = validation._parse(arrow, column_type)
    pd.testing.assert_series_equal(fast[0], reference[0], check_index_type=False, check_exact=True)
    assert fast[1].tolist() == reference[1].tolist() and fast[2].tolist() == reference[2].tolist()


def _same_result(a: ValidationResult, b: ValidationResult) -> None:
    pd.testing.assert_frame_equal(a.accepted, b.accepted, check_exact=True)
    pd.testing.assert_frame_equal(a.rejected, b.rejected, check_exact=True)
    assert a.reason_counts == b.reason_counts and a.summary() == b.summary()


def _whole_file(data: bytes, name: str, contract: DatasetContract) -> ValidationResult | FileRejected:
    try:
        return validate(read_source(data, name), contract, name, INGESTED_AT)
    except FileRejected as exc:
        return exc


def _in_blocks(data: bytes, name: str, contract: DatasetContract, batch_bytes: int) -> ValidationResult | FileRejected:
    try:
        return validation.validate_file(data, name, contract, INGESTED_AT, batch_bytes=batch_bytes)
    except FileRejected as exc:
        return exc


def _assert_same(data: bytes, contract: DatasetContract, batch_bytes: int, name: str = "f.csv") -> None:
    whole, blocks = _whole_file(data, name, contract), _in_blocks(data, name, contract, batch_bytes)
    if isinstance(whole, FileRejected):
        assert isinstance(blocks, FileRejected), f"whole file: {whole.reason}; in blocks: accepted"
        assert (blocks.reason, str(blocks)) == (whole.reason, str(whole))
    else:
        assert isinstance(blocks, ValidationResult), f"in blocks: {blocks}"
        _same_result(blocks, whole)


_ROWS = [
    churn_row("a"),
    churn_row("b", "2024-01-02T00:00:00Z"),
    churn_row("a"),  # a repeat of the first
    churn_row("c", tenure_months="x"),
    churn_row("d", plan="gold", churned="2"),
    churn_row("", "2024-01-03 00:00:00"),
    churn_row("e", last_payment_delay_days="3.25", autopay="YES"),
    churn_row("f", event_time="2024-02-30T00:00:00Z"),
]


@settings(max_examples=150, deadline=None)
@given(
    picks=st.lists(st.integers(0, len(_ROWS) - 1), min_size=1, max_size=40),
    batch_bytes=st.integers(40, 2000),
    damage=st.sampled_from(["", "ragged", "not_utf8", "quote", "blank", "long"]),
    at=st.floats(0, 1),
    header=st.sampled_from(["", "", "missing", "extra"]),
)
def test_validation_in_blocks_gives_the_whole_file_answer(churn, picks, batch_bytes, damage, at, header):
    rows = [dict(_ROWS[i], customer_id=_ROWS[i]["customer_id"] or "") for i in picks]
    lines = to_csv(rows).split(b"\n")
    if header == "missing":  # the last column is gone: missing_columns, unless damage further on wins
        lines = [line.rsplit(b",", 1)[0] if line else line for line in lines]
    elif header == "extra":  # unknown_columns (the contract rejects them), unless damage further on wins
        lines = [line + (b",extra" if i == 0 else b",x") if line else line for i, line in enumerate(lines)]
    position = 1 + int(at * (len(lines) - 2))  # a data line, early or late
    if damage == "ragged":
        lines[position] += b",extra"
    elif damage == "not_utf8":
        lines[position] = lines[position].replace(b"basic", b"bas\xffic")
    elif damage == "quote":
        lines[position] = lines[position].replace(b"north", b'"north"')
    elif damage == "blank":
        lines.insert(position, b"")
    elif damage == "long":
        lines[position] = lines[position].replace(b"north", b"n" * (csv.field_size_limit() + 1))
    _assert_same(b"\n".join(lines), churn, batch_bytes)


def test_a_repeat_of_a_row_of_an_earlier_block_is_rejected_with_its_row_number(churn):
    data = to_csv([churn_row(f"c{i}") for i in range(50)] + [churn_row("c3")])
    result = validation.validate_file(data, "f.csv", churn, INGESTED_AT, batch_bytes=200)
    assert result.rejected[ROW_NUMBER_COLUMN].tolist() == [51]
    assert reason_of(result, 51) == "duplicate_row: same row key as data row 4"
    _assert_same(data, churn, 200)


def test_a_break_after_the_first_block_rejects_the_whole_file_as_before(churn):
    data = to_csv([churn_row(f"c{i}") for i in range(50)]) + b"c99,2024-01-01T00:00:00Z,1\n"
    with pytest.raises(FileRejected) as caught:
        validation.validate_file(data, "f.csv", churn, INGESTED_AT, batch_bytes=200)
    assert caught.value.reason == "truncated" and "first: data row 51 has 3" in str(caught.value)


def test_gzip_csv_in_blocks(churn):
    data = to_csv([churn_row(f"c{i}", tenure_months=str(i)) for i in range(300)])
    result = validation.validate_file(gzip.compress(data), "f.csv.gz", churn, INGESTED_AT, batch_bytes=500)
    assert len(result.accepted) == 241 and result.rejected[ROW_NUMBER_COLUMN].tolist() == list(range(242, 301))
    assert set(result.reason_counts) == {"tenure_months:above_max"}


def test_plain_csv_reader_reads_what_the_reference_reads():
    data = b"a, b ,c\n1,,x y\n\n2, 3 ,\xc3\xa9\n4,5,6"
    fast = read_source(data, "f.csv")
    reference = validation._read_csv_reference(data, "f.csv")
    assert validation._read_plain_csv(data, "f.csv") is not None
    assert fast.columns.tolist() == reference.columns.tolist() == ["a", "b", "c"]
    assert fast.astype(object).to_dict("records") == reference.to_dict("records")


# --------------------------------------------------------------------------- streaming readers = whole-file readers
_CSV_PIECES = st.sampled_from(
    ["a", "b", ",", "\n", "\r", "\r\n", '"', '""', " ", "é", "\ufeff", "x" * 7, "1", "\u2028", "\x85", "\x00"]
)


def _csv_reference_or_reject(data: bytes) -> pd.DataFrame | None:
    try:
        return validation._read_csv_reference(data, "f.csv")
    except FileRejected:
        return None


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(_CSV_PIECES, max_size=60),
    bom=st.booleans(),
    chunk=st.integers(1, 9),
    batch_bytes=st.integers(4, 200),
    bad_byte=st.sampled_from([b"", b"\xff", b"\xc3"]),
)
def test_streaming_reference_csv_reader_reads_what_the_whole_file_reader_reads(
    pieces, bom, chunk, batch_bytes, bad_byte
):
    data = (b"\xef\xbb\xbf" if bom else b"") + "".join(pieces).encode("utf-8")
    if bad_byte and data:
        data = data[: len(data) // 2] + bad_byte + data[len(data) // 2 :]
    whole = _csv_reference_or_reject(data)
    frames: list[pd.DataFrame] | None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(validation, "_DECODE_CHUNK", chunk)  # chunk ends inside "\r\n", a character, the BOM
        try:
            frames = list(validation._reference_csv_blocks(io.BytesIO(data), "f.csv", batch_bytes))
        except (validation.NeedsWholeFile, FileRejected):
            frames = None
    if whole is None:
        assert frames is None, "the whole-file reader rejects this file; the streaming one must hand it over"
        return
    assert frames is not None, "a file the whole-file reader reads must be read in batches too"
    streamed = pd.concat(frames, ignore_index=True)
    assert streamed.columns.tolist() == whole.columns.tolist()
    assert streamed.to_dict("records") == whole.to_dict("records")


@settings(max_examples=40, deadline=None)
@given(
    picks=st.lists(st.integers(0, len(_ROWS) - 1), min_size=1, max_size=40),
    batch_bytes=st.integers(40, 2000),
    gz=st.booleans(),
    quote_at=st.one_of(st.none(), st.floats(0, 1)),
)
def test_batches_from_a_local_file_give_the_whole_file_answer(
    tmp_path_factory, churn, picks, batch_bytes, gz, quote_at
):
    rows = [dict(_ROWS[i], customer_id=_ROWS[i]["customer_id"] or "") for i in picks]
    lines = to_csv(rows).split(b"\n")
    if quote_at is not None:  # a quoted value early or late: not plain, read by the csv reader
        position = 1 + int(quote_at * (len(lines) - 2))
        lines[position] = lines[position].replace(b"north", b'"north"')
    data = b"\n".join(lines)
    name = "f.csv.gz" if gz else "f.csv"
    path = tmp_path_factory.mktemp("f") / name
    path.write_bytes(gzip.compress(data) if gz else data)
    whole = _whole_file(data, "f.csv", churn)
    try:
        streamed: ValidationResult | FileRejected = validation.validate_file(
            path, name, churn, INGESTED_AT, batch_bytes=batch_bytes
        )
    except FileRejected as exc:
        streamed = exc
    if isinstance(whole, FileRejected):
        assert isinstance(streamed, FileRejected) and streamed.reason == whole.reason
    else:
        assert isinstance(streamed, ValidationResult)
        assert set(streamed.accepted[SOURCE_COLUMN]) <= {name}
        pd.testing.assert_frame_equal(
            streamed.accepted.drop(columns=SOURCE_COLUMN), whole.accepted.drop(columns=SOURCE_COLUMN), check_exact=True
        )
        assert streamed.rejected["_reason"].tolist() == whole.rejected["_reason"].tolist()
        assert streamed.reason_counts == whole.reason_counts


def test_parquet_in_row_batches_gives_the_whole_file_answer(tmp_path, churn):
    frame = pd.DataFrame([churn_row(f"c{i}", tenure_months=str(i % 130)) for i in range(500)])
    path = tmp_path / "f.parquet"
    path.write_bytes(parquet_bytes(pa.Table.from_pandas(frame, preserve_index=False)))
    parts = [
        p
        for p in validation.validate_batches(path, "f.parquet", churn, INGESTED_AT, batch_bytes=2000)
        if p is not RESTART
    ]
    assert len(parts) > 5
    whole = validate(read_source(path.read_bytes(), "f.parquet"), churn, "f.parquet", INGESTED_AT)
    pd.testing.assert_frame_equal(pd.concat([p.accepted for p in parts], ignore_index=True), whole.accepted)
    rejected = pd.concat([p.rejected for p in parts], ignore_index=True)
    assert rejected[ROW_NUMBER_COLUMN].tolist() == whole.rejected[ROW_NUMBER_COLUMN].tolist()
    assert rejected[REASON_COLUMN].tolist() == whole.rejected[REASON_COLUMN].tolist()


def test_a_header_the_contract_refuses_is_answered_without_reading_the_file_whole(churn, monkeypatch):
    data = to_csv([dict(churn_row(f"c{i}"), extra="x") for i in range(300)])
    whole = _whole_file(data, "f.csv", churn)
    assert isinstance(whole, FileRejected) and whole.reason == "unknown_columns"

    def whole_file_reading(*args, **kwargs):
        raise AssertionError("the file was read whole")

    monkeypatch.setattr(validation, "_read_plain_csv", whole_file_reading)
    monkeypatch.setattr(validation, "_read_csv_reference", whole_file_reading)
    with pytest.raises(FileRejected) as caught:
        validation.validate_file(data, "f.csv", churn, INGESTED_AT, batch_bytes=500)
    assert (caught.value.reason, str(caught.value)) == (whole.reason, str(whole))


_DAMAGE = {
    "late bytes that are not UTF-8": lambda rows: rows + b"c9,2024-01-01T00:00:00Z,1,2.5,basic,true,0\xff\n",
    "binary": lambda rows: rows[:300] + bytes(range(256)) * 4 + rows[300:],
    "a byte-order mark, then bad bytes": lambda rows: b"\xef\xbb\xbf" + rows + b"\xc3(\n",
    "a ragged row late": lambda rows: rows + b"c9,2024-01-01T00:00:00Z,1\n",
    "a cut-off last line": lambda rows: rows + b"c9,2024-01-01",
    "an open quote late": lambda rows: rows + b'c9,"2024-01-01T00:00:00Z,1,2.5,basic,true,0\n',
    "a bad header after rows of another width": lambda rows: b"a,a\n" + rows,
}


@pytest.mark.parametrize("damage", sorted(_DAMAGE))
@pytest.mark.parametrize("gz", [False, True])
def test_a_damaged_csv_read_in_blocks_gets_the_whole_file_wording_without_being_read_whole(
    churn, damage, gz, monkeypatch
):
    rows = to_csv([churn_row(f"c{i}") for i in range(60)])
    data = _DAMAGE[damage](rows)
    name = "f.csv.gz" if gz else "f.csv"
    if gz:
        data = gzip.compress(data)
    whole = _whole_file(data, name, churn)
    assert isinstance(whole, FileRejected)

    def read_whole(*args, **kwargs):
        raise AssertionError("the file was read whole")

    monkeypatch.setattr(validation, "_read_csv_reference", read_whole)
    monkeypatch.setattr(validation, "_read_plain_csv", read_whole)
    blocks = _in_blocks(data, name, churn, 300)
    assert isinstance(blocks, FileRejected)
    assert (blocks.reason, str(blocks)) == (whole.reason, str(whole))
