"""The vectorized paths of validation give the reference's answers: typing, row keys, batch repeats."""

from __future__ import annotations

import hashlib
import itertools
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from conftest import INGESTED_AT, churn_row, to_csv
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_core import validation
from mlops_core.contract import ROW_KEY_COLUMN, DatasetContract
from mlops_core.validation import REASON_COLUMN, ROW_NUMBER_COLUMN, SeenRowKeys, read_source, row_keys, validate


def _assert_parsed_like_reference(texts: list[str], column_type: str) -> None:
    reference = validation._parse_reference(pd.Series(texts, dtype=object), column_type)
    fast = validation._parse(pa.array(texts, pa.string()), column_type)
    pd.testing.assert_series_equal(fast[0], reference[0], check_index_type=False, check_exact=True)
    assert fast[1].tolist() == reference[1].tolist() and fast[2].tolist() == reference[2].tolist()
    with pytest.MonkeyPatch.context() as patch:  # and exactly what the path without the whole-column cast gives
        patch.setattr(validation, "_cast_whole_column", lambda *args: None)
        general = validation._parse(pa.array(texts, pa.string()), column_type)
    pd.testing.assert_series_equal(fast[0], general[0], check_exact=True)
    if column_type == "float":  # -0.0 and 0.0 compare equal: the stored sign must agree too
        assert np.signbit(fast[0].to_numpy()).tolist() == np.signbit(general[0].to_numpy()).tolist()


# --------------------------------------------------------------------------- typing
_NUMERIC_TEXTS = st.from_regex(r"\A[0-9.\-]{0,17}\Z") | st.sampled_from(["-0", "-0.0", ".5", "5.", "-.5", "0" * 25])


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(_NUMERIC_TEXTS, min_size=1, max_size=30), column_type=st.sampled_from(["int", "float"]))
def test_a_numeric_column_cast_at_once_gives_the_reference_answer(texts, column_type):
    _assert_parsed_like_reference(texts, column_type)


def test_the_whole_column_cast_is_taken_only_for_plain_digits():
    def whole(texts: list[str], column_type: str) -> np.ndarray | None:
        arrow = pa.array(texts, pa.string())
        raw = validation._text_bytes(arrow)
        present = np.array([t != "" for t in texts])
        return validation._cast_whole_column(arrow, raw, present, column_type)

    assert whole(["1", "-20", "", "300"], "int").tolist() == [1, -20, 300]
    assert whole(["1.5", "-0.25", "7"], "float").tolist() == [1.5, -0.25, 7.0]
    assert whole(["1", "1-2"], "int") is None  # Arrow refuses a value: the general path decides
    assert whole(["1", "+2"], "int") is None  # a byte outside digits and '-'
    assert whole(["1", "1e3"], "float") is None
    assert whole(["1.00000000000001"], "float") is None  # longer than the 15 characters both parsers agree on


_TIMESTAMP_POOL = [
    "2024-01-01 00:00:00.5",  # a naive time the reference parses (after one with an offset: in that offset)
    "2024-01-01T00:00:00Z",
    "2024-01-01 00:00:00",
    "2024-01-01T02:00:00+02:00",
    "2024-01-01T00:00:00.123456789Z",
    "2023-02-30T00:00:00Z",
    "1677-01-01T00:00:00Z",
    "2024-13-01T00:00:00Z",
    "yesterday",
    "",
    "2024-06-30T23:59:59+00:00",
]


@settings(max_examples=150, deadline=None)
@given(picks=st.lists(st.integers(0, len(_TIMESTAMP_POOL) - 1), min_size=1, max_size=40))
def test_timestamps_parsed_once_per_distinct_value_give_the_value_by_value_answer(picks):
    texts = [_TIMESTAMP_POOL[i] for i in picks]
    arrow = pa.array(texts, pa.string())
    index = pd.RangeIndex(len(texts))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(validation, "_DISTINCT_SAMPLE", 1)  # small columns take the distinct path too
        patch.setattr(validation, "_DISTINCT_SHARE", 1.0)
        distinct = validation._parse_arrow(arrow, "timestamp", index)
    each = validation._parse_arrow(arrow, "timestamp", index, by_distinct=False)
    pd.testing.assert_series_equal(distinct[0], each[0], check_exact=True)
    assert distinct[1].tolist() == each[1].tolist() and distinct[2].tolist() == each[2].tolist()


def test_a_day_past_the_end_of_its_month_is_not_a_timestamp():
    values, present, bad = validation._parse(
        pa.array(["2023-02-30T00:00:00Z", "2024-02-29 10:00:00", "2023-04-31T00:00:00+00:00"]), "timestamp"
    )
    assert bad.tolist() == [True, False, True] and present.all()
    assert values.iloc[1] == pd.Timestamp("2024-02-29T10:00:00Z") and values.iloc[[0, 2]].isna().all()


