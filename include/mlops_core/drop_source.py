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

from collections.abc import Callable, Iterable, Mapping, Sequence
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
        self, patterns: Sequence[str], rule: ArrivalRule, previous: ScanState | None = None, *, now: float | None = None
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


def names_of(
    paths: Iterable[object],
    name_of: Callable[[object], tuple[str, str]],
    *,
    zone: str,
    entries: tuple[str, str],
    show: Callable[[object], str] | None = None,
) -> list[str]:
    """The sorted, distinct entry names of announced ``paths``: what every :meth:`DropSource.names_of` does.

    ``name_of`` gives a path's entry name, or a problem that refuses it; ``zone`` is the zone as
    shown in the message; ``entries`` says what may be announced, as ``("files", "directly inside")``
    or ``("objects", "directly under")``; ``show`` makes a refused path printable (default
    :func:`shown_path`).

    Raises:
        UntrustedPath: naming every refused path (the first 20 in the message) and the drop zone;
            nothing was touched.
    """
    from mlops_core.delivered_files import UntrustedPath

    names: list[str] = []
    refused: list[tuple[str, str]] = []
    for path in paths:
        name, problem = name_of(path)
        if problem:
            refused.append(((show or shown_path)(path), problem))
        else:
            names.append(name)
    if refused:
        kind, where = entries
        listed = "; ".join(f"{path!r}: {problem}" for path, problem in refused[:20])
        more = f" (and {len(refused) - 20} more)" if len(refused) > 20 else ""
        raise UntrustedPath(
            f"refused {len(refused)} path(s) that are not {kind} {where} the drop zone "
            f"{zone!r}: {listed}{more}. Nothing was read, moved or copied; "
            f"only post landed_files events for {kind} in the drop zone",
            [path for path, _ in refused],
        )
    return sorted(set(names))


def shown_path(path: object) -> str:
    """An announced path as printable text for a refusal: escaped, at most 300 characters (``repr`` of a non-string)."""
    from mlops_core.delivered_files import escape_name

    text = path if isinstance(path, str) else repr(path)
    return escape_name(text if len(text) <= 300 else text[:297] + "...")
