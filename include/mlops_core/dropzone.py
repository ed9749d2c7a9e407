"""The local drop zone: a folder where new data files land, and the archive they move to.

Which files are *complete* is decided by an arrival rule (``dataset.arrival.rule``), the same
three conventions real drop zones use:

``stable`` (default; for writers that write in place)
    the file's size, modification time (ns) and inode are unchanged across two consecutive
    scans at least one poll apart, and the file is at least ``min_age_seconds`` old. A writer
    that pauses for longer than one poll can still be taken in part: use ``marker`` or
    ``rename`` for such writers.
``marker``
    the writer creates a marker after the data. ``{name}.done`` marks one file (``a.csv`` is
    ready once ``a.csv.done`` exists); a name without ``{name}``, e.g. ``_SUCCESS``, marks the
    whole folder: every data file not modified after the marker. Markers are never ingested;
    a data file modified after its marker waits for a newer one.
``rename``
    the writer uploads to a hidden name (``.a.csv.part``) and renames it when done. Any visible
    matching file at least ``min_age_seconds`` old is ready.

In every rule hidden names (``.x``) are never taken, only regular files are (no links, no
sub-folders, no devices), and names are matched against the patterns case-insensitively. A
scan reports every entry it does not take with its reason (see ``REASONS``), so nothing in the
folder is left without a record.

:func:`scan` is pure apart from reading the folder: the caller passes the rule, the previous
scan's state and the time, and keeps the returned state for the next scan. Only the standard
library is used: the deferrable trigger that watches the folder runs this in the triggerer.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

ARRIVAL_RULES = ("stable", "marker", "rename")

# Why an entry of the drop zone was not announced.
HIDDEN = "hidden"  # a dot-name: an upload in progress (rename rule) or not data at all
NOT_REGULAR_FILE = "not_regular_file"  # a link, a sub-folder, a device, a socket or a pipe
PATTERN = "pattern"  # the name matches none of the file patterns
MARKER = "marker"  # a completion marker (rule marker); never ingested itself
TOO_NEW = "too_new"  # modified less than min_age_seconds ago
WAITING_STABLE = "waiting_stable"  # rule stable: not yet seen unchanged across two scans one poll apart
WAITING_MARKER = "waiting_marker"  # rule marker: no marker yet, or the file changed after its marker
UNSAFE_NAME = "unsafe_name"  # an object key that cannot be a file name (control characters, '..', too long)
CONSUMED = "consumed"  # S3, dataset.mark_consumed tag: already consumed by an ingest run (tagged so)
REASONS = (HIDDEN, NOT_REGULAR_FILE, UNSAFE_NAME, PATTERN, MARKER, CONSUMED, TOO_NEW, WAITING_STABLE, WAITING_MARKER)

# Two scans scheduled one poll apart can measure a wall-clock gap a hair shorter than the poll
# (timer granularity, clock slewing); a gap of 90 % of a poll still counts as one poll.
_POLL_GAP_FRACTION = 0.9
_NAME = "{name}"


@dataclass(frozen=True)
class ArrivalRule:
    """How the watch decides a file is complete (mirrors ``settings.dataset.arrival``).

    :param rule: ``stable``, ``marker`` or ``rename`` (see the module docstring).
    :param min_age_seconds: rules ``stable`` and ``rename``: a file must be at least this old.
    :param marker: rule ``marker``: ``{name}.done`` style per-file marker, or a fixed name
        (``_SUCCESS``) that marks the whole folder. Matched case-sensitively.
    :param poll_seconds: seconds between scans; rule ``stable`` compares scans this far apart.
    """

    rule: str = "stable"
    min_age_seconds: float = 5.0
    marker: str = "{name}.done"
    poll_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.rule not in ARRIVAL_RULES:
            raise ValueError(
                f"unknown arrival rule {self.rule!r}; set dataset.arrival.rule to one of {list(ARRIVAL_RULES)}"
            )
        if not self.min_age_seconds >= 0:
            raise ValueError(f"dataset.arrival.min_age_seconds must be >= 0, got {self.min_age_seconds!r}")
        if not self.poll_seconds > 0:
            raise ValueError(f"dataset.arrival.poll_seconds must be > 0, got {self.poll_seconds!r}")
        _check_marker(self.marker)

    @property
    def per_file_marker(self) -> bool:
        """True when the marker names one data file (``{name}.done``), False for a folder marker."""
        return _NAME in self.marker

    def marker_for(self, name: str) -> str:
        """The marker name that completes data file ``name``."""
        return self.marker.replace(_NAME, name) if self.per_file_marker else self.marker

    def is_marker(self, name: str) -> bool:
        """Whether ``name`` is a marker under this rule's marker template."""
        if not self.per_file_marker:
            return name == self.marker
        prefix, suffix = self.marker.split(_NAME)
        return len(name) > len(prefix) + len(suffix) and name.startswith(prefix) and name.endswith(suffix)


