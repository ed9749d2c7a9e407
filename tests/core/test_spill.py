"""Scratch folders and the external merge sort: every row comes back once, in order, whatever the sizes."""

from __future__ import annotations

import fcntl
import os
import time

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_core import spill
from mlops_core.spill import ExternalSorter, ScratchDir, merge


def _table(rows: list[tuple[int, str, int]]) -> pa.Table:
    return pa.table(
        {
            "t": pa.array([r[0] for r in rows], pa.int64()),
            "k": pa.array([r[1] for r in rows], pa.string()),
            "n": pa.array([r[2] for r in rows], pa.int64()),
        }
    )


def _rows(tables) -> list[tuple[int, str, int]]:
    out: list[tuple[int, str, int]] = []
    for table in tables:
        columns = (table.column(c).to_pylist() for c in ("t", "k", "n"))
        out.extend(zip(*columns, strict=True))
    return out


_ROW = st.tuples(st.integers(-3, 3), st.sampled_from(["", "a", "ab", "b", "é", "z"]))


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(st.lists(_ROW, max_size=40), max_size=12),
    memory=st.integers(1, 4000),
    fan_in=st.integers(2, 5),
)
def test_sorted_gives_every_row_once_in_order(tmp_path_factory, batches, memory, fan_in):
    with ScratchDir(tmp_path_factory.mktemp("s")) as scratch:
        sorter = ExternalSorter(scratch, ["t", "k", "n"], memory, fan_in=fan_in)
        every: list[tuple[int, str, int]] = []
        for b, batch in enumerate(batches):
            rows = [(t, k, len(every) + i) for i, (t, k) in enumerate(batch)]
            every.extend(rows)
            sorter.add(_table(rows), tag=b)
        assert sorter.rows == len(every)
        assert _rows(sorter.sorted()) == sorted(every)
        assert _rows(sorter.sorted()) == sorted(every)  # readable again
        assert _rows(sorter.sorted(columns=["t", "k", "n"], keep=lambda t: pa.compute.greater(t["t"], 0))) == sorted(
            r for r in every if r[0] > 0
        )
        if batches:
            tagged = set(range(sum(len(b) for b in batches[:1])))
            got = _rows(sorter.sorted(tag=0, keep=lambda t: pa.compute.is_in(t["n"], pa.array(sorted(tagged)))))
            assert got == sorted(r for r in every if r[2] in tagged)
        leftovers = [p.name for p in scratch.path.iterdir() if "round" in p.name]
        assert not leftovers, "merge rounds are removed after use"


def test_merge_of_streams_with_uneven_tables():
    a = [_table([(0, "a", 0), (0, "c", 1)]), _table([(1, "a", 2)])]
    b = [_table([(0, "b", 3)]), _table([]), _table([(0, "d", 4), (2, "a", 5)])]
    assert _rows(merge([a, b], ["t", "k", "n"])) == [
        (0, "a", 0),
        (0, "b", 3),
        (0, "c", 1),
        (0, "d", 4),
        (1, "a", 2),
        (2, "a", 5),
    ]


def _fail_inside(scratch: ScratchDir) -> None:
    with scratch:
        (scratch.path / "x").write_bytes(b"1")
        kept.append(scratch.path)
        raise RuntimeError("boom")


kept: list = []


def test_scratch_is_removed_on_error_and_abandoned_ones_by_the_next(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        _fail_inside(ScratchDir(tmp_path))
    assert kept and not kept[-1].exists()

    dead = tmp_path / f"{spill.SCRATCH_PREFIX}dead"
    dead.mkdir()
    (dead / spill.LOCK_NAME).write_bytes(b"")
    alive = tmp_path / f"{spill.SCRATCH_PREFIX}alive"
    alive.mkdir()
    lock = os.open(alive / spill.LOCK_NAME, os.O_CREAT | os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX)
    old = time.time() - 2 * spill.ABANDONED_AFTER_SECONDS
    for folder in (dead, alive):
        os.utime(folder, (old, old))
    young = tmp_path / f"{spill.SCRATCH_PREFIX}young"  # its creator may not have locked it yet
    young.mkdir()
    try:
        with ScratchDir(tmp_path) as scratch:
            assert scratch.path.exists()
            assert not dead.exists() and alive.exists() and young.exists()
    finally:
        os.close(lock)
