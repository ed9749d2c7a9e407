"""Read a file delivered to the drop zone without trusting its path, its type, its size or its name.

The paths ingest is handed come from ``landed_files`` asset events: from our watch DAG, or from
anyone who may post an asset event over the REST API. So:

* **Paths** (:meth:`DropZone.names_of`): only absolute paths of entries directly inside the drop
  zone are taken (the folders are compared after resolving links; ``..``, ``.``, a NUL byte, a
  relative path, a hidden name (an upload still in progress) are refused). One untrusted path
  refuses the whole call with :class:`UntrustedPath` before anything is opened, moved or copied.
* **Entries** (:meth:`DropZone.read`, :meth:`DropZone.copy`): the entry is looked at with ``lstat`` relative to a
  descriptor of the drop zone folder (no path is resolved twice), and only a regular file is
  opened, with ``O_NOFOLLOW | O_NONBLOCK`` (a link swapped in meanwhile fails instead of being
  followed; a FIFO cannot block), and read from that one descriptor after ``fstat`` confirms it
  is still a regular file. Links, folders, FIFOs, sockets and devices are rejected as
  ``not_regular_file`` without reading what they point to; files above ``max_bytes`` as
  ``too_large`` without reading them. :meth:`DropZone.copy` puts the bytes into a private local
  file instead of memory (ingest does, so that memory does not grow with the file), hashing them
  on the way, so every later pass over the copy reads exactly the bytes the checksum describes.
* **Changes** (:meth:`DropZone.change_since`, :func:`archived_extra`): what was read is
  remembered (device, inode, size, mtime, SHA-256) so that a file still being written can be
  told apart from the bytes that were parsed.
* **Names** (:func:`escape_name`): Linux allows any bytes but ``/`` and NUL in a name; Python
  gives names that are not UTF-8 as ``str`` with surrogate escapes, which JSON, Parquet and
  object keys cannot hold. Every name that leaves this module is escaped losslessly:
  :func:`unescape_name` gives the original back.

Only the standard library is used.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from mlops_core.errors import PermanentError

if TYPE_CHECKING:
    from mlops_core.drop_source import Consumed
    from mlops_core.dropzone import ArrivalRule, ScanResult, ScanState

MAX_FILE_BYTES = 2 * 1024**3  # default size limit of one delivered file (and of its decoded content)
READ_CHUNK = 1 << 20

_PERCENT_BYTE = re.compile(r"%([0-9A-F]{2})")


class FileRejected(ValueError):
    """A whole source file cannot be used; ``reason`` is a short machine-readable code.

    Codes: ``empty``, ``not_utf8``, ``truncated``, ``unparseable``, ``unsupported_format``,
    ``bad_header``, ``missing_columns``, ``unknown_columns``, ``too_large``,
    ``not_regular_file``, ``unreadable``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class UntrustedPath(PermanentError, ValueError):
    """Paths handed to ingest that are not entries directly inside the drop zone.

    Raised before anything was opened, moved or copied. Not worth a retry: the same paths are
    refused again. ``paths`` holds the refused paths, escaped (see :func:`escape_name`).
    """

    def __init__(self, message: str, paths: list[str]) -> None:
        super().__init__(message)
        self.paths = paths


# --------------------------------------------------------------------------- names
def escape_name(name: str) -> str:
    """A file name as printable, JSON-safe text that :func:`unescape_name` turns back into ``name``.

    Bytes that are not UTF-8, characters that are not printable (controls, format characters
    such as bidi overrides, separators other than the space, unassigned code points) and ``%``
    itself become ``%XX`` (one per byte of the original name); everything else is kept, so
    ``data.csv`` and ``données.csv`` stay as they are and ``100%.csv`` becomes ``100%25.csv``.
    """
    out: list[str] = []
    for char in name:
        if char == "%" or not char.isprintable():
            out.extend(f"%{b:02X}" for b in _name_bytes(char))
        else:
            out.append(char)
    return "".join(out)


def unescape_name(text: str) -> str:
    """The original name behind :func:`escape_name` (``str`` with surrogate escapes, as ``os`` gives it)."""
    parts: list[bytes] = []
    position = 0
    for match in _PERCENT_BYTE.finditer(text):
        parts.append(text[position : match.start()].encode("utf-8", "surrogatepass"))
        parts.append(bytes([int(match.group(1), 16)]))
        position = match.end()
    parts.append(text[position:].encode("utf-8", "surrogatepass"))
    return os.fsdecode(b"".join(parts))


def _name_bytes(text: str) -> bytes:
    """The bytes the file system holds for ``text`` (lone surrogates that no file system gives: their UTF-8 form)."""
    try:
        return os.fsencode(text)
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