def test_timestamps_take_the_distinct_path_when_a_run_of_values_repeats():
    sample = validation._DISTINCT_SAMPLE
    repeated = pa.array(["2024-01-01T00:00:00Z"] * (4 * sample), pa.string())
    distinct = pa.array([f"2024-01-01T00:00:{i % 60:02d}.{i:06d}Z" for i in range(4 * sample)], pa.string())
    assert validation._repeats_often(repeated) and not validation._repeats_often(distinct)
    assert not validation._repeats_often(repeated.slice(0, sample))  # short columns: parsed as they are


def test_strip_keeps_columns_without_outer_spaces_as_they_are():
    plain = pa.array(["1", "22", ""], pa.string())
    assert validation._strip(plain) is plain
    assert validation._strip(pa.array([" 1", "2\t", "\x1c3"], pa.string())).to_pylist() == ["1", "2", "3"]
    assert validation._strip(pa.array(["\u00a04 "], pa.string())).to_pylist() == ["4"]


# --------------------------------------------------------------------------- row keys
def _documented_key(entity: str, time: pd.Timestamp) -> str:
    payload = json.dumps(["key", entity, time.tz_convert("UTC").isoformat()], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


_ENTITIES = st.from_regex(r"\AC[0-9]{5}\Z") | st.text(min_size=1, max_size=8)
_TIMES = st.integers(0, 10**9).map(
    lambda s: pd.Timestamp("2020-01-01", tz="UTC") + pd.Timedelta(seconds=s)
) | st.integers(0, 10**18).map(lambda ns: pd.Timestamp(ns, unit="ns", tz="UTC"))


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(_ENTITIES, _TIMES), min_size=1, max_size=25), chunk=st.integers(1, 5))
def test_row_keys_follow_the_documented_formula(churn, rows, chunk):
    typed = pd.DataFrame(
        {
            "customer_id": pd.Series([e for e, _ in rows], dtype="string"),
            "event_time": pd.Series([t for _, t in rows], dtype="datetime64[ns, UTC]"),
        }
    )
    expected = [_documented_key(e, t) for e, t in rows]
    text = pa.array([e for e, _ in rows], pa.string())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(validation, "_DIGEST_CHUNK", chunk)  # digests taken in several chunks
        assert row_keys(typed, churn) == expected
        assert row_keys(typed, churn, texts={"customer_id": text}) == expected


def _documented_row_key(row: dict[str, object]) -> str:
    cells = [[name, row[name]] for name in sorted(row)]
    payload = json.dumps(["row", cells], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def _float_text(value: float | None) -> str | None:
    return None if value is None else repr(0.0 if value == 0 else value)


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.none() | st.floats(allow_nan=False, allow_infinity=False),
            st.none() | st.booleans(),
            st.integers(0, 2**63 - 1),
        ),
        min_size=1,
        max_size=25,
    ),
    chunk=st.integers(1, 5),
)
def test_whole_row_keys_follow_the_documented_formula(keyless, rows, chunk):
    typed = pd.DataFrame(
        {
            "x": pd.Series([x for x, _, _ in rows], dtype="float64"),
            "flag": pd.Series([f for _, f, _ in rows], dtype="boolean"),
            "y": pd.Series([y for _, _, y in rows], dtype="Int64"),
        }
    )
    expected = [
        _documented_row_key(
            {"x": _float_text(x), "flag": None if f is None else ("true" if f else "false"), "y": str(y)}
        )
        for x, f, y in rows
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(validation, "_DIGEST_CHUNK", chunk)
        assert row_keys(typed, keyless) == expected


def test_whole_row_keys_of_text_that_needs_json_escapes(keyless):
    contract = DatasetContract.from_dict(
        {
            "name": "texts",
            "task": "regression",
            "target": "y",
            "columns": [{"name": 'a"b', "type": "string", "nullable": True}, {"name": "y", "type": "int"}],
        }
    )
    texts = ['q"uote', "back\\slash", "tab\there", "é", None]
    typed = pd.DataFrame({'a"b': pd.Series(texts, dtype="string"), "y": pd.Series(range(5), dtype="Int64")})
    expected = [_documented_row_key({'a"b': t, "y": str(i)}) for i, t in enumerate(texts)]
    assert row_keys(typed, contract) == expected
    plain = typed.iloc[[3, 4]].reset_index(drop=True)  # no escapes: the Arrow path
    assert validation._arrow_row_payloads({'a"b': pa.array(["é", None]), "y": pa.array(["3", "4"])}) is not None
    assert row_keys(plain, contract) == expected[3:]


def test_fixed_width_payloads_are_the_joined_ones():
    ent = pa.array(["C0001", "C0002"], pa.string())
    tim = pa.array(["2024-01-01T00:00:00+00:00", "2024-01-02T00:00:00+00:00"], pa.string())
    fixed = validation._arrow_key_payloads(ent, tim)
    assert fixed.to_pylist() == [
        validation._key_payload(e, t).encode() for e, t in zip(ent.to_pylist(), tim.to_pylist(), strict=True)
    ]
    assert validation._fixed_width_payloads(2, validation._text_bytes(ent), validation._text_bytes(tim)) is not None
    uneven = pa.array(["C1", "C0002"], pa.string())
    assert validation._fixed_width_payloads(2, validation._text_bytes(uneven), validation._text_bytes(tim)) is None
    assert validation._arrow_key_payloads(pa.array(['a"b', "c"]), tim) is None  # a JSON escape: row by row


_TYPED_VALUES = {
    "int": (st.none() | st.integers(-(2**63), 2**63 - 1), "Int64"),
    "bool": (st.none() | st.booleans(), "boolean"),
    "float": (st.none() | st.floats(allow_nan=False, allow_infinity=False), "float64"),
    "string": (st.none() | st.text(max_size=5), "string"),
    "timestamp": (st.none() | _TIMES, "datetime64[ns, UTC]"),
}


@settings(max_examples=60, deadline=None)
@given(data=st.data(), column_type=st.sampled_from(sorted(_TYPED_VALUES)))
def test_canonical_texts_in_arrow_are_the_reference_texts(data, column_type):
    strategy, dtype = _TYPED_VALUES[column_type]
    values = pd.Series(data.draw(st.lists(strategy, max_size=20)), dtype=dtype)
    assert validation._canonical_arrow(values, column_type).to_pylist() == validation.canonical_values(
        values, column_type
    )


# --------------------------------------------------------------------------- repeats across batches
_POOL = [churn_row(f"c{i}") for i in range(5)] + [churn_row("c9", tenure_months="x"), churn_row("c8", plan="gold")]


def _in_batches(
    frame: pd.DataFrame, contract: DatasetContract, cuts: list[int], seen: dict[str, int] | SeenRowKeys
) -> tuple[pd.DataFrame, pd.DataFrame]:
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(frame)}), len(frame)]
    parts = [
        validate(frame.iloc[a:b].reset_index(drop=True), contract, "f.csv", INGESTED_AT, row_offset=a, seen_keys=seen)
        for a, b in itertools.pairwise(bounds)
    ]
    accepted = pd.concat([p.accepted for p in parts], ignore_index=True)
    rejected = pd.concat([p.rejected for p in parts], ignore_index=True)
    return accepted, rejected


