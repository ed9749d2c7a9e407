"""Stage 1: ingest files from the drop zone (or rows from a SQL table) into a dataset version.

Every file is validated against the dataset contract. Accepted rows become one new immutable,
content-addressed dataset version; rejected rows and files go to quarantine with their reason.

Hostile input is expected (the paths come from asset events anyone with API access can post):

* Paths must name entries directly inside the drop zone; otherwise :class:`UntrustedPath` is
  raised before anything is opened, moved or copied (see :mod:`mlops_core.delivered_files`).
* Whatever one file holds, the worst outcome is that file's quarantine with a reason: links and
  other non-regular entries (``not_regular_file``, never followed), files above the size limit
  (``too_large``), and any exception while parsing or validating (``unreadable``, with the
  exception's type and message). The rest of the batch is ingested.
* Names are kept losslessly but escaped (:func:`~mlops_core.delivered_files.escape_name`) in
  the manifest, the ``_source`` column, quarantine records and the report.
* A file that changed after it was read (a writer still appending) is not committed in part:
  it is left in the drop zone for the next run (``deferred``, with the reason
  ``changed_while_ingesting`` in the report). If it changes later, between the commit and the
  move to the archive, the bytes that were not parsed are quarantined as raw evidence (kind
  ``unparsed_tail``) and the archive keeps every byte.

Order of the writes, so that a crash or an error at any point is repaired by re-running the
same run: (1) everything is read and validated, nothing written; (2) the version (its manifest
is the commit point); (3) the quarantine records; (4) the source ledger; (5) the moves to the
archive. A file that the ledger says this very run consumed is processed again by a retry, so
the retry ends exactly like the first attempt.

Memory does not grow with the files: each file is copied from its checked descriptor into a
local scratch folder (hashed on the way; every later pass reads that copy, so what is parsed is
what was hashed), read and validated in batches of ``dataset.ingest_batch_mb``, its accepted rows
staged in sorted runs and its rejected rows in a local Parquet file; the commit merges the runs
(:meth:`~mlops_core.datasets.DatasetStore.commit_version`). The scratch folder
(``dataset.ingest_scratch_dir``, default the system's temporary folder) is local, not a store
write; it is removed when the run ends, also on error, and one left by a killed worker is
removed by the next run.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_core.backends import drop_source
from mlops_core.delivered_files import (
    MAX_FILE_BYTES,
    FileRejected,
    FileSnapshot,
    UntrustedPath,
)
from mlops_core.spill import ScratchDir, release_memory

if TYPE_CHECKING:
    import pandas as pd

    from mlops_core.backends import Backends
    from mlops_core.contract import DatasetContract
    from mlops_core.dataset_catalog import DatasetCatalog
    from mlops_core.datasets import DatasetStore, RowsFile, StagedRows
    from mlops_core.drop_source import DropSource
    from mlops_core.settings import Settings

__all__ = ["MAX_FILE_BYTES", "UNLEDGERED_REASONS", "UntrustedPath", "ingest_files", "ingest_sql"]

log = logging.getLogger(__name__)

# File rejects that say nothing about the content against the contract. Such files are not
# remembered in the source ledger: the same bytes delivered again are looked at again.
UNLEDGERED_REASONS = frozenset({"too_large", "not_regular_file", "unreadable"})
CHANGED_WHILE_INGESTING = "changed_while_ingesting"
_MAX_DETAIL = 500  # characters of an unexpected exception's message kept in a reason
# The staged rows (and the commit's merge of them) hold 1/STAGING_SHARE of ``dataset.ingest_batch_mb``:
# they live next to a batch of text and the slice being validated, and typed rows with their key
# columns take more room than their text; so the whole run stays within about 3x one batch.
STAGING_SHARE = 4


@dataclass
class _Quarantine:
    """A quarantine record to write once the version is committed; ``key`` is set when written."""

    source: str
    rejected: pd.DataFrame | RowsFile | None
    reason: str
    raw: bytes | Path | None  # bytes, or a local file holding them
    kind: str
    content_sha256: str | None
    details: dict[str, Any] = field(default_factory=dict)
    key: str | None = None

    def write(self, store: DatasetStore, run_id: str) -> str:
        self.key = store.quarantine(
            run_id,
            self.source,
            self.rejected,
            self.reason,
            self.raw,
            kind=self.kind,
            content_sha256=self.content_sha256,
            details=self.details,
        )
        return self.key


@dataclass
class _Outcome:
    """What became of one drop-zone entry in this run."""

    name: str  # as os gives it
    shown: str  # escaped
    status: str  # accepted | rejected | duplicate_file | deferred
    snapshot: FileSnapshot | None = None
    validated: _Validated | None = None
    rejected: FileRejected | None = None
    raw: Path | None = None  # the local copy of a file quarantined whole
    evidence: str = ""
    seen_in: str | None = None
    archive: bool = True
    note: str = ""
    quarantine: _Quarantine | None = None
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str | None:
        return None if self.snapshot is None else self.snapshot.sha256


@dataclass
class _Validated:
    """What validating one file gave: its staged source, its counts, its rejected rows (a local file)."""

    source: int  # in StagedRows
    rows_accepted: int
    rows_rejected: int
    reasons: dict[str, int]
    rejected: RowsFile | None


def ingest_files(
    settings: Settings,
    files: list[str],
    backends: Backends,
    *,
    run_id: str,
    ingested_at: str,
    max_file_bytes: int | None = None,
    source: DropSource | None = None,
) -> dict[str, Any]:
    """Validate and commit ``files`` (paths of entries in the drop zone). Returns the ingestion report.

    ``source`` is the drop zone (:class:`~mlops_core.drop_source.DropSource`: a local folder,
    an S3 prefix); ``None`` builds the local one of ``settings.dataset.drop_zone``. A consumed
    entry is marked by the source (moved to the run's archive, or tagged) after the commit.

    The version, quarantine and ledger go to ``backends.store``; a committed version is registered
    with ``backends.catalog`` before anything is recorded or archived (a retry after a catalog
    failure reads the same files, finds the version committed and registers it again).

    ``ingested_at`` is the run's logical time (ISO 8601); it is the event time of rows whose
    contract has no event-time column, so a re-run produces identical rows. ``max_file_bytes``
    limits a delivered file and its decoded content (gzip output, Parquet values); default
    ``dataset.max_file_mb`` of the settings.

    The report holds ``dataset, run_id, version_id, created, rows, rejected_rows,
    duplicate_rows, sources, reason, files`` (+ ``event_time_min/max`` with a version) and
    ``files_quarantined``, ``quarantined_files``, ``deferred_files``; every name is escaped.

    Raises:
        UntrustedPath: a path is not an entry directly inside the drop zone; raised before
            anything is read, moved or copied. Retrying does not help.
    """
    import pandas as pd

    from mlops_core.datasets import DatasetStore, StagedRows, safe_key_part
    from mlops_core.validation import check_contract

    if max_file_bytes is None:
        max_file_bytes = settings.dataset.max_file_mb * 1024 * 1024
    zone = source if source is not None else drop_source(settings)
    names = zone.names_of(files)  # refuses untrusted paths before anything is touched
    contract = _load_contract(settings)
    check_contract(contract)  # a broken contract fails the task; it is no file's fault
    store = DatasetStore(backends.store, contract.name)
    run_key = safe_key_part(run_id)
    ts = _utc(pd.Timestamp(ingested_at))
    batch_bytes = settings.dataset.ingest_batch_mb * 1024 * 1024

    with ScratchDir(settings.dataset.ingest_scratch_dir) as scratch:  # local copies and spilled rows
        staged = StagedRows(scratch, memory_bytes=batch_bytes // STAGING_SHARE)
        reading = _Reading(zone, store, contract, ts, run_id, max_file_bytes, batch_bytes, scratch, staged)

        # (1) Read and validate everything; nothing is written to the store yet.
        outcomes: list[_Outcome] = []
        with zone:
            for name in names:
                outcome = reading.examine(name)
                if outcome is not None:
                    outcomes.append(outcome)
            for outcome in outcomes:  # a writer still at it: leave the file for the next run
                if outcome.sha256 is not None:
                    _check_unchanged(zone, outcome, staged)

        # (2)-(4) Commit, quarantine, ledger.
        sources: list[dict[str, Any]] = []
        pending: list[_Quarantine] = []
        rejected_rows = 0
        for outcome in outcomes:
            _plan(outcome, sources, pending)
            if outcome.validated is not None:
                rejected_rows += outcome.validated.rows_rejected
        report, duplicates_by_source = _commit(
            store,
            backends.catalog,
            contract,
            staged,
            sources,
            run_id,
            ts,
            rejected_rows,
            pending,
            reading.earlier_attempts,
        )

    # (5) Archive only after the version, the quarantine and the ledger are durable.
    for outcome in outcomes:
        if outcome.status != "deferred" and outcome.archive:
            _archive_and_verify(store, run_id, zone, outcome, run_key, max_file_bytes)

    for outcome in outcomes:
        entry = outcome.report
        if outcome.quarantine is not None:
            entry["quarantine"] = outcome.quarantine.key
        if outcome.status == "accepted":
            entry["rows_duplicate"] = duplicates_by_source.get(outcome.shown, 0)
    report["files"] = [o.report for o in outcomes]
    quarantined = [o.shown for o in outcomes if o.status in ("rejected", "duplicate_file")]
    report["files_quarantined"] = len(quarantined)
    report["quarantined_files"] = quarantined
    report["deferred_files"] = [o.shown for o in outcomes if o.status == "deferred"]
    return report


class _Reading:
    """Step (1) of a run: read and validate each entry, staging accepted rows; nothing goes to the store."""

    def __init__(
        self,
        zone: DropSource,
        store: DatasetStore,
        contract: DatasetContract,
        ts: pd.Timestamp,
        run_id: str,
        max_file_bytes: int,
        batch_bytes: int,
        scratch: ScratchDir,
        staged: StagedRows,
    ) -> None:
        self.zone = zone
        self.store = store
        self.contract = contract
        self.ts = ts
        self.run_id = run_id
        self.max_file_bytes = max_file_bytes
        self.batch_bytes = batch_bytes
        self.scratch = scratch
        self.staged = staged
        self.first_of: dict[str, str] = {}  # checksum -> first file of this batch with it
        self.earlier_attempts: set[str] = set()  # versions an earlier attempt of this run committed

    def examine(self, name: str) -> _Outcome | None:
        """Read and validate one entry; never raises for anything the entry holds. None: it is gone."""
        from mlops_core.datasets import QUARANTINED

        copy = self.scratch.new_path("delivered")
        delivered = self.zone.copy(name, copy, max_bytes=self.max_file_bytes)
        if delivered is None:
            log.info("%s is gone (already archived by an earlier try?); skipping", name)
            return None
        shown = delivered.shown
        if delivered.rejected is not None:
            log.warning("%s rejected: %s", shown, delivered.rejected)
            return _Outcome(
                name,
                shown,
                "rejected",
                snapshot=delivered.snapshot,
                rejected=delivered.rejected,
                evidence=delivered.evidence,
            )
        snapshot = delivered.snapshot
        assert snapshot is not None and snapshot.sha256 is not None  # noqa: S101 - copy() contract
        sha = snapshot.sha256
        if sha in self.first_of:
            copy.unlink()
            seen_in = f"this batch ({self.first_of[sha]})"
            return _Outcome(name, shown, "duplicate_file", snapshot=snapshot, seen_in=seen_in)
        self.first_of[sha] = shown
        record = self.store.source_record(sha)
        if record is not None and record.get("run_id") == self.run_id and record.get("consumed_by") != QUARANTINED:
            self.earlier_attempts.add(str(record["consumed_by"]))
        if record is not None and not (record.get("run_id") == self.run_id and record.get("key") == shown):
            # Consumed by an earlier run, or by this run under another name (a retry whose first
            # attempt archived that file): the same words as the first attempt used.
            copy.unlink()
            seen_in = (
                f"this batch ({record.get('key')})"
                if record.get("run_id") == self.run_id
                else str(record["consumed_by"])
            )
            return _Outcome(name, shown, "duplicate_file", snapshot=snapshot, seen_in=seen_in)
        try:
            validated = self._validate(copy, shown)
        except FileRejected as exc:
            log.warning("%s rejected: %s", shown, exc)
            return _Outcome(name, shown, "rejected", snapshot=snapshot, rejected=exc, raw=copy)
        except Exception as exc:  # whatever one file holds, it must not stop the batch
            detail = str(exc)
            detail = detail if len(detail) <= _MAX_DETAIL else detail[: _MAX_DETAIL - 3] + "..."
            log.exception("%s could not be read or validated; quarantining it", shown)
            rejected = FileRejected(
                "unreadable",
                f"{shown}: could not be read or validated ({type(exc).__name__}: {detail}); the file is quarantined "
                "and the rest of the batch goes on. Report this message: it is a limit or a defect of the ingest code",
            )
            return _Outcome(name, shown, "rejected", snapshot=snapshot, rejected=rejected, raw=copy)
        copy.unlink()
        log.info("%s: %d row(s) accepted, %d rejected", shown, validated.rows_accepted, validated.rows_rejected)
        return _Outcome(name, shown, "accepted", snapshot=snapshot, validated=validated)

    def _validate(self, path: Path, shown: str) -> _Validated:
        """Validate the local copy batch by batch into the staged rows and a rejected-rows file.

        A repeat of a row of an earlier batch of the same file must be rejected as validate
        rejects a repeat within a batch (``duplicate_row`` pointing at the first row). Keeping
        every key of the file in memory to spot them would grow with the file, so the staged
        rows are checked instead; when some key was accepted in two batches, the file is read
        again remembering exactly those keys across batches (rare: a file that repeats its rows).
        """
        from mlops_core.datasets import QuarantineRows
        from mlops_core.validation import RESTART, validate_batches

        remember: Any = None
        for _ in range(2):
            source = self.staged.new_source()
            rejected = QuarantineRows(self.scratch.new_path("rejected.parquet"))
            accepted = rejected_n = offset = 0
            reasons: Counter[str] = Counter()
            try:
                for part in validate_batches(
                    path,
                    shown,
                    self.contract,
                    self.ts,
                    max_decoded_bytes=self.max_file_bytes,
                    batch_bytes=self.batch_bytes,
                    seen_keys=remember,
                ):
                    if part is RESTART:  # the file is read again from its start: forget this attempt
                        source = self.staged.replace(source)
                        rejected.reset()
                        accepted = rejected_n = offset = 0
                        reasons.clear()
                        continue
                    self.staged.add(source, part.accepted_rows, _accepted_row_numbers(part, offset))
                    rejected.add(part.rejected)
                    offset += part.accepted_rows.num_rows + len(part.rejected)
                    accepted += part.accepted_rows.num_rows
                    rejected_n += len(part.rejected)
                    reasons.update(part.reason_counts)
                    del part
                    release_memory()  # the batch is staged: its memory goes back before the next one
            except BaseException:
                self.staged.discard(source)
                rejected.reset()
                raise
            repeated = self.staged.repeated_keys(source)
            if not repeated:
                return _Validated(source, accepted, rejected_n, dict(sorted(reasons.items())), rejected.close())
            log.info("%s: %d row key(s) accepted in two batches; reading it again", shown, len(repeated))
            self.staged.discard(source)
            rejected.reset()
            remember = _remember_only(repeated)
        raise RuntimeError(f"{shown}: rows repeated across batches were still accepted after a second reading")


def _remember_only(keys: set[str]) -> Any:
    """``seen_keys`` for validate that keeps, across batches, only ``keys`` (the ones repeated across batches).

    A :class:`~mlops_core.validation.SeenRowKeys` as validate uses it (``record`` a batch, then the
    ``first_rows`` of its keys): every key of the current batch is known (for repeats within it),
    but only ``keys`` are kept for the batches after it, so memory does not grow with the file.
    """
    from mlops_core.validation import SeenRowKeys

    class RememberOnly(SeenRowKeys):
        def __init__(self) -> None:
            super().__init__()
            self.only = frozenset(keys)
            self.kept: dict[str, int] = {}  # key -> first data row number in the file
            self.batch: dict[str, int] = {}  # key -> first data row number in the current batch

        def __len__(self) -> int:
            return len(self.kept)

        def __contains__(self, key: object) -> bool:
            return key in self.kept or key in self.batch

        def clear(self) -> None:
            self.kept.clear()
            self.batch.clear()

        def record(self, batch_keys: list[str], numbers: Any) -> int:
            batch: dict[str, int] = {}
            for key, number in zip(batch_keys, numbers.tolist(), strict=True):
                batch.setdefault(key, number)
            new = sum(1 for key in batch if key not in self.kept)
            for key, number in batch.items():
                if key in self.only:
                    self.kept.setdefault(key, number)
            self.batch = batch
            return new

        def get(self, key: str, default: int | None = None) -> int | None:
            return self.kept.get(key, self.batch.get(key, default))

        def first_rows(self, batch_keys: list[str]) -> Any:
            import numpy as np

            first = [self.kept[k] if k in self.kept else self.batch[k] for k in batch_keys]
            return np.array(first, dtype=np.int64)

    return RememberOnly()


def _accepted_row_numbers(part: Any, offset: int) -> Any:
    """Data row numbers of a batch's accepted rows: the batch's rows that were not rejected, in order."""
    import numpy as np

    from mlops_core.validation import ROW_NUMBER_COLUMN

    total = part.accepted_rows.num_rows + len(part.rejected)
    numbers = np.arange(offset + 1, offset + total + 1, dtype=np.int64)
    if len(part.rejected):
        numbers = np.setdiff1d(numbers, part.rejected[ROW_NUMBER_COLUMN].to_numpy(dtype=np.int64), assume_unique=True)
    if len(numbers) != part.accepted_rows.num_rows:
        raise RuntimeError(f"{part.source}: rejected row numbers do not fit the batch's rows")
    return numbers


def _check_unchanged(zone: DropSource, outcome: _Outcome, staged: StagedRows) -> None:
    """Defer a file that changed since it was read; note one that was replaced or removed."""
    assert outcome.snapshot is not None  # noqa: S101 - only called for files that were read
    change = zone.change_since(outcome.name, outcome.snapshot)
    if change is None:
        return
    if change == "changed":
        message = (
            f"{CHANGED_WHILE_INGESTING}: {outcome.shown} changed after it was read ({outcome.snapshot.size} bytes "
            "read); a writer is still at it. Nothing of it was committed; it stays in the drop zone for the next run"
        )
        log.warning("%s", message)
        outcome.status = "deferred"
        if outcome.validated is not None:
            staged.discard(outcome.validated.source)
        outcome.validated = None
        outcome.rejected = None
        outcome.report = {"file": outcome.shown, "status": "deferred", "reason": message}
        return
    # Replaced by another file, or removed: what was read is complete and is ingested; the new
    # file (if any) is not archived, so the next run reads it.
    outcome.archive = False
    outcome.note = (
        "replaced by another file after it was read; the new file is left for the next run"
        if change == "replaced"
        else "removed from the drop zone after it was read"
    )
    log.warning("%s: %s", outcome.shown, outcome.note)


def _plan(outcome: _Outcome, sources: list[dict[str, Any]], pending: list[_Quarantine]) -> None:
    """The source entry, quarantine record and report entry of one outcome."""
    shown, sha = outcome.shown, outcome.sha256
    if outcome.status == "deferred":
        return
    if outcome.status == "duplicate_file":
        reason = f"duplicate_file: same bytes already ingested ({outcome.seen_in})"
        log.warning("%s: identical content already ingested (%s); not counted again", shown, outcome.seen_in)
        outcome.quarantine = _Quarantine(shown, None, reason, None, "file", sha, {"reason_code": "duplicate_file"})
        pending.append(outcome.quarantine)
        sources.append({"key": shown, "sha256": sha, "status": "duplicate", "rows_accepted": 0, "rows_rejected": 0})
        outcome.report = {"file": shown, "status": "duplicate_file", "seen_in": outcome.seen_in}
        return
    if outcome.status == "rejected":
        exc = outcome.rejected
        assert exc is not None  # noqa: S101 - set with the status
        identity = sha or hashlib.sha256(outcome.evidence.encode("utf-8", "surrogatepass")).hexdigest()
        details = {"reason_code": exc.reason, **({"evidence": outcome.evidence} if outcome.evidence else {})}
        outcome.quarantine = _Quarantine(shown, None, f"{exc.reason}: {exc}", outcome.raw, "file", identity, details)
        pending.append(outcome.quarantine)
        sources.append(
            {
                "key": shown,
                "sha256": sha,
                "status": "quarantined",
                "reason": exc.reason,
                "rows_accepted": 0,
                "rows_rejected": 0,
            }
        )
        outcome.report = {"file": shown, "status": "rejected", "reason_code": exc.reason, "reason": str(exc)}
        return
    validated = outcome.validated
    assert validated is not None  # noqa: S101 - set with the status
    n_ok, n_bad = validated.rows_accepted, validated.rows_rejected
    reasons = validated.reasons if n_bad else {}
    if n_bad:
        outcome.quarantine = _Quarantine(
            shown, validated.rejected, f"{n_bad} row(s) rejected: {reasons}", None, "file", sha, {"reason_code": "rows"}
        )
        pending.append(outcome.quarantine)
        log.warning("%s: %d row(s) to quarantine: %s", shown, n_bad, reasons)
    sources.append({"key": shown, "sha256": sha, "status": "accepted", "rows_accepted": n_ok, "rows_rejected": n_bad})
    outcome.report = {
        "file": shown,
        "status": "accepted",
        "rows_in": n_ok + n_bad,
        "rows_accepted": n_ok,
        "rows_rejected": n_bad,
        "reasons": reasons,
    }
    if outcome.note:
        outcome.report["note"] = outcome.note


def _archive_and_verify(
    store: DatasetStore, run_id: str, zone: DropSource, outcome: _Outcome, run_key: str, max_file_bytes: int
) -> None:
    """Mark the entry consumed (archive or tag); quarantine any bytes the archived file has beyond what was parsed."""
    snapshot = outcome.snapshot
    consumed = zone.consume(outcome.name, snapshot, run_key, max_bytes=max_file_bytes)
    if consumed is None or snapshot is None or snapshot.sha256 is None:
        return
    outcome.report["archived_as"] = consumed.archived_as  # where this attempt moved it (escaped)
    extra = consumed.extra
    # What the last check saw: bytes a writer still holding the file open adds after this point
    # land in the archive (nothing is lost) but in no record; the arrival rules exist for that.
    outcome.report["archived_bytes"] = snapshot.size if extra is None else extra.archived_size
    if extra is None:
        return
    what = (
        "was replaced or rewritten after it was read: the archived file is not what was ingested"
        if extra.whole_file
        else f"grew from {snapshot.size} to {extra.archived_size} bytes after it was read"
    )
    reason = (
        f"{CHANGED_WHILE_INGESTING}: {outcome.shown} {what}; the {len(extra.data)} byte(s) not ingested are kept "
        "here as raw evidence (and the archive keeps the whole file). Deliver them again as a new file"
    )
    log.warning("%s", reason)
    tail = _Quarantine(
        outcome.shown,
        None,
        reason,
        extra.data,
        "unparsed_tail",
        extra.sha256,
        {"reason_code": CHANGED_WHILE_INGESTING, "parsed_bytes": snapshot.size, "parsed_sha256": snapshot.sha256},
    )
    outcome.report["unparsed_bytes"] = len(extra.data)
    outcome.report["unparsed_quarantine"] = tail.write(store, run_id)


def ingest_sql(
    settings: Settings,
    fetch_batch: Callable[[str, str, Any, int], pd.DataFrame],
    backends: Backends,
    *,
    run_id: str,
    ingested_at: str,
) -> dict[str, Any]:
    """Ingest rows of the configured SQL table newer than the stored watermark.

    ``fetch_batch(table, watermark_column, after, limit) -> DataFrame`` reads rows with
    ``watermark_column > after`` ordered by it (the Airflow layer passes a common-sql hook's
    reader). The new watermark is stored only after the version is committed; rows at the
    watermark boundary that are read twice are dropped by the row-key de-duplication.
    """
    import pandas as pd

    from mlops_core.datasets import DatasetStore, StagedRows
    from mlops_core.validation import validate

    src = settings.dataset.sql_source
    if src is None:
        raise ValueError("dataset.sql_source is not configured in include/conf/<env>.yaml")
    contract = _load_contract(settings)
    store = DatasetStore(backends.store, contract.name)
    state_name = f"sql-{src.conn_id}-{src.table}"
    after = store.watermark(state_name)
    ts = _utc(pd.Timestamp(ingested_at))

    raw = fetch_batch(src.table, src.watermark_column, after, src.batch_size)
    log.info("Read %d row(s) from %s after %s=%r", len(raw), src.table, src.watermark_column, after)
    if raw.empty:
        return {
            "dataset": contract.name,
            "created": False,
            "rows": 0,
            "rejected_rows": 0,
            "watermark": after,
            "reason": "no new rows",
        }
    if len(raw) >= src.batch_size:
        # A full batch may have cut the rows sharing the last watermark value in two: leave them
        # all for the next run, so that no row is skipped by the strict ``>`` of the next read.
        last = raw[src.watermark_column].max()
        trimmed = raw[raw[src.watermark_column] != last]
        if trimmed.empty:
            raise ValueError(
                f"{src.batch_size} rows of {src.table} share {src.watermark_column}={last!r}; "
                "raise dataset.sql_source.batch_size above the largest such group"
            )
        raw = trimmed
    new_watermark = str(raw[src.watermark_column].max())
    source_name = f"sql:{src.table}:{src.watermark_column}>{after}"
    as_text = raw.astype(object).where(raw.notna(), "").astype(str)
    try:
        result = validate(as_text, contract, source=source_name, ingested_at=ts)
    except FileRejected as exc:
        raise ValueError(f"table {src.table} does not match the contract {contract.name}: {exc}") from exc
    pending = []
    if len(result.rejected):
        reasons = result.summary()["reasons"]
        identity = hashlib.sha256(f"{source_name}\n{new_watermark}".encode()).hexdigest()
        pending.append(
            _Quarantine(
                source_name,
                result.rejected,
                f"{len(result.rejected)} row(s) rejected: {reasons}",
                None,
                "sql_rows",
                identity,
                {"reason_code": "rows", "table": src.table},
            )
        )
        log.warning("%s: %d row(s) to quarantine: %s", source_name, len(result.rejected), reasons)
    sources = [
        {
            "key": source_name,
            "sha256": None,
            "status": "accepted",
            "rows_accepted": result.accepted_rows.num_rows,
            "rows_rejected": len(result.rejected),
        }
    ]
    batch_bytes = settings.dataset.ingest_batch_mb * 1024 * 1024
    with ScratchDir(settings.dataset.ingest_scratch_dir) as scratch:
        staged = StagedRows(scratch, memory_bytes=batch_bytes // STAGING_SHARE)
        staged.add(staged.new_source(), result.accepted_rows)
        report, _ = _commit(
            store, backends.catalog, contract, staged, sources, run_id, ts, len(result.rejected), pending
        )
    store.set_watermark(state_name, new_watermark)
    report["watermark"] = new_watermark
    return report


def _commit(
    store: DatasetStore,
    catalog: DatasetCatalog,
    contract: DatasetContract,
    staged: StagedRows,
    sources: list[dict[str, Any]],
    run_id: str,
    ts: pd.Timestamp,
    rejected_rows: int,
    pending: list[_Quarantine],
    earlier_attempts: set[str] | None = None,
) -> tuple[dict[str, Any], dict[str, int]]:
    """Commit the accepted rows, register the version with the catalog, then write the quarantine
    records, then the source ledger (so a catalog failure leaves every source to be read again).

    Returns the report and the number of rows per source left out as duplicates.
    """
    base = {
        "dataset": contract.name,
        "run_id": run_id,
        "rejected_rows": rejected_rows,
        "sources": [s["key"] for s in sources],
    }
    if not staged.rows:
        for record in pending:
            record.write(store, run_id)
        store.record_sources(_new_sources(sources), None, run_id)
        report = {
            **base,
            "created": False,
            "version_id": None,
            "rows": 0,
            "duplicate_rows": 0,
            "reason": "no accepted rows",
        }
        return report, {}
    # commit_version leaves out (and returns, with the reason) rows already in a version and rows
    # repeated across the files of this batch; they are quarantined, never silently dropped.
    result = store.commit_version(
        staged,
        contract,
        sources=sources,
        run_id=run_id,
        created_at=ts.isoformat(),
        earlier_attempts=earlier_attempts or (),
    )
    if result.manifest is not None:  # new, or committed before (a retry): registering is idempotent
        catalog.register_version(result.manifest, store.versions_uri())
    for record in pending:
        record.write(store, run_id)
    dupes = result.duplicate_count
    by_source: dict[str, int] = {}
    if dupes:
        store.quarantine(
            run_id,
            "duplicate-rows",
            result.duplicate_rows if result.duplicate_rows is not None else result.duplicates,
            f"{dupes} duplicate row(s) left out",
            None,
            kind="batch_duplicates",
            content_sha256=result.duplicates_sha256,  # of their row keys, sorted, one per line
            details={"reason_code": "duplicate_row"},
        )
        by_source = dict(result.duplicates_by_source)
    manifest = result.manifest
    version_id = manifest["version_id"] if manifest else None
    store.record_sources(_new_sources(sources), version_id, run_id)
    if manifest is None:
        report = {
            **base,
            "created": False,
            "version_id": None,
            "rows": 0,
            "duplicate_rows": dupes,
            "reason": "every accepted row was already ingested",
        }
        return report, by_source
    report = {
        **base,
        "created": result.created,
        "version_id": version_id,
        "rows": manifest["row_count"],
        "duplicate_rows": dupes,
        "event_time_min": manifest["event_time_min"],
        "event_time_max": manifest["event_time_max"],
        "reason": "new version" if result.created else "version already existed (re-run)",
    }
    return report, by_source


def _new_sources(sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sources to record in the ledger: files seen for the first time, judged on their content.

    Not SQL reads, not duplicates, and not files rejected for a reason that says nothing about
    their content (:data:`UNLEDGERED_REASONS`): those are looked at again when delivered again.
    """
    return [
        s
        for s in sources
        if s.get("sha256") and s["status"] != "duplicate" and s.get("reason") not in UNLEDGERED_REASONS
    ]


def _load_contract(settings: Settings) -> DatasetContract:
    """The dataset contract (what ``Settings.load_contract`` reads, typed)."""
    from mlops_core.contract import DatasetContract

    return DatasetContract.from_yaml(settings.dataset.contract)


def _utc(stamp: pd.Timestamp) -> pd.Timestamp:
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
