"""The drop-zone seam: where delivered files come from, behind one small Protocol.

A drop zone is a local folder (:class:`mlops_core.delivered_files.DropZone`) or a prefix of an
S3 bucket (:class:`mlops_core.s3_dropzone.S3DropZone`); the watch (sensor and trigger) and the
ingest stage talk to either through :class:`DropSource`, so the same DAGs watch both and
``dags/`` never names one. What every implementation promises:

- :meth:`DropSource.scan` lists the entries that are *complete* under the arrival rule, with a
  stable identity (local: size, mtime, inode; S3: size, LastModified, ETag) kept in the scan
  state between scans, and names every entry it does not take with its reason;
- :meth:`DropSource.names_of` turns announced paths (untrusted: anyone with API access may post
  an asset event) into entry names, refusing the whole call with
  :class:`~mlops_core.delivered_files.UntrustedPath` when one is not directly inside the zone;
- :meth:`DropSource.copy` copies one entry to a new local file, within a size limit, hashing it
  on the way (``None``: it is gone); :meth:`DropSource.change_since` says whether the entry is
  still what was copied (``None``), or ``"changed"`` / ``"replaced"`` / ``"vanished"``;
- :meth:`DropSource.consume` marks a consumed entry (moved to the run's archive, or tagged) so
  no later scan announces it again, and :meth:`DropSource.unconsumed` tells the watch which of
  the entries it announced are still waiting for ingest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from mlops_core.delivered_files import ArchivedExtra, DeliveredFile, FileSnapshot
    from mlops_core.dropzone import ArrivalRule, ScanResult, ScanState

MARK_CONSUMED = ("archive", "tag")


@dataclass(frozen=True)
class Consumed:
    """What marking one consumed entry did.

    ``archived_as``: where the entry went (a path or an ``s3://`` URI; for a tag, the entry
    itself), escaped for reports. ``extra``: bytes the archived entry holds beyond what was read
    (a local writer still appending); ``None`` when it is what was read.
    """

    archived_as: str
    extra: ArchivedExtra | None = None


@runtime_checkable
class DropSource(Protocol):
    """A drop zone: list complete entries, copy one safely, detect change, mark consumed."""

    @property
    def location(self) -> str:
        """Where the zone is, for logs and events: a folder, or ``s3://bucket/prefix/``."""
        ...

    def __enter__(self) -> DropSource: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def scan(
        self,
        patterns: Sequence[str],
        rule: ArrivalRule,
        previous: ScanState | None = None,
        *,
        now: float | None = None,
    ) -> ScanResult:
        """One look under ``rule``; keep the result's ``state`` and pass it as ``previous`` next time."""
        ...

    def names_of(self, paths: Iterable[object]) -> list[str]:
        """Entry names of announced ``paths``; :class:`UntrustedPath` (nothing touched) if one is not ours."""
        ...

    def copy(self, name: str, target: str | Path, *, max_bytes: int) -> DeliveredFile | None:
        """Copy entry ``name`` to the new local file ``target``, hashed; ``None`` when it is gone."""
        ...

    def change_since(self, name: str, snapshot: FileSnapshot) -> str | None:
        """``None`` when entry ``name`` is still what was copied, else how it differs."""
        ...

    def consume(self, name: str, snapshot: FileSnapshot | None, run_key: str, *, max_bytes: int) -> Consumed | None:
        """Mark entry ``name`` consumed by run ``run_key``; ``None`` when there was nothing to mark."""
        ...

    def unconsumed(self, announced: Sequence[Mapping[str, Any]]) -> list[str]:
        """The paths of ``announced`` entries (event ``files``) that are still waiting to be consumed."""
        ...
