"""Stage 1: ingest files from the drop zone (or rows from a SQL table) into a dataset version.

Every file is validated against the dataset contract. Accepted rows become one new immutable,
content-addressed dataset version; rejected rows and files go to quarantine with their reason.
A file's bytes are hashed first: a file (or a byte-identical copy under another name) that was
already consumed is not read again. Consumed files move to the archive only after the version
and the source ledger are committed, so a crash at any point is repaired by simply re-running.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_core.backends import object_store

if TYPE_CHECKING:
    import pandas as pd

    from mlops_core.settings import Settings

log = logging.getLogger(__name__)


def ingest_files(settings: Settings, files: list[str], *, run_id: str, ingested_at: str) -> dict[str, Any]:
    """Validate and commit ``files`` (paths in the drop zone). Returns the ingestion report.

    ``ingested_at`` is the run's logical time (ISO 8601); it is the event time of rows whose
    contract has no event-time column, so a re-run produces identical rows.
    """
    import pandas as pd

    from mlops_core.datasets import DatasetStore, safe_key_part
    from mlops_core.dropzone import archive_file
    from mlops_core.validation import FileRejected, read_source, validate

    contract = settings.load_contract()
    store = DatasetStore(object_store(settings), contract.name)
    drop_zone = Path(settings.dataset.drop_zone)
    archive_dir = drop_zone.parent / f"{drop_zone.name}.archive" / safe_key_part(run_id)
    ts = pd.Timestamp(ingested_at)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")

    accepted_frames: list[pd.DataFrame] = []
    sources: list[dict[str, Any]] = []
    file_reports: list[dict[str, Any]] = []
    rejected_rows = 0
    for path in sorted(files):
        path = Path(path)
        if not path.exists():
            log.info("%s is gone (already archived by an earlier try); skipping", path.name)
            continue
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        seen = store.source_seen(sha)
        if seen:
            log.warning("%s: identical content already ingested (%s); not counted again", path.name, seen)
            file_reports.append({"file": path.name, "status": "duplicate_file", "seen_in": seen})
            store.quarantine(run_id, path.name, None, f"duplicate_file: same bytes already ingested ({seen})", None)
            sources.append(
                {"key": path.name, "sha256": sha, "status": "duplicate", "rows_accepted": 0, "rows_rejected": 0}
            )
            continue
        try:
            raw = read_source(data, path.name)
            result = validate(raw, contract, source=path.name, ingested_at=ts)
        except FileRejected as exc:
            log.warning("%s rejected: %s", path.name, exc)
            key = store.quarantine(run_id, path.name, None, f"{exc.reason}: {exc}", data)
            file_reports.append({"file": path.name, "status": "rejected", "reason": str(exc), "quarantine": key})
            sources.append(
                {"key": path.name, "sha256": sha, "status": "quarantined", "rows_accepted": 0, "rows_rejected": 0}
            )
            continue
        n_ok, n_bad = len(result.accepted), len(result.rejected)
        if n_bad:
            reasons = result.summary()["reasons"]
            key = store.quarantine(run_id, path.name, result.rejected, f"{n_bad} row(s) rejected: {reasons}", None)
            log.warning("%s: %d row(s) quarantined at %s: %s", path.name, n_bad, key, reasons)
        log.info("%s: %d row(s) accepted, %d rejected", path.name, n_ok, n_bad)
        rejected_rows += n_bad
        accepted_frames.append(result.accepted)
        sources.append(
            {"key": path.name, "sha256": sha, "status": "accepted", "rows_accepted": n_ok, "rows_rejected": n_bad}
        )
        file_reports.append(
            {
                "file": path.name,
                "status": "accepted",
                "rows_accepted": n_ok,
                "rows_rejected": n_bad,
                "reasons": result.summary()["reasons"] if n_bad else {},
            }
        )

    report = _commit(store, contract, accepted_frames, sources, run_id, ts, rejected_rows)
    report["files"] = file_reports

    # Archive only after the version and the source ledger are durable.
    for path in files:
        if Path(path).exists():
            archive_file(path, archive_dir)
    return report


def ingest_sql(settings: Settings, fetch_batch, *, run_id: str, ingested_at: str) -> dict[str, Any]:
    """Ingest rows of the configured SQL table newer than the stored watermark.

    ``fetch_batch(table, watermark_column, after, limit) -> DataFrame`` reads rows with
    ``watermark_column > after`` ordered by it (the Airflow layer passes a common-sql hook's
    reader). The new watermark is stored only after the version is committed; rows at the
    watermark boundary that are read twice are dropped by the row-key de-duplication.
    """
    import pandas as pd

    from mlops_core.datasets import DatasetStore
    from mlops_core.validation import FileRejected, validate

    src = settings.dataset.sql_source
    if src is None:
        raise ValueError("dataset.sql_source is not configured in include/conf/<env>.yaml")
    contract = settings.load_contract()
    store = DatasetStore(object_store(settings), contract.name)
    state_name = f"sql-{src.conn_id}-{src.table}"
    after = store.watermark(state_name)
    ts = pd.Timestamp(ingested_at)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")

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
    if len(result.rejected):
        reasons = result.summary()["reasons"]
        store.quarantine(
            run_id, f"sql-{src.table}", result.rejected, f"{len(result.rejected)} row(s) rejected: {reasons}", None
        )
        log.warning("%s: %d row(s) quarantined: %s", source_name, len(result.rejected), reasons)
    sources = [
        {
            "key": source_name,
            "sha256": None,
            "status": "accepted",
            "rows_accepted": len(result.accepted),
            "rows_rejected": len(result.rejected),
        }
    ]
    report = _commit(store, contract, [result.accepted], sources, run_id, ts, len(result.rejected))
    store.set_watermark(state_name, new_watermark)
    report["watermark"] = new_watermark
    return report


def _commit(store, contract, frames, sources, run_id, ts, rejected_rows) -> dict[str, Any]:
    import pandas as pd

    base = {
        "dataset": contract.name,
        "run_id": run_id,
        "rejected_rows": rejected_rows,
        "sources": [s["key"] for s in sources],
    }
    frames = [f for f in frames if len(f)]
    if not frames:
        store.record_sources(_new_sources(sources), None, run_id)
        return {
            **base,
            "created": False,
            "version_id": None,
            "rows": 0,
            "duplicate_rows": 0,
            "reason": "no accepted rows",
        }
    accepted = pd.concat(frames, ignore_index=True)
    # commit_version leaves out (and returns, with the reason) rows already in a version and rows
    # repeated across the files of this batch; they are quarantined, never silently dropped.
    result = store.commit_version(accepted, contract, sources=sources, run_id=run_id, created_at=ts.isoformat())
    dupes = len(result.duplicates)
    if dupes:
        store.quarantine(run_id, "duplicate-rows", result.duplicates, f"{dupes} duplicate row(s) left out", None)
    manifest = result.manifest
    version_id = manifest["version_id"] if manifest else None
    store.record_sources(_new_sources(sources), version_id, run_id)
    if manifest is None:
        return {
            **base,
            "created": False,
            "version_id": None,
            "rows": 0,
            "duplicate_rows": dupes,
            "reason": "every accepted row was already ingested",
        }
    return {
        **base,
        "created": result.created,
        "version_id": version_id,
        "rows": manifest["row_count"],
        "duplicate_rows": dupes,
        "event_time_min": manifest["event_time_min"],
        "event_time_max": manifest["event_time_max"],
        "reason": "new version" if result.created else "version already existed (re-run)",
    }


def _new_sources(sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sources to record in the ledger: files seen for the first time (not SQL reads, not duplicates)."""
    return [s for s in sources if s.get("sha256") and s["status"] != "duplicate"]