def _check_marker(marker: str) -> None:
    problem = None
    if not marker or marker.strip() != marker:
        problem = "it is empty or has leading/trailing spaces"
    elif "/" in marker or "\\" in marker or marker in (".", ".."):
        problem = "it must be a file name in the drop zone, not a path"
    elif marker.count(_NAME) > 1:
        problem = "it may contain {name} at most once"
    elif "{" in marker.replace(_NAME, "") or "}" in marker.replace(_NAME, ""):
        problem = "the only placeholder is {name}"
    elif marker == _NAME:
        problem = "a marker cannot be the data file itself; use e.g. {name}.done"
    elif marker.startswith(".") and _NAME not in marker:
        problem = "hidden names are never seen by the watch"
    if problem:
        raise ValueError(f"dataset.arrival.marker {marker!r} is not usable: {problem}")


@dataclass(frozen=True)
class DroppedFile:
    """A complete data file, as announced in the ``landed_files`` event.

    ``path`` is an absolute path in a local drop zone, or ``s3://bucket/key`` in an S3 one (whose
    entries also carry the ``etag`` they were listed with, so the watch can tell when that very
    object is consumed or replaced).
    """

    path: str
    name: str
    size: int
    mtime: float
    etag: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{path, name, size, mtime}`` (+ ``etag`` for an object): one entry of the event's ``files``."""
        out = asdict(self)
        if self.etag is None:
            del out["etag"]
        return out


