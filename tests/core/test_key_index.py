"""The row-key index's binary-search paths give the answers of a plain key -> version map."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_core import key_index
from mlops_core.key_index import SCHEME_EVENT_DATE, SCHEME_HASH, RowKeyIndex
from mlops_core.storage import LocalObjectStore

# Keys of one width whose 8-byte prefixes often collide (few letters), and row-key-like hex keys.
_NARROW = st.text(alphabet="ab", min_size=10, max_size=10)
_HEX = st.from_regex(r"\A[0-9a-f]{32}\Z")


@settings(max_examples=200, deadline=None)
@given(sorted_keys=st.sets(_NARROW, max_size=40), keys=st.lists(_NARROW, max_size=40))
def test_search_by_prefixes_is_searchsorted(sorted_keys, keys):
    theirs = np.array(sorted(sorted_keys), dtype="S10")
    mine = np.array(keys, dtype="S10")
    assert key_index._search(theirs, mine).tolist() == np.searchsorted(theirs, mine).tolist()


def _table(keys: list[str], versions: list[str]) -> pa.Table:
    return pa.table({"_row_key": pa.array(keys, pa.string()), "version_id": pa.array(versions, pa.string())})


@settings(max_examples=200, deadline=None)
@given(
    old=st.dictionaries(_NARROW | _HEX, st.sampled_from(["v1", "v2"]), max_size=30),
    new=st.lists(st.tuples(_NARROW | _HEX, st.sampled_from(["v3", "v4"])), min_size=1, max_size=30),
)
def test_a_sorted_merge_is_the_general_merge_sorted(old, new):
    existing = _table(sorted(old), [old[k] for k in sorted(old)])
    incoming = _table([k for k, _ in new], [v for _, v in new])
    expected = key_index._merge_any(existing, incoming)
    expected = expected.take(pc.sort_indices(expected, sort_keys=[("_row_key", "ascending")]))
    merged = key_index._merge_sorted(existing, incoming)
    one_width = len({len(k) for k in [*old, *(k for k, _ in new)]}) <= 1
    if merged is None:
        assert not one_width  # only keys of several widths take the general path
    else:
        assert merged.to_pydict() == expected.to_pydict()


def test_fixed_width_keys_are_ascii_of_one_length_only():
    assert key_index._fixed_width(pa.array(["ab", "cd"])).tolist() == [b"ab", b"cd"]
    assert key_index._fixed_width(pa.array(["ab", "c"])) is None
    assert key_index._fixed_width(pa.array(["ab", "é"])) is None  # é is two bytes: not ASCII anyway
    assert key_index._fixed_width(pa.array(["a\x00", "bc"])) is None
    assert key_index._fixed_width(pa.array(["ab", None])) is None


def _dates(keys: list[str]) -> pd.Series:
    """Two date buckets, by key width."""
    return pd.Series(["2024-01-01" if len(k) == 32 else "2024-01-02" for k in keys], dtype=object)


@settings(max_examples=25, deadline=None)
@given(
    steps=st.lists(st.lists(_HEX | _NARROW, min_size=1, max_size=20), min_size=1, max_size=4),
    probes=st.lists(_HEX | _NARROW, max_size=20),
    scheme=st.sampled_from([SCHEME_HASH, SCHEME_EVENT_DATE]),
)
def test_an_index_answers_as_a_dict_of_the_keys_added(tmp_path_factory, steps, probes, scheme):
    store = LocalObjectStore(tmp_path_factory.mktemp("store"))
    manifest = lambda v: f"d/versions/{v}/manifest.json"  # noqa: E731
    model: dict[str, str] = {}
    for number, keys in enumerate(steps):
        version = f"v{number}"
        index = RowKeyIndex(store, "d", manifest, scheme)
        keys = sorted(keys) if number % 2 else keys  # the commit adds sorted keys; any order works
        labels = _dates(keys) if scheme == SCHEME_EVENT_DATE else None
        index.add(keys, version, labels)
        store.put_bytes(manifest(version), b"{}")
        model.update(dict.fromkeys(keys, version))
    asked = [*probes, *model]
    fresh = RowKeyIndex(store, "d", manifest, scheme)
    found = fresh.lookup(pd.Series(asked, dtype=object), _dates(asked) if scheme == SCHEME_EVENT_DATE else None)
    assert found.tolist() == [model.get(k) for k in asked]
