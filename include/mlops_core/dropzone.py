"""The local drop zone: a folder where new data files land, and the archive they move to.

A file is *ready* when its name matches one of the patterns, it is not hidden (writers that
upload to a hidden temporary name and rename it are never seen half-written) and it has not
been modified for ``min_age_seconds`` (covers writers that write in place). Only the standard
library is used: the deferrable trigger that watches the folder runs this in the triggerer.
"""

from __future__ import annotations

import fnmatch
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class DroppedFile:
    path: str
    name: str
    size: int
    mtime: float

    def to_dict(self) -> dict:
        return asdict(self)


def scan_drop_zone(
    directory: str | Path,
    patterns: tuple[str, ...] | list[str],
    *,
    min_age_seconds: float = 2.0,
    now: float | None = None,
) -> list[DroppedFile]:
    """Ready files directly inside ``directory`` (not recursive), sorted by name."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    now = time.time() if now is None else now
    found = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            if not any(fnmatch.fnmatch(entry.name, p) for p in patterns):
                continue
            st = entry.stat(follow_symlinks=False)
            if now - st.st_mtime < min_age_seconds:
                continue
            found.append(DroppedFile(path=entry.path, name=entry.name, size=st.st_size, mtime=st.st_mtime))
    return sorted(found, key=lambda f: f.name)


def archive_file(path: str | Path, archive_dir: str | Path) -> Path:
    """Move a consumed file into ``archive_dir`` (same file system: an atomic rename).

    Re-running is safe: a file already gone from the drop zone but present in the archive is
    returned as is; a name clash with different content gets a numeric suffix.
    """
    src = Path(path)
    archive_dir = Path(archive_dir)
    archive_dir.mkdir(parents=True, exist_ok=True)
    target = archive_dir / src.name
    if not src.exists():
        if target.exists():
            return target
        raise FileNotFoundError(f"{src} is neither in the drop zone nor in the archive {archive_dir}")
    n = 1
    while target.exists():
        target = archive_dir / f"{src.stem}.{n}{src.suffix}"
        n += 1
    os.replace(src, target)
    return target
