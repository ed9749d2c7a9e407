"""Write a file so that readers see the old content or the new, never a part: one helper for all.

The data goes to a hidden temporary name in the target's folder (a folder watcher that skips
names starting with ``.`` never sees it), is flushed to disk, and is renamed over the target
(``os.replace`` is atomic on one file system). A crash leaves at most a stray ``.tmp`` file.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMP_PREFIX = ".tmp-"


def write_atomic(path: str | Path, data: bytes | str, *, mode: int | None = None, fsync: bool = True) -> Path:
    """Replace ``path`` with ``data`` atomically; returns the path.

    Args:
        path: the target file; missing parent folders are created.
        data: bytes, or text written as UTF-8.
        mode: permission bits of the new file (e.g. ``0o600`` for secrets); it never exists
            under its final name with wider permissions. Default: what ``mkstemp`` gives (0600).
        fsync: flush to disk before the rename (turn off only for throw-away files).
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    return _replace_with(path, lambda fh: fh.write(payload), mode=mode, fsync=fsync)


def copy_atomic(
    source: str | os.PathLike[str], path: str | Path, *, mode: int | None = None, fsync: bool = True
) -> Path:
    """Replace ``path`` with a copy of the file ``source`` atomically (as :func:`write_atomic`); returns the path.

    The copy is made by the kernel where it can (``copy_file_range``, else ``sendfile``: no pass of
    the bytes through Python), else streamed (``shutil.copyfileobj``); either way a file of any size
    takes little memory.
    """
    with open(source, "rb") as src:
        return _replace_with(path, lambda fh: _copy_stream(src, fh), mode=mode, fsync=fsync)


_COPY_CHUNK = 1 << 20
_KERNEL_COPY_REFUSED = frozenset(
    {errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EBADF, errno.EPERM}
)


def _copy_stream(src: BinaryIO, dst: BinaryIO) -> None:
    """Copy the rest of ``src`` (from its position) to the end of what ``dst`` holds: in the kernel where
    the system offers it (both descriptors' offsets advance), else through Python."""
    dst.flush()
    in_fd, out_fd = src.fileno(), dst.fileno()
    os.lseek(in_fd, src.tell(), os.SEEK_SET)  # a buffered reader may have read ahead of its position
    kernel_copies: list[Callable[[], int]] = []
    if hasattr(os, "copy_file_range"):
        kernel_copies.append(lambda: os.copy_file_range(in_fd, out_fd, _COPY_CHUNK))
    if hasattr(os, "sendfile"):
        kernel_copies.append(lambda: os.sendfile(out_fd, in_fd, None, _COPY_CHUNK))
    for kernel_copy in kernel_copies:
        copied = 0
        try:
            while n := kernel_copy():
                copied += n
            src.seek(os.lseek(in_fd, 0, os.SEEK_CUR))  # the Python object learns where the kernel left off
            return
        except OSError as exc:
            if copied or exc.errno not in _KERNEL_COPY_REFUSED:
                raise  # part of the file is written already: no fallback could continue it safely
    shutil.copyfileobj(src, dst, _COPY_CHUNK)


def _replace_with(path: str | Path, fill: Callable[[BinaryIO], object], *, mode: int | None, fsync: bool) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fill(fh)
            fh.flush()
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
