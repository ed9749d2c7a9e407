"""Local scratch space and an external merge sort of Arrow tables, so that memory does not grow with the data.

Ingest stages what it reads on local disk instead of in memory: accepted rows go to an
:class:`ExternalSorter` (sorted runs in Arrow IPC files, merged back in bounded chunks), and
whatever must be uploaded whole (a partition, a quarantine record's rows) is written to a local
Parquet file first and uploaded with ``ObjectStore.put_file``. None of this is a store write:
it lives in a :class:`ScratchDir`, a private temporary folder that is removed when the work ends,
also on error; a folder left by a killed process is removed by the next one.

Memory: an :class:`ExternalSorter` holds at most ``memory_bytes`` of rows before it writes a run,
and its merge reads each run ``chunk_rows`` rows at a time, at most :data:`FAN_IN` runs at once
(more runs are merged in rounds first), so a merge holds about ``memory_bytes`` whatever the
number of rows.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

SCRATCH_PREFIX = "mlops-scratch-"
LOCK_NAME = ".lock"
ABANDONED_AFTER_SECONDS = 60.0  # a folder this old whose lock nobody holds belongs to a dead process
FAN_IN = 16  # runs merged at once
MIN_CHUNK_ROWS = 1024


class ScratchDir:
    """A private temporary folder for one piece of work; removed on exit, also on error.

    Created (mode 0700) in ``parent`` (default: the system's temporary folder, ``TMPDIR``). The
    folder holds a lock file that stays locked while the work runs; on entry, folders of this
    kind whose lock nobody holds (a killed process) and that are older than
    :data:`ABANDONED_AFTER_SECONDS` are removed.
    """

    def __init__(self, parent: str | os.PathLike[str] | None = None, prefix: str = SCRATCH_PREFIX) -> None:
        self.parent = Path(parent) if parent is not None else Path(tempfile.gettempdir())
        self.prefix = prefix
        self._path: Path | None = None
        self._lock: int | None = None
        self._count = 0

    @property
    def path(self) -> Path:
        if self._path is None:
            raise RuntimeError("ScratchDir is used outside its 'with' block")
        return self._path

    def __enter__(self) -> ScratchDir:
        self.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned(self.parent, self.prefix)
        path = Path(tempfile.mkdtemp(prefix=self.prefix, dir=self.parent))
        lock = os.open(path / LOCK_NAME, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        self._path, self._lock = path, lock
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        path, lock = self._path, self._lock
        self._path = self._lock = None
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)
        if lock is not None:
            os.close(lock)

    def new_path(self, stem: str) -> Path:
        """A fresh path inside the folder (nothing is created)."""
        self._count += 1
        return self.path / f"{self._count:06d}-{stem}"


def remove_abandoned(parent: Path, prefix: str = SCRATCH_PREFIX) -> list[Path]:
    """Remove scratch folders in ``parent`` whose owner is gone; returns what was removed."""
    removed: list[Path] = []
    try:
        entries = [e for e in os.scandir(parent) if e.name.startswith(prefix)]
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        try:
            if not entry.is_dir(follow_symlinks=False) or now - entry.stat(follow_symlinks=False).st_mtime < (
                ABANDONED_AFTER_SECONDS
            ):
                continue
            lock = os.open(Path(entry.path) / LOCK_NAME, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            lock = None  # no lock file: its creator died before making one
        except OSError:
            continue  # not ours (another user's), or gone meanwhile
        try:
            if lock is not None:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                log.warning("scratch folder %s: cannot check its lock (%s); left alone", entry.path, exc)
            continue  # in use
        finally:
            if lock is not None:
                os.close(lock)
        shutil.rmtree(entry.path, ignore_errors=True)
        log.info("removed the scratch folder %s left by a process that is gone", entry.path)
        removed.append(Path(entry.path))
    return removed


def release_memory() -> None:
    """Hand memory freed by a finished phase back to the operating system.

    Arrow's pool and the C heap keep freed pages for reuse; after a phase that freed a batch's
    worth of memory, the next phase (of other sizes) would otherwise add to it, and the peak would
    creep up with the number of batches. Cheap (milliseconds); glibc only for the C heap.
    """
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _malloc_trim() -> Callable[[int], int] | None:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


_MALLOC_TRIM = _malloc_trim()


# --------------------------------------------------------------------------- runs
class RunFile:
    """A sorted run on local disk (Arrow IPC file format), read back one record batch at a time."""

    def __init__(self, path: Path, rows: int, row_bytes: int) -> None:
        self.path = path
        self.rows = rows
        self.row_bytes = row_bytes  # in memory, on average

    def tables(self, columns: Sequence[str] | None = None) -> Iterator[Any]:
        import pyarrow as pa

        with pa.OSFile(str(self.path)) as source:  # read, not mapped: mapped pages would count as resident
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                batch = reader.get_batch(i)
                yield pa.Table.from_batches([batch if columns is None else batch.select(list(columns))])

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)


def write_run(path: Path, tables: Iterable[Any], schema: Any, chunk_rows: int) -> RunFile:
    """Write ``tables`` (already in order) as a run of record batches of at most ``chunk_rows`` rows."""
    import pyarrow as pa

    rows = nbytes = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for table in tables:
            if table.num_rows:
                writer.write_table(table, max_chunksize=chunk_rows)
                rows += table.num_rows
                nbytes += table.nbytes
    return RunFile(path, rows, nbytes // max(1, rows))


def sort_table(table: Any, keys: Sequence[str]) -> Any:
    """``table`` sorted by ``keys`` (ascending, lexicographic)."""
    import pyarrow.compute as pc

    if table.num_rows < 2:
        return table
    return table.take(pc.sort_indices(table, sort_keys=[(k, "ascending") for k in keys]))


def merge(sources: Sequence[Iterable[Any]], keys: Sequence[str]) -> Iterator[Any]:
    """Merge sorted streams of tables (each sorted by ``keys``) into one sorted stream of tables.

    Each round takes, from every stream's current table, the rows up to the smallest of their
    last keys, sorts those together and yields them; so at most one table per stream is held.
    Rows with equal keys keep no particular order between streams: make the keys total.
    """
    iterators = [iter(s) for s in sources]
    heads: list[Any] = [_next_rows(it) for it in iterators]
    while True:
        live = [i for i, head in enumerate(heads) if head is not None]
        if not live:
            return
        if len(live) == 1:
            only = live[0]
            while heads[only] is not None:
                yield heads[only]
                heads[only] = _next_rows(iterators[only])
            return
        bound = min(_last_key(heads[i], keys) for i in live)
        parts = []
        for i in live:
            head = heads[i]
            taken = _count_up_to(head, keys, bound)
            if taken:
                parts.append(head.slice(0, taken))
            heads[i] = head.slice(taken) if taken < head.num_rows else _next_rows(iterators[i])
        if len(parts) == 1:
            yield parts[0]
        else:
            import pyarrow as pa

            yield sort_table(pa.concat_tables(parts), keys)


def _next_rows(iterator: Iterator[Any]) -> Any:
    for table in iterator:
        if table.num_rows:
            return table
    return None


def _last_key(table: Any, keys: Sequence[str]) -> tuple[Any, ...]:
    last = table.num_rows - 1
    return tuple(table.column(k)[last].as_py() for k in keys)


def _count_up_to(table: Any, keys: Sequence[str], bound: tuple[Any, ...]) -> int:
    """How many leading rows of a sorted table are <= ``bound`` (lexicographic over ``keys``)."""
    import pyarrow.compute as pc

    if _last_key(table, keys) <= bound:
        return int(table.num_rows)
    if _first_key(table, keys) > bound:
        return 0
    import pyarrow as pa

    last = table.column(keys[-1])
    mask = pc.less_equal(last, pa.scalar(bound[-1], last.type))
    for key, value in zip(reversed(keys[:-1]), reversed(bound[:-1]), strict=True):
        column = table.column(key)
        scalar = pa.scalar(value, column.type)  # typed: a uint64 above 2**63 is no int64
        mask = pc.or_(pc.less(column, scalar), pc.and_(pc.equal(column, scalar), mask))
    return int(pc.sum(mask).as_py() or 0)


def _first_key(table: Any, keys: Sequence[str]) -> tuple[Any, ...]:
    return tuple(table.column(k)[0].as_py() for k in keys)


class ExternalSorter:
    """Sort more rows than fit in memory: buffer, write sorted runs, merge them back.

    ``add`` buffers tables until ``memory_bytes`` are held, then writes them as one sorted run.
    :meth:`sorted` yields every row in order, merging at most :data:`FAN_IN` runs at once and
    reading each ``chunk_rows`` rows at a time, so it holds about ``memory_bytes``. Rows that
    never left the buffer are sorted in memory (small inputs never touch the disk). ``tag`` marks
    which runs hold rows of one source, so that :meth:`sorted` can read only those.
    """

    def __init__(
        self, scratch: ScratchDir, keys: Sequence[str], memory_bytes: int, *, name: str = "run", fan_in: int = FAN_IN
    ) -> None:
        if not keys:
            raise ValueError("ExternalSorter needs at least one sort key")
        self.scratch = scratch
        self.keys = list(keys)
        self.memory_bytes = max(1, memory_bytes)
        self.name = name
        self.fan_in = max(2, fan_in)
        self.schema: Any = None
        self.runs: list[RunFile] = []
        self._run_tags: list[set[Any]] = []
        self._buffer: list[Any] = []
        self._buffer_tags: set[Any] = set()
        self._buffered = 0
        self.rows = 0

    def add(self, table: Any, tag: Any = None) -> None:
        if table.num_rows == 0:
            return
        if self.schema is None:
            self.schema = table.schema
        elif not table.schema.equals(self.schema, check_metadata=False):
            table = table.cast(self.schema)
        self._buffer.append(table)
        self._buffer_tags.add(tag)
        self._buffered += table.nbytes
        self.rows += table.num_rows
        if self._buffered >= self.memory_bytes:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered as one run."""
        if not self._buffer:
            return
        import pyarrow as pa

        table = pa.concat_tables(self._buffer).combine_chunks()  # one buffered table: no copy
        self._buffer, self._buffered = [], 0
        chunk = self.chunk_rows(table.nbytes // table.num_rows)
        path = self.scratch.new_path(f"{self.name}.arrow")
        self.runs.append(write_run(path, _sorted_slices(table, self.keys, chunk), self.schema, chunk))
        self._run_tags.append(self._buffer_tags)
        self._buffer_tags = set()

    def chunk_rows(self, row_bytes: int) -> int:
        """Rows per record batch of a run: a merge of ``fan_in`` runs then holds about ``memory_bytes``."""
        return max(MIN_CHUNK_ROWS, self.memory_bytes // self.fan_in // max(1, row_bytes))

    def filter_buffer(self, keep: Callable[[Any], Any]) -> None:
        """Keep only the buffered rows where ``keep(table)`` (a boolean mask) is true."""
        kept = [t.filter(keep(t)) for t in self._buffer]
        self.rows -= sum(t.num_rows for t in self._buffer) - sum(t.num_rows for t in kept)
        self._buffer = [t for t in kept if t.num_rows]
        self._buffered = sum(t.nbytes for t in self._buffer)

    def runs_with(self, tag: Any) -> int:
        """How many runs (counting the buffer as one) hold rows added with ``tag``."""
        return sum(tag in tags for tags in self._run_tags) + (tag in self._buffer_tags and bool(self._buffer))

    def sorted(
        self,
        *,
        columns: Sequence[str] | None = None,
        tag: Any = None,
        keep: Callable[[Any], Any] | None = None,
    ) -> Iterator[Any]:
        """Every row in order of the keys, as tables; the sorter can be read again.

        ``columns``: only these (they must include the keys); ``tag``: only the runs that hold
        rows added with this tag (and the buffer); ``keep(table)``: a boolean mask of the rows to
        yield.
        """
        import pyarrow as pa

        selected = [run for run, tags in zip(self.runs, self._run_tags, strict=True) if tag is None or tag in tags]
        rounds: list[RunFile] = []  # runs merged in rounds by this call, removed when it ends
        try:
            while len(selected) + bool(self._buffer) > self.fan_in:  # too many runs to merge at once
                group, selected = selected[: self.fan_in], selected[self.fan_in :]
                schema = self.schema if columns is None else pa.schema([self.schema.field(c) for c in columns])
                row_bytes = max(run.row_bytes for run in group)
                path = self.scratch.new_path(f"{self.name}-round.arrow")
                merged = merge([run.tables(columns) for run in group], self.keys)
                rounds.append(write_run(path, merged, schema, self.chunk_rows(row_bytes)))
                selected.append(rounds[-1])
            share = self.memory_bytes // max(1, len(selected) + bool(self._buffer))  # of the memory, per source
            sources: list[Iterable[Any]] = [
                _coalesced(run.tables(columns), max(1, share // max(1, run.row_bytes))) for run in selected
            ]
            if self._buffer:
                buffered = sort_table(pa.concat_tables(self._buffer), self.keys)
                if columns is not None:
                    buffered = buffered.select(list(columns))
                sources.append(_slices(buffered, self.chunk_rows(buffered.nbytes // buffered.num_rows)))
            for table in merge(sources, self.keys):
                if keep is not None:
                    table = table.filter(keep(table))
                if table.num_rows:
                    yield table
        finally:
            for run in rounds:
                run.delete()

    def delete(self) -> None:
        for run in self.runs:
            run.delete()
        self.runs, self._run_tags = [], []
        self._buffer, self._buffer_tags, self._buffered = [], set(), 0
        self.rows = 0


def _sorted_slices(table: Any, keys: Sequence[str], rows: int) -> Iterator[Any]:
    """``table`` sorted by ``keys``, ``rows`` rows at a time: the sorted copy is never made whole."""
    import pyarrow.compute as pc

    if table.num_rows < 2:
        yield table
        return
    order = pc.sort_indices(table, sort_keys=[(k, "ascending") for k in keys])
    for start in range(0, table.num_rows, rows):
        yield table.take(order.slice(start, rows))


def _coalesced(tables: Iterable[Any], rows: int) -> Iterator[Any]:
    """Consecutive tables joined until each holds at least ``rows`` rows (fewer, larger merge rounds)."""
    import pyarrow as pa

    held: list[Any] = []
    count = 0
    for table in tables:
        held.append(table)
        count += table.num_rows
        if count >= rows:
            yield held[0] if len(held) == 1 else pa.concat_tables(held)
            held, count = [], 0
    if held:
        yield held[0] if len(held) == 1 else pa.concat_tables(held)


def _slices(table: Any, rows: int) -> Iterator[Any]:
    for start in range(0, table.num_rows, rows):
        yield table.slice(start, rows)
