"""One line that says what a stage's run did, for the run's note in the UI and for the logs.

Each function reads the JSON report a stage returns (the task's XCom) and says the outcome a user
must see without opening a log: what was accepted and what was quarantined, whether the gate
promoted or kept the champion and why, whether monitoring asked for retraining, what is live.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

QUARANTINED_STATUSES = ("rejected", "quarantined")
DUPLICATE_STATUSES = ("duplicate_file", "duplicate")


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


def _file_reasons(files: Sequence[Mapping[str, Any]]) -> str:
    codes = Counter(str(f.get("reason_code") or f.get("code") or "rejected") for f in files)
    return ", ".join(f"{code} x{n}" if n > 1 else code for code, n in sorted(codes.items()))


def ingest_outcome(report: Mapping[str, Any]) -> str:
    """``3 files: 2 accepted (1,997 rows; 3 rows quarantined), 1 quarantined (missing_columns) -> version ...``."""
    files: list[Mapping[str, Any]] = list(report.get("files") or [])
    accepted = [f for f in files if f.get("status") == "accepted"]
    quarantined = [f for f in files if f.get("status") in QUARANTINED_STATUSES]
    duplicates = [f for f in files if f.get("status") in DUPLICATE_STATUSES]
    deferred = [f for f in files if f.get("status") == "deferred"]
    rows = int(report.get("rows") or 0)
    rejected_rows = int(report.get("rejected_rows") or 0)
    duplicate_rows = int(report.get("duplicate_rows") or 0)
    version = report.get("version_id")

    if files and not accepted and quarantined:
        head = f"every file quarantined ({_plural(len(quarantined), 'file')}: {_file_reasons(quarantined)})"
        if duplicates:
            head += f"; {_plural(len(duplicates), 'duplicate delivery')} ignored"
        return head + "; no new dataset version"

    parts = []
    if files:
        parts.append(_plural(len(files), "file"))
    if accepted:
        row_note = f"{rejected_rows:,} rows quarantined" if rejected_rows else "no row quarantined"
        parts.append(f"{len(accepted)} accepted ({row_note})")
    elif not files and (rows or rejected_rows):  # a SQL read has no files
        parts.append(f"{rows + rejected_rows + duplicate_rows:,} rows read, {rejected_rows:,} quarantined")
    if quarantined:
        parts.append(f"{len(quarantined)} quarantined ({_file_reasons(quarantined)})")
    if duplicates:
        parts.append(f"{_plural(len(duplicates), 'duplicate delivery')} ignored")
    if deferred:
        parts.append(f"{len(deferred)} left for the next run (changed while being read)")
    if duplicate_rows:
        parts.append(f"{duplicate_rows:,} rows already ingested")
    summary = ", ".join(parts) if parts else "nothing to ingest"
    if version and report.get("created", True):
        return f"{summary} -> new dataset version {version} ({rows:,} rows)"
    if version:
        return f"{summary} -> dataset version {version} already committed (re-run)"
    return f"{summary}; no new dataset version ({report.get('reason', 'nothing new')})"


def evaluation_outcome(evaluation: Mapping[str, Any]) -> str:
    """``dev.churn v3 PROMOTED ...`` or ``dev.churn v3 kept out: <the gate's reasons>``."""
    name, version = evaluation.get("model_name", "?"), evaluation.get("version", "?")
    reasons = " ".join(str(r) for r in evaluation.get("reasons") or [])
    if evaluation.get("promote"):
        if evaluation.get("requires_approval"):
            return f"{name} v{version} passed the gate; waiting for approval to become @champion. {reasons}".strip()
        return f"{name} v{version} PROMOTED to @champion. {reasons}".strip()
    return f"{name} v{version} registered but NOT promoted (champion v{evaluation.get('champion_version')} kept). " + (
        reasons or "The gate rejected it."
    )


def monitor_outcome(verdict: Mapping[str, Any]) -> str:
    """``retraining requested (drift): ...`` or ``no retraining: ...``; with the drift report's web link
    (``report_url``) first when the verdict has one, so a long summary cannot cut it off."""
    summary = str(verdict.get("summary") or "")
    report = verdict.get("report_url") or verdict.get("report")
    if isinstance(report, str) and report.startswith(("http://", "https://")):
        summary = f"drift report: {report}; {summary}".rstrip("; ")
    if verdict.get("retrain"):
        return f"retraining requested ({verdict.get('reason')}): {summary}".rstrip(": ")
    return f"no retraining: {summary}".rstrip(": ")


def deploy_outcome(reports: Sequence[Mapping[str, Any]]) -> str:
    """``dev: dev.churn v2 live at http://... (was v1)`` for each environment deployed."""
    lines = []
    for r in reports:
        was = f" (was v{r['previous_version']})" if r.get("previous_version") else ""
        lines.append(f"{r.get('env')}: {r.get('model_name')} v{r.get('version')} live at {r.get('url')}{was}")
    return "; ".join(lines) or "nothing deployed"