@dataclass(frozen=True)
class MarkerFile:
    """A marker that completed some announced files; archived after they are consumed.

    The signature (size, mtime_ns, inode) is what the marker looked like when its files were
    announced: a marker changed since then marks newer files and is left in place.
    """

    path: str
    name: str
    size: int
    mtime_ns: int
    inode: int

    def to_dict(self) -> dict[str, Any]:
        """Primitives only (an XCom); :meth:`from_dict` reads them back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> MarkerFile:
        """Rebuild from :meth:`to_dict` output (e.g. an XCom), checking every field's type."""
        try:
            marker = cls(
                path=str(raw["path"]),
                name=str(raw["name"]),
                size=int(raw["size"]),
                mtime_ns=int(raw["mtime_ns"]),
                inode=int(raw["inode"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a marker record (path, name, size, mtime_ns, inode): {raw!r}") from exc
        if Path(marker.path).name != marker.name:
            raise ValueError(f"marker record names {marker.name!r} but its path is {marker.path!r}")
        return marker


@dataclass(frozen=True)
class IgnoredEntry:
    """An entry of the drop zone that a scan did not announce, and why."""

    name: str
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Sighting:
    """What a scan saw of a candidate file: its signature and since when it has been unchanged.

    A local file's signature is (size, mtime ns, inode); an S3 object's is (size, LastModified,
    ETag) with inode 0. ``consumed`` (S3 with ``dataset.mark_consumed: tag``) remembers that this
    very object (same ETag) carries our consumed tag, so it is not asked again.
    """

    size: int
    mtime_ns: int
    inode: int
    since: float
    etag: str = ""
    consumed: bool = False

    def same_file_as(self, other: Sighting) -> bool:
        """Same size, mtime (ns), inode and ETag: nothing was written or replaced in between."""
        return (self.size, self.mtime_ns, self.inode, self.etag) == (
            other.size,
            other.mtime_ns,
            other.inode,
            other.etag,
        )

    def to_dict(self) -> dict[str, Any]:
        """Primitives only (a trigger's kwargs); :meth:`from_dict` reads them back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Sighting:
        """Rebuild from :meth:`to_dict` output, checking every field's type."""
        try:
            return cls(
                size=int(raw["size"]),
                mtime_ns=int(raw["mtime_ns"]),
                inode=int(raw["inode"]),
                since=float(raw["since"]),
                etag=str(raw.get("etag", "")),
                consumed=bool(raw.get("consumed", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a sighting record (size, mtime_ns, inode, since): {raw!r}") from exc


ScanState = Mapping[str, Sighting]


def state_to_primitives(state: ScanState) -> dict[str, dict[str, Any]]:
    """A scan state as JSON-able primitives (what a trigger serializes)."""
    return {path: seen.to_dict() for path, seen in state.items()}


def state_from_primitives(raw: Mapping[str, Any] | None) -> dict[str, Sighting]:
    """The scan state :func:`state_to_primitives` wrote; unreadable entries are dropped (they cost one poll)."""
    state: dict[str, Sighting] = {}
    for path, seen in (raw or {}).items():
        try:
            state[str(path)] = Sighting.from_dict(seen)
        except ValueError:
            continue
    return state


@dataclass(frozen=True)
class ScanResult:
    """One scan of the drop zone: what is ready, what is not (with reasons), and the new state."""

    directory: str
    exists: bool
    ready: tuple[DroppedFile, ...] = ()
    ignored: tuple[IgnoredEntry, ...] = ()
    markers: tuple[MarkerFile, ...] = ()
    state: ScanState = field(default_factory=dict)

    def ignored_counts(self) -> dict[str, int]:
        """Entries not announced, counted per reason (only reasons that occur, in ``REASONS`` order)."""
        counts: dict[str, int] = {}
        for entry in self.ignored:
            counts[entry.reason] = counts.get(entry.reason, 0) + 1
        return {r: counts[r] for r in REASONS if r in counts}

    def summary(self) -> dict[str, Any]:
        """``{"announced": n, "ignored": {reason: count}}``: what the watch run reports."""
        return {"announced": len(self.ready), "ignored": self.ignored_counts()}

    def to_event(self, rule: str) -> dict[str, Any]:
        """The primitives a trigger event / sensor XCom carries about this scan."""
        return {
            "directory": self.directory,
            "rule": rule,
            "files": [f.to_dict() for f in self.ready],
            "markers": [m.to_dict() for m in self.markers],
            **self.summary(),
        }


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether ``name`` matches one of the glob ``patterns``, ignoring case (``A.CSV`` matches ``*.csv``)."""
    folded = name.casefold()
    return any(fnmatch.fnmatchcase(folded, p.casefold()) for p in patterns)


def scan(
    directory: str | Path,
    patterns: Sequence[str],
    rule: ArrivalRule,
    previous: ScanState | None = None,
    *,
    now: float | None = None,
) -> ScanResult:
    """Scan ``directory`` (not recursive) once under ``rule``.

    ``previous`` is the ``state`` of the previous scan of the same folder (``None`` on the first
    scan: under ``stable`` nothing is ready then). ``now`` is the wall-clock time of the scan
    (``time.time()`` when omitted). Ready files are sorted by name; every other entry of the
    folder is in ``ignored`` with its reason. A missing folder is "nothing yet", not an error;
    other OS errors (e.g. permission denied) propagate.
    """
    directory = str(directory)
    now = time.time() if now is None else now
    previous = previous or {}
    try:
        with os.scandir(directory) as it:
            entries = list(it)
    except (FileNotFoundError, NotADirectoryError):
        return ScanResult(directory=directory, exists=False)

    ignored: list[IgnoredEntry] = []
    markers: dict[str, os.stat_result] = {}
    candidates: list[tuple[os.DirEntry[str], os.stat_result]] = []
    for entry in sorted(entries, key=lambda e: e.name):
        name = entry.name
        if name.startswith("."):
            ignored.append(IgnoredEntry(name, HIDDEN, "hidden names are uploads in progress or not data"))
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # removed between listing and stat: it is not in the folder any more
            continue
        if not stat.S_ISREG(st.st_mode):
            ignored.append(IgnoredEntry(name, NOT_REGULAR_FILE, _kind(st.st_mode)))
            continue
        if rule.rule == "marker" and rule.is_marker(name):
            markers[name] = st
            continue
        if not matches(name, patterns):
            ignored.append(IgnoredEntry(name, PATTERN, f"matches none of {list(patterns)} (case-insensitive)"))
            continue
        candidates.append((entry, st))

    ready: list[DroppedFile] = []
    state: dict[str, Sighting] = {}
    used_markers: dict[str, MarkerFile] = {}
    for entry, st in candidates:
        reason, detail = _readiness(entry, st, rule, previous, now, markers, state)
        if reason is None:
            ready.append(DroppedFile(path=entry.path, name=entry.name, size=st.st_size, mtime=st.st_mtime))
            if rule.rule == "marker":
                m_name = rule.marker_for(entry.name)
                m_st = markers[m_name]
                used_markers[m_name] = MarkerFile(
                    path=os.path.join(directory, m_name),
                    name=m_name,
                    size=m_st.st_size,
                    mtime_ns=m_st.st_mtime_ns,
                    inode=m_st.st_ino,
                )
        else:
            ignored.append(IgnoredEntry(entry.name, reason, detail))
    for m_name in sorted(markers):
        what = "completed files announced now" if m_name in used_markers else "no matching data file waiting"
        ignored.append(IgnoredEntry(m_name, MARKER, f"completion marker ({what}); markers are never ingested"))
    return ScanResult(
        directory=directory,
        exists=True,
        ready=tuple(ready),
        ignored=tuple(sorted(ignored, key=lambda e: e.name)),
        markers=tuple(used_markers[n] for n in sorted(used_markers)),
        state=state,
    )


def _readiness(
    entry: os.DirEntry[str],
    st: os.stat_result,
    rule: ArrivalRule,
    previous: ScanState,
    now: float,
    markers: Mapping[str, os.stat_result],
    state: dict[str, Sighting],
) -> tuple[str | None, str]:
    """``(None, "")`` when the candidate is ready, else ``(reason, detail)``; records stable state."""
    age = now - st.st_mtime_ns / 1e9
    if rule.rule == "marker":
        m_name = rule.marker_for(entry.name)
        m_st = markers.get(m_name)
        if m_st is None:
            return WAITING_MARKER, f"waiting for its marker {m_name}"
        if st.st_mtime_ns > m_st.st_mtime_ns:
            return WAITING_MARKER, f"modified after its marker {m_name}; waiting for a newer marker"
        return None, ""
    if rule.rule == "stable":
        seen = Sighting(size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino, since=now)
        before = previous.get(entry.path)
        if before is not None and before.same_file_as(seen):
            seen = before  # unchanged: it has been so since the earlier sighting
        state[entry.path] = seen
        unchanged_for = now - seen.since
        if before is None or seen is not before or unchanged_for < rule.poll_seconds * _POLL_GAP_FRACTION:
            return WAITING_STABLE, (
                f"size/mtime/inode must stay unchanged across two scans {rule.poll_seconds:g}s apart"
            )
    if age < rule.min_age_seconds:
        return TOO_NEW, f"modified {max(age, 0.0):.1f}s ago; must be at least {rule.min_age_seconds:g}s old"
    return None, ""


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link (links are never followed)"
    if stat.S_ISDIR(mode):
        return "a sub-folder (the watch is not recursive)"
    return "not a regular file (device, socket or pipe)"


class IgnoredReporter:
    """Remembers which (name, reason) pairs were already reported, so each is logged once per run."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()

    def new(self, result: ScanResult) -> list[IgnoredEntry]:
        """The ignored entries of ``result`` not reported before (and marks them reported)."""
        fresh = [e for e in result.ignored if (e.name, e.reason) not in self._seen]
        self._seen.update((e.name, e.reason) for e in fresh)
        return fresh


# ---- what to watch: explicit values over the environment's settings ----------------------------


class _ArrivalSettingsLike(Protocol):
    @property
    def rule(self) -> str: ...
    @property
    def min_age_seconds(self) -> float: ...
    @property
    def marker(self) -> str: ...
    @property
    def poll_seconds(self) -> float: ...


class DatasetSettingsLike(Protocol):
    """The part of ``settings.dataset`` the watch reads."""

    @property
    def drop_zone(self) -> Path | str: ...
    @property
    def file_patterns(self) -> Sequence[str]: ...
    @property
    def arrival(self) -> _ArrivalSettingsLike: ...


@dataclass(frozen=True)
class WatchSpec:
    """Everything one watch needs: the folder, the name patterns and the arrival rule."""

    directory: str
    patterns: tuple[str, ...]
    arrival: ArrivalRule


def watch_spec(
    dataset: DatasetSettingsLike | None,
    *,
    directory: str | os.PathLike[str] | None = None,
    patterns: Sequence[str] | None = None,
    rule: str | None = None,
    min_age_seconds: float | None = None,
    marker: str | None = None,
    poll_seconds: float | None = None,
) -> WatchSpec:
    """The explicit values where given, ``dataset`` settings for the rest.

    ``dataset`` may be ``None`` only when every value is given explicitly.
    """

    def pick(explicit: Any, setting: str) -> Any:
        if explicit is not None and explicit != "" and explicit != []:
            return explicit
        if dataset is None:
            raise ValueError(f"no {setting} given and no settings to read it from")
        obj: Any = dataset
        for part in setting.split(".")[1:]:
            obj = getattr(obj, part)
        return obj

    arrival = ArrivalRule(
        rule=str(pick(rule, "dataset.arrival.rule")),
        min_age_seconds=float(pick(min_age_seconds, "dataset.arrival.min_age_seconds")),
        marker=str(pick(marker, "dataset.arrival.marker")),
        poll_seconds=float(pick(poll_seconds, "dataset.arrival.poll_seconds")),
    )
    found = pick(patterns, "dataset.file_patterns")
    if isinstance(found, str) or not all(isinstance(p, str) and p for p in found) or not found:
        raise ValueError(f"file patterns must be a non-empty list of globs such as ['*.csv'], got {found!r}")
    return WatchSpec(directory=os.fspath(pick(directory, "dataset.drop_zone")), patterns=tuple(found), arrival=arrival)


# ---- one-shot scan and the archive ---------------------------------------------------------------


def scan_drop_zone(
    directory: str | Path,
    patterns: Sequence[str],
    *,
    min_age_seconds: float = 2.0,
    now: float | None = None,
) -> list[DroppedFile]:
    """One scan without history: visible matching regular files at least ``min_age_seconds`` old.

    This is the ``rename`` rule. It suits a one-off look (a manual ingest run); a watch that
    must not take files still being written uses :func:`scan` with the configured rule.
    """
    rule = ArrivalRule(rule="rename", min_age_seconds=min_age_seconds)
    return list(scan(directory, patterns, rule, now=now).ready)


class _Scans(Protocol):
    def scan(
        self, patterns: Sequence[str], rule: ArrivalRule, previous: ScanState | None = None, *, now: float | None = None
    ) -> ScanResult: ...


def complete_files(spec: WatchSpec, source: _Scans | None = None) -> ScanResult:
    """What is complete in the drop zone now under ``spec``'s rule, without a running watch.

    For a one-off look such as a manual ingest run. ``source`` is the drop zone's
    :class:`~mlops_core.drop_source.DropSource` (an S3 prefix, say); ``None`` scans the local
    folder ``spec.directory``. Under ``stable`` the drop zone is scanned twice, one poll apart,
    so this call takes ``poll_seconds``; the other rules need one scan.
    """

    def once(previous: ScanState | None) -> ScanResult:
        if source is None:
            return scan(spec.directory, spec.patterns, spec.arrival, previous)
        return source.scan(spec.patterns, spec.arrival, previous)

    result = once(None)
    if spec.arrival.rule == "stable":
        time.sleep(spec.arrival.poll_seconds)
        result = once(result.state)
    return result


def archive_dir_for(drop_zone: str | Path, run_key: str) -> Path:
    """Where files consumed by run ``run_key`` are archived: ``<drop_zone>.archive/<run_key>/``."""
    drop_zone = Path(drop_zone)
    return drop_zone.parent / f"{drop_zone.name}.archive" / run_key


def archive_file(path: str | Path, archive_dir: str | Path) -> Path:
    """Move a consumed entry into ``archive_dir`` (same file system: an atomic rename).

    The entry itself moves, never what it points to: a link (even a dangling one) is archived as
    a link. Re-running is safe: an entry already gone from the drop zone but present in the
    archive is returned as is; a name clash gets a numeric suffix.
    """
    src = Path(path)
    archive_dir = Path(archive_dir)
    archive_dir.mkdir(parents=True, exist_ok=True)
    target = archive_dir / src.name
    if not os.path.lexists(src):
        if os.path.lexists(target):
            return target
        raise FileNotFoundError(f"{src} is neither in the drop zone nor in the archive {archive_dir}")
    n = 1
    while os.path.lexists(target):
        target = archive_dir / f"{src.stem}.{n}{src.suffix}"
        n += 1
    os.replace(src, target)
    return target


def archive_marker(marker: MarkerFile, archive_dir: str | Path) -> Path | None:
    """Move a marker whose files were consumed into ``archive_dir``; returns where it went.

    Returns ``None`` and leaves the marker in place when it is gone (an earlier try moved it)
    or changed since its files were announced: a writer re-created or touched it, so it now
    completes newer files. If it changes between the check and the move, it is moved back.
    """
    src = Path(marker.path)
    try:
        st = src.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None
    if (st.st_size, st.st_mtime_ns, st.st_ino) != (marker.size, marker.mtime_ns, marker.inode):
        return None
    target = archive_file(src, archive_dir)
    moved = target.stat(follow_symlinks=False)
    if (moved.st_size, moved.st_mtime_ns, moved.st_ino) != (marker.size, marker.mtime_ns, marker.inode):
        try:  # touched in between: put it back unless the writer has already made a new one
            os.link(target, src)
            os.unlink(target)
        except FileExistsError:
            pass
        return None
    return target