@settings(max_examples=100, deadline=None)
@given(
    picks=st.lists(st.integers(0, len(_POOL) - 1), min_size=1, max_size=30),
    cuts=st.lists(st.integers(1, 29), max_size=4),
)
def test_seen_row_keys_answer_as_the_dict_and_as_the_whole_file(churn, picks, cuts):
    frame = read_source(to_csv([_POOL[i] for i in picks]), "f.csv")
    whole = validate(frame, churn, "f.csv", INGESTED_AT)
    with_dict = _in_batches(frame, churn, cuts, {})
    with_set = _in_batches(frame, churn, cuts, SeenRowKeys())
    for accepted, rejected in (with_dict, with_set):
        pd.testing.assert_frame_equal(accepted, whole.accepted, check_exact=True)
        pd.testing.assert_frame_equal(rejected, whole.rejected, check_exact=True)


def test_seen_row_keys_name_the_first_row_of_a_key():
    seen = SeenRowKeys()
    assert seen.record(["a", "b"], np.array([1, 2])) == 2
    assert "a" in seen and "z" not in seen and len(seen) == 2 and seen.get("z") is None
    assert seen.get("b") == 2  # builds the key -> row dict
    assert seen.record(["c", "a", "c"], np.array([3, 4, 5])) == 1  # "a" again: its first row stays
    assert (seen.get("a"), seen.get("c")) == (1, 3)
    assert seen.first_rows(["c", "a", "b"]).tolist() == [3, 1, 2]
    seen.clear()
    assert len(seen) == 0 and seen.get("a") is None


def test_a_repeat_in_a_later_batch_names_the_earlier_row(churn):
    frame = read_source(to_csv([churn_row("a"), churn_row("b"), churn_row("a"), churn_row("a")]), "f.csv")
    seen = SeenRowKeys()
    first = validate(frame.iloc[:2].reset_index(drop=True), churn, "f.csv", INGESTED_AT, seen_keys=seen)
    second = validate(frame.iloc[2:].reset_index(drop=True), churn, "f.csv", INGESTED_AT, row_offset=2, seen_keys=seen)
    assert len(first.accepted) == 2 and second.accepted.empty
    assert second.rejected[ROW_NUMBER_COLUMN].tolist() == [3, 4]
    assert second.rejected[REASON_COLUMN].tolist() == ["duplicate_row: same row key as data row 1"] * 2
    assert first.accepted[ROW_KEY_COLUMN].tolist() == row_keys(first.accepted, churn)