# --------------------------------------------------------------------------- what was read
@dataclass(frozen=True)
class FileSnapshot:
    """What was read of a file: its identity when it was opened and the bytes that were read."""

    device: int
    inode: int
    size: int  # bytes read (for a file rejected unread: its size then)
    mtime_ns: int
    sha256: str | None  # of the bytes read; None when the file was not read
    etag: str | None = None  # an S3 object: the ETag of the object read (device and inode are 0)


@dataclass(frozen=True)
class DeliveredFile:
    """One drop-zone entry after :meth:`DropZone.read`.

    ``name`` is the entry's name as ``os`` gives it (maybe with surrogate escapes), ``shown`` its
    escaped form for reports, records and the ``_source`` column. ``data`` is None when the
    entry was rejected before being read (``rejected`` says why).
    """

    name: str
    shown: str
    data: bytes | None
    snapshot: FileSnapshot | None
    rejected: FileRejected | None = None
    evidence: str = ""  # what identifies an entry that was not read (its kind, link target, size)
    copy: Path | None = None  # DropZone.copy: the local file holding the bytes read (data is then None)


def _describe_mode(mode: int) -> str:
    kinds = (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    return next((text for test, text in kinds if test(mode)), f"not a regular file (mode {oct(mode)})")


class HashingSink:
    """Where :meth:`DropZone._take` puts the bytes: memory, or a new local file; hashes them on the way."""

    def __init__(self, target: Path | None) -> None:
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0
        self.writing = False
        self._chunks: list[bytes] = []
        self._fd = (
            None
            if target is None
            else os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        )

    def add(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        self.size += len(chunk)
        if self._fd is None:
            self._chunks.append(chunk)
            return
        self.writing = True
        view = memoryview(chunk)
        while view:
            view = view[os.write(self._fd, view) :]
        self.writing = False

    def close(self) -> bytes | None:
        """The bytes (in memory), or None when they went to the file (now closed)."""
        if self._fd is None:
            return b"".join(self._chunks)
        os.close(self._fd)
        self._fd = None
        return None

    def discard(self) -> None:
        self._chunks = []
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.target is not None:
            self.target.unlink(missing_ok=True)


class DropZone:
    """The drop-zone folder, opened once; its entries are looked at relative to that descriptor.

    Use as a context manager around :meth:`read` and :meth:`change_since`. A drop zone that does
    not exist has no entries (every name is gone).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.configured = Path(folder)
        self.folder = Path(os.path.realpath(folder))
        self._fd: int | None = None

    @property
    def location(self) -> str:
        """The folder as configured (the :class:`~mlops_core.drop_source.DropSource` seam)."""
        return str(self.configured)

    def scan(
        self, patterns: Sequence[str], rule: ArrivalRule, previous: ScanState | None = None, *, now: float | None = None
    ) -> ScanResult:
        """One scan of the folder under ``rule`` (:func:`mlops_core.dropzone.scan`)."""
        from mlops_core.dropzone import scan

        return scan(self.configured, patterns, rule, previous, now=now)

    def consume(self, name: str, snapshot: FileSnapshot | None, run_key: str, *, max_bytes: int) -> Consumed | None:
        """Move entry ``name`` to ``<drop_zone>.archive/<run_key>/``; compare the archived file with what was read.

        ``None`` when the entry is gone (an earlier try moved it). The result's ``extra`` holds
        the bytes the archived file has beyond what was read (:func:`archived_extra`).
        """
        from mlops_core.drop_source import Consumed
        from mlops_core.dropzone import archive_dir_for, archive_file

        path = self.folder / name
        if not os.path.lexists(path):
            return None
        target = archive_file(path, archive_dir_for(self.configured, run_key))
        extra = None
        if snapshot is not None and snapshot.sha256 is not None:
            extra = archived_extra(target, snapshot, max_bytes=max_bytes)
        return Consumed(archived_as=escape_name(os.fspath(target)), extra=extra)

    def unconsumed(self, announced: Sequence[Mapping[str, Any]]) -> list[str]:
        """Announced paths still in the folder (ingest moves what it consumed to the archive)."""
        return [str(f["path"]) for f in announced if os.path.exists(str(f["path"]))]

    def __enter__(self) -> DropZone:
        try:
            self._fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._fd = None
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # ------------------------------------------------------------------ paths
    def names_of(self, paths: Iterable[object]) -> list[str]:
        """The entry names of ``paths``, each an absolute path directly inside the drop zone.

        Raises:
            UntrustedPath: naming every refused path and the drop zone; nothing was touched.
        """
        from mlops_core.drop_source import names_of

        return names_of(
            paths,
            self._name_of,
            zone=escape_name(str(self.folder)),
            entries=("files", "directly inside"),
            show=_show_path,
        )

    def _name_of(self, path: object) -> tuple[str, str]:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if not isinstance(path, str):
            return "", f"not a path but {type(path).__name__}"
        if "\x00" in path:
            return "", "contains a NUL byte"
        try:
            os.fsencode(path)
        except UnicodeEncodeError:
            return "", "cannot be a file name (not encodable)"
        if not os.path.isabs(path):
            return "", "not an absolute path"
        parts = path.split("/")
        if any(part in (".", "..") for part in parts):
            return "", "contains '.' or '..'"
        folder, name = os.path.split(path)
        if not name:
            return "", "names a folder, not a file"
        if name.startswith("."):
            return "", "a hidden name (uploads in progress use hidden names)"
        if os.path.realpath(folder) != str(self.folder):
            return "", "outside the drop zone"
        return name, ""

    # ------------------------------------------------------------------ reading
    def read(self, name: str, *, max_bytes: int = MAX_FILE_BYTES) -> DeliveredFile | None:
        """Read entry ``name`` safely into memory; None when it is gone (e.g. archived by an earlier try).

        Never follows a link, never opens anything but a regular file, never reads more than
        ``max_bytes + 1`` bytes. Problems with the entry come back as ``rejected``
        (``not_regular_file``, ``too_large``, ``unreadable``), never as an exception.
        """
        return self._take(name, max_bytes, None)

    def copy(
        self, name: str, target: str | os.PathLike[str], *, max_bytes: int = MAX_FILE_BYTES
    ) -> DeliveredFile | None:
        """:meth:`read`, but the bytes go to the new local file ``target`` instead of memory.

        The entry is read once, from the descriptor that was checked, in chunks of
        :data:`READ_CHUNK` bytes, hashed on the way; ``target`` (created exclusively, mode 0600)
        then holds exactly the bytes the snapshot's SHA-256 describes, so a later reader of the copy
        (any number of passes, random access) sees what was hashed even if the entry changes in
        the drop zone meanwhile. The result's ``copy`` names it and ``data`` is None. Nothing is
        left in ``target`` when the entry is rejected. An error writing ``target`` (a full disk)
        is raised: it is no fault of the file.
        """
        return self._take(name, max_bytes, Path(target))

    def _take(self, name: str, max_bytes: int, target: Path | None) -> DeliveredFile | None:
        shown = escape_name(name)
        if self._fd is None:
            return None
        try:
            before = os.stat(name, dir_fd=self._fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return self._unreadable(name, shown, exc)
        if not stat.S_ISREG(before.st_mode):
            return self._not_regular(name, shown, before)
        if before.st_size > max_bytes:
            return self._too_large(name, shown, before, max_bytes)
        try:
            fd = os.open(
                name,
                os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC,
                dir_fd=self._fd,
            )
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO, errno.ENODEV, errno.EISDIR):  # swapped for a link/pipe/...
                try:
                    return self._not_regular(name, shown, os.stat(name, dir_fd=self._fd, follow_symlinks=False))
                except OSError:
                    return None
            return self._unreadable(name, shown, exc)
        try:
            sink = HashingSink(target)
        except BaseException:
            os.close(fd)
            raise
        try:
            try:
                opened = os.fstat(fd)
                if not stat.S_ISREG(opened.st_mode):
                    sink.discard()
                    return self._not_regular(name, shown, opened)
                if opened.st_size > max_bytes:
                    sink.discard()
                    return self._too_large(name, shown, opened, max_bytes)
                while sink.size <= max_bytes:
                    chunk = os.read(fd, min(READ_CHUNK, max_bytes + 1 - sink.size))
                    if not chunk:
                        break
                    sink.add(chunk)  # an error writing the copy is raised, not blamed on the file
            except OSError as exc:
                if sink.writing:
                    raise
                sink.discard()
                return self._unreadable(name, shown, exc)
            finally:
                os.close(fd)
        except BaseException:
            sink.discard()
            raise
        if sink.size > max_bytes:  # it grew past the limit while being read
            sink.discard()
            return self._too_large(name, shown, opened, max_bytes)
        snapshot = FileSnapshot(
            device=opened.st_dev,
            inode=opened.st_ino,
            size=sink.size,
            mtime_ns=opened.st_mtime_ns,
            sha256=sink.digest.hexdigest(),
        )
        return DeliveredFile(name=name, shown=shown, data=sink.close(), snapshot=snapshot, copy=target)

    def _not_regular(self, name: str, shown: str, st: os.stat_result) -> DeliveredFile:
        evidence = _describe_mode(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(name, dir_fd=self._fd)
                evidence += f"; link to {escape_name(target)!r}"
            except OSError:
                pass
        return DeliveredFile(
            name=name,
            shown=shown,
            data=None,
            snapshot=None,
            evidence=evidence,
            rejected=FileRejected(
                "not_regular_file",
                f"{shown}: {evidence}, not a regular file; it was not read (nothing it points to is ingested) "
                "and is moved to the archive. Deliver the data as a regular file",
            ),
        )

    def _too_large(self, name: str, shown: str, st: os.stat_result, max_bytes: int) -> DeliveredFile:
        snapshot = FileSnapshot(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, None)
        return DeliveredFile(
            name=name,
            shown=shown,
            data=None,
            snapshot=snapshot,
            evidence=f"{st.st_size} bytes",
            rejected=FileRejected(
                "too_large",
                f"{shown}: {st.st_size} bytes (or more), above the limit of {max_bytes} bytes per file; it was "
                "not read and is moved to the archive. Split it into smaller files or raise the limit",
            ),
        )

    def _unreadable(self, name: str, shown: str, exc: OSError) -> DeliveredFile:
        detail = f"{type(exc).__name__}: {exc.strerror or exc}"
        return DeliveredFile(
            name=name,
            shown=shown,
            data=None,
            snapshot=None,
            evidence=detail,
            rejected=FileRejected(
                "unreadable",
                f"{shown}: could not be read ({detail}); it is moved to the archive. "
                "Check its permissions and deliver it again",
            ),
        )

    # ------------------------------------------------------------------ changes
    def change_since(self, name: str, snapshot: FileSnapshot) -> str | None:
        """How entry ``name`` differs from what was read, or None when it is unchanged.

        ``"vanished"``: gone; ``"replaced"``: another file (inode) under that name now, the one
        read is gone; ``"changed"``: the same file with another size or modification time (a
        writer is still at it).
        """
        if self._fd is None:
            return "vanished"
        try:
            now = os.stat(name, dir_fd=self._fd, follow_symlinks=False)
        except FileNotFoundError:
            return "vanished"
        if (now.st_dev, now.st_ino) != (snapshot.device, snapshot.inode):
            return "replaced"
        if now.st_size != snapshot.size or now.st_mtime_ns != snapshot.mtime_ns:
            return "changed"
        return None


@dataclass(frozen=True)
class ArchivedExtra:
    """Bytes of an archived file that were not parsed: its tail, or all of it when it is not what was read."""

    data: bytes
    whole_file: bool  # True: the archived file is another file or was rewritten, not just appended to
    archived_size: int
    sha256: str  # of the whole archived file


def archived_extra(target: str | os.PathLike[str], snapshot: FileSnapshot, *, max_bytes: int) -> ArchivedExtra | None:
    """Compare an archived file with what was read from it; None when they are the same bytes.

    Reads ``target`` without following links. When the file grew after it was read (a writer
    still appending), returns the tail; when it is another file or its first bytes changed,
    returns it whole. At most ``max_bytes`` are returned (the archive keeps every byte).
    """
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None  # gone or not a file: nothing more to compare
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        digest = hashlib.sha256()
        prefix = hashlib.sha256()
        kept: list[bytes] = []
        kept_size = 0
        position = 0
        while True:
            chunk = os.read(fd, READ_CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            head = chunk[: max(0, snapshot.size - position)]
            prefix.update(head)
            tail = chunk[len(head) :]
            room = max_bytes - kept_size
            if room > 0:
                kept.append(tail[:room])
                kept_size += min(len(tail), room)
            position += len(chunk)
    finally:
        os.close(fd)
    same_file = (st.st_dev, st.st_ino) == (snapshot.device, snapshot.inode)
    same_prefix = position >= snapshot.size and prefix.hexdigest() == snapshot.sha256
    if same_file and same_prefix and position == snapshot.size:
        return None
    if same_file and same_prefix:
        return ArchivedExtra(b"".join(kept), whole_file=False, archived_size=position, sha256=digest.hexdigest())
    whole = _read_head(target, max_bytes)
    return ArchivedExtra(whole, whole_file=True, archived_size=position, sha256=digest.hexdigest())


def _read_head(target: str | os.PathLike[str], max_bytes: int) -> bytes:
    fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        chunks: list[bytes] = []
        total = 0
        while total < max_bytes:
            chunk = os.read(fd, min(READ_CHUNK, max_bytes - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _show_path(path: object) -> str:
    from mlops_core.drop_source import shown_path

    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    return shown_path(path)
