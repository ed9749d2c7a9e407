"""An S3 prefix as the drop zone: the :class:`~mlops_core.drop_source.DropSource` of ``dataset.drop_zone: s3://...``.

Data files land as objects directly under ``s3://<bucket>/<prefix>/`` (not in sub-folders: the
watch is not recursive, as for a local folder). The boto3 client is injected (the Airflow layer
passes ``S3Hook(aws_conn_id).get_conn()``), so this module never imports Airflow.

**When an object is complete.** S3 makes an object visible whole or not at all: a multipart
upload in progress is not listed by ``ListObjectsV2`` (it has no object yet), and a PUT replaces
an object atomically. But a writer may still replace it (tools that re-upload, retries), so

``stable`` (default)
    the object is listed with the same ETag, size and LastModified by two scans at least one
    poll apart, and its LastModified is at least ``min_age_seconds`` old;
``rename``
    writers upload to a hidden name (``.a.csv.part``) and copy it to its visible name when done;
    any visible matching object at least ``min_age_seconds`` old is ready.

``marker`` is not offered for S3 (the settings refuse it). Hidden names are never taken, nor
sub-folders, nor keys that cannot be a file name (:func:`name_problem`: control characters,
``..``, more than 255 bytes); each is reported with its reason.

**Reading.** :meth:`S3DropZone.copy` asks ``HeadObject`` for the object's ETag and size (above the
size limit: ``too_large``, never downloaded), then downloads with ``IfMatch`` on that ETag into a
private local file, hashing on the way: an object replaced between the two requests is not read
half-old, half-new (S3 answers 412, the object is left for the next run); an object deleted
meanwhile is "gone". :meth:`S3DropZone.change_since` compares the ETag again after the batch:
an object replaced after it was read is ``replaced`` (what was read is complete; the new object
is left for the next run).

**Consumed objects** (``dataset.mark_consumed``) are either *archived*: copied (``CopySourceIfMatch``
the ETag read) to ``<prefix>.archive/<run>/<name>`` and then deleted (``IfMatch`` the same ETag,
so a new upload under the same key is never deleted); or *tagged* in place with
``mlops-consumed-by=<run>`` and ``mlops-consumed-etag=<ETag read>``. A scan counts an object as
consumed only when the tagged ETag is its own, so an object replaced after the tag is announced
again. Tagging leaves the objects where they are (for teams whose lifecycle rules expire them);
archiving keeps the prefix short, so a listing stays cheap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from mlops_core.aws_errors import is_missing, is_precondition_failed
from mlops_core.delivered_files import (
    READ_CHUNK,
    DeliveredFile,
    FileRejected,
    FileSnapshot,
    HashingSink,
    escape_name,
)
from mlops_core.drop_source import MARK_CONSUMED, Consumed, names_of
from mlops_core.dropzone import (
    CONSUMED,
    HIDDEN,
    NOT_REGULAR_FILE,
    PATTERN,
    TOO_NEW,
    UNSAFE_NAME,
    WAITING_STABLE,
    ArrivalRule,
    DroppedFile,
    IgnoredEntry,
    ScanResult,
    ScanState,
    Sighting,
    matches,
)

log = logging.getLogger(__name__)

TAG_CONSUMED_BY = "mlops-consumed-by"
TAG_CONSUMED_ETAG = "mlops-consumed-etag"
MAX_NAME_BYTES = 255  # as a file name on Linux; S3 allows 1024-byte keys, reports and records should not
COPY_OBJECT_LIMIT = 5 * 1024**3  # CopyObject copies at most 5 GiB; larger objects are copied in parts
_POLL_GAP_FRACTION = 0.9  # as the local watch: a gap of 90 % of a poll counts as one poll
_MAX_TAGS = 10  # S3's limit per object


def name_problem(name: str) -> str:
    """Why ``name`` (a key relative to the drop-zone prefix) cannot be a drop-zone entry; "" when it can."""
    if not name:
        return "an empty name (the prefix itself)"
    if "/" in name or "\\" in name:
        return "in a sub-folder or a path (the drop zone is not recursive)"
    if name in (".", ".."):
        return "'.' or '..'"
    if any(not char.isprintable() for char in name):
        return "control or unprintable characters"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"longer than {MAX_NAME_BYTES} bytes"
    return ""


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix/`` -> ``("bucket", "prefix/")`` (the prefix ends with ``/``)."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// location: {uri!r}")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def _ns(stamp: datetime) -> int:
    return int(stamp.timestamp()) * 1_000_000_000 + stamp.microsecond * 1000


def _plain_etag(etag: str) -> str:
    return etag.strip('"')


class S3DropZone:
    """``s3://bucket/prefix/`` as a drop zone, on an injected boto3 S3 client.

    :param client: a boto3 S3 client (``S3Hook(aws_conn_id).get_conn()`` in Airflow).
    :param bucket: the bucket.
    :param prefix: the drop zone's folder in the bucket (``drop/churn``); must not be empty, so
        that the archive (``<prefix>.archive/``) sits beside it, not inside it.
    :param mark_consumed: ``archive`` (copy to the archive prefix, then delete) or ``tag``.
    """

    def __init__(self, client: Any, bucket: str, prefix: str, *, mark_consumed: str = "archive") -> None:
        if not bucket or "/" in bucket:
            raise ValueError(f"S3 bucket must be a bucket name, not {bucket!r}")
        cleaned = prefix.strip("/")
        if not cleaned or any(part in ("", ".", "..") for part in cleaned.split("/")):
            raise ValueError(
                f"an S3 drop zone needs a prefix such as 'drop/churn' (no '.', '..' or '//'), not {prefix!r}"
            )
        if mark_consumed not in MARK_CONSUMED:
            raise ValueError(f"mark_consumed must be one of {list(MARK_CONSUMED)}, not {mark_consumed!r}")
        self.client = client
        self.bucket = bucket
        self.prefix = f"{cleaned}/"
        self.archive_prefix = f"{cleaned}.archive/"
        self.mark_consumed = mark_consumed

    def __repr__(self) -> str:
        return f"S3DropZone({self.location!r}, mark_consumed={self.mark_consumed!r})"

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def __enter__(self) -> S3DropZone:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def _uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # ------------------------------------------------------------------ listing
    def _listing(self) -> tuple[list[dict[str, Any]], list[str]]:
        """The objects directly under the prefix and the sub-folders (common prefixes) beside them."""
        paginator = self.client.get_paginator("list_objects_v2")
        objects: list[dict[str, Any]] = []
        folders: list[str] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"):
            objects.extend(page.get("Contents", []))
            folders.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
        return objects, folders

    def scan(
        self, patterns: Sequence[str], rule: ArrivalRule, previous: ScanState | None = None, *, now: float | None = None
    ) -> ScanResult:
        """One listing of the prefix under ``rule`` (``stable`` or ``rename``; see the module docstring).

        Ready objects are sorted by name and carry their ETag; every other key is in ``ignored``
        with its reason (names escaped). A missing bucket or a denied listing raises.
        """
        if rule.rule not in ("stable", "rename"):
            raise ValueError(
                f"arrival rule {rule.rule!r} is not offered for an S3 drop zone ({self.location}); "
                "set dataset.arrival.rule to 'stable' or 'rename'"
            )
        now = time.time() if now is None else now
        previous = previous or {}
        objects, folders = self._listing()
        ignored = [
            IgnoredEntry(
                escape_name(f[len(self.prefix) :]), NOT_REGULAR_FILE, "a sub-folder (the watch is not recursive)"
            )
            for f in folders
        ]
        ready: list[DroppedFile] = []
        state: dict[str, Sighting] = {}
        for item in sorted(objects, key=lambda o: str(o["Key"])):
            key = str(item["Key"])
            name = key[len(self.prefix) :]
            if not name:  # the "folder" object some consoles create for the prefix itself
                continue
            shown = escape_name(name)
            problem = name_problem(name)
            if problem:
                ignored.append(IgnoredEntry(shown, UNSAFE_NAME, f"the key cannot be a file name: {problem}"))
                continue
            if name.startswith("."):
                ignored.append(IgnoredEntry(shown, HIDDEN, "hidden names are uploads in progress or not data"))
                continue
            if not matches(name, patterns):
                ignored.append(IgnoredEntry(shown, PATTERN, f"matches none of {list(patterns)} (case-insensitive)"))
                continue
            path = self._uri(key)
            modified = _ns(item["LastModified"])
            etag = _plain_etag(str(item["ETag"]))
            seen = Sighting(size=int(item["Size"]), mtime_ns=modified, inode=0, since=now, etag=etag)
            before = previous.get(path)
            if before is not None and before.same_file_as(seen):
                seen = before  # unchanged: so since the earlier sighting (and consumed if it was)
            if seen.consumed:
                state[path] = seen
                ignored.append(IgnoredEntry(shown, CONSUMED, "tagged as consumed by an ingest run"))
                continue
            reason, detail = self._readiness(seen, before, rule, now)
            if reason is None and self.mark_consumed == "tag" and self._tagged_consumed(key, etag):
                seen = Sighting(seen.size, seen.mtime_ns, 0, seen.since, etag, consumed=True)
                reason, detail = CONSUMED, "tagged as consumed by an ingest run"
            state[path] = seen
            if reason is not None:
                ignored.append(IgnoredEntry(shown, reason, detail))
                continue
            ready.append(DroppedFile(path=path, name=shown, size=seen.size, mtime=modified / 1e9, etag=etag))
        return ScanResult(
            directory=self.location,
            exists=True,
            ready=tuple(ready),
            ignored=tuple(sorted(ignored, key=lambda e: e.name)),
            state=state,
        )

    @staticmethod
    def _readiness(seen: Sighting, before: Sighting | None, rule: ArrivalRule, now: float) -> tuple[str | None, str]:
        unchanged_long_enough = (
            before is not None and seen is before and now - seen.since >= rule.poll_seconds * _POLL_GAP_FRACTION
        )
        if rule.rule == "stable" and not unchanged_long_enough:
            return WAITING_STABLE, (
                f"ETag/size/LastModified must stay unchanged across two listings {rule.poll_seconds:g}s apart"
            )
        age = now - seen.mtime_ns / 1e9
        if age < rule.min_age_seconds:
            return TOO_NEW, f"modified {max(age, 0.0):.1f}s ago; must be at least {rule.min_age_seconds:g}s old"
        return None, ""

    def _tagged_consumed(self, key: str, etag: str) -> bool:
        """Whether the object under ``key`` with this ETag carries our consumed tag (for this very ETag)."""
        try:
            tags = self.client.get_object_tagging(Bucket=self.bucket, Key=key)["TagSet"]
        except Exception as exc:
            if is_missing(exc):
                return False
            raise
        return any(t["Key"] == TAG_CONSUMED_ETAG and t["Value"] == etag for t in tags)

    # ------------------------------------------------------------------ paths
    def names_of(self, paths: Iterable[object]) -> list[str]:
        """The entry names of ``paths``, each ``s3://<bucket>/<prefix>/<name>`` directly under the prefix.

        Raises:
            UntrustedPath: naming every refused path and the drop zone; nothing was touched.
        """
        return names_of(paths, self._name_of, zone=self.location, entries=("objects", "directly under"))

    def _name_of(self, path: object) -> tuple[str, str]:
        if not isinstance(path, str):
            return "", f"not an s3:// URI but {type(path).__name__}"
        if not path.startswith(self.location):
            return "", "outside the drop zone"
        name = path[len(self.location) :]
        problem = name_problem(name)
        if problem:
            return "", problem
        if name.startswith("."):
            return "", "a hidden name (uploads in progress use hidden names)"
        return name, ""

    # ------------------------------------------------------------------ reading
    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            answer: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if is_missing(exc):
                return None
            raise
        return answer

    def copy(self, name: str, target: str | Path, *, max_bytes: int) -> DeliveredFile | None:
        """Download object ``name`` (the ETag HeadObject gave, ``IfMatch``) into the new local file ``target``.

        ``None`` when the object is gone, or was replaced between HeadObject and the download (it
        is left for the next run). Above ``max_bytes``: rejected ``too_large`` without being
        downloaded. A network error while downloading is raised (the task's retry reads it again).
        """
        key = self.prefix + name
        shown = escape_name(name)
        head = self._head(key)
        if head is None:
            return None
        etag = _plain_etag(str(head["ETag"]))
        size = int(head["ContentLength"])
        modified = _ns(head["LastModified"])
        if size > max_bytes:
            return self._too_large(name, shown, size, modified, etag, max_bytes)
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=key, IfMatch=f'"{etag}"')
        except Exception as exc:
            if is_missing(exc):
                return None
            if is_precondition_failed(exc):
                log.warning("%s was replaced while being read; the new object is left for the next run", shown)
                return None
            raise
        body = answer["Body"]
        try:
            sink = HashingSink(Path(target))
            try:
                for chunk in body.iter_chunks(READ_CHUNK):
                    sink.add(chunk)
                    if sink.size > max_bytes:
                        break
            except BaseException:
                sink.discard()
                raise
        finally:
            body.close()
        if sink.size > max_bytes:
            sink.discard()
            return self._too_large(name, shown, sink.size, modified, etag, max_bytes)
        sink.close()
        snapshot = FileSnapshot(0, 0, sink.size, modified, sink.digest.hexdigest(), etag=etag)
        return DeliveredFile(name=name, shown=shown, data=None, snapshot=snapshot, copy=Path(target))

    def _too_large(self, name: str, shown: str, size: int, modified: int, etag: str, max_bytes: int) -> DeliveredFile:
        return DeliveredFile(
            name=name,
            shown=shown,
            data=None,
            snapshot=FileSnapshot(0, 0, size, modified, None, etag=etag),
            evidence=f"{size} bytes",
            rejected=FileRejected(
                "too_large",
                f"{shown}: {size} bytes (or more), above the limit of {max_bytes} bytes per file; it was not "
                "downloaded and is marked consumed. Split it into smaller files or raise dataset.max_file_mb",
            ),
        )

    def change_since(self, name: str, snapshot: FileSnapshot) -> str | None:
        """``"vanished"`` (deleted), ``"replaced"`` (another ETag: S3 objects change whole) or ``None``."""
        head = self._head(self.prefix + name)
        if head is None:
            return "vanished"
        if _plain_etag(str(head["ETag"])) != snapshot.etag:
            return "replaced"
        return None

    # ------------------------------------------------------------------ consumed
    def consume(self, name: str, snapshot: FileSnapshot | None, run_key: str, *, max_bytes: int) -> Consumed | None:
        """Archive or tag object ``name`` as consumed by run ``run_key`` -- only the object that was read.

        ``None`` when there is nothing to mark: the object is gone (an earlier try archived it:
        then its archived copy is returned), or it was replaced since it was read (the new one is
        left for the next run). ``max_bytes`` is unused: S3 objects do not grow after they are read.
        """
        key = self.prefix + name
        etag = snapshot.etag if snapshot is not None else None
        if etag is None:
            head = self._head(key)
            if head is None:
                return None
            etag = _plain_etag(str(head["ETag"]))
        if self.mark_consumed == "tag":
            return self._tag(name, key, etag, run_key)
        return self._archive(name, key, etag, run_key, snapshot.size if snapshot is not None else 0)

    def _archive(self, name: str, key: str, etag: str, run_key: str, size: int) -> Consumed | None:
        target = f"{self.archive_prefix}{run_key}/{name}"
        source = {"Bucket": self.bucket, "Key": key}
        try:
            if size > COPY_OBJECT_LIMIT:
                self.client.copy(source, self.bucket, target, ExtraArgs={"CopySourceIfMatch": f'"{etag}"'})
            else:
                self.client.copy_object(
                    Bucket=self.bucket, Key=target, CopySource=source, CopySourceIfMatch=f'"{etag}"'
                )
        except Exception as exc:
            if is_missing(exc):  # gone: archived by an earlier try of this run, or deleted by someone
                return Consumed(escape_name(self._uri(target))) if self._head(target) is not None else None
            if is_precondition_failed(exc):
                log.warning("%s was replaced after it was read; the new object is left for the next run", name)
                return None
            raise
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key, IfMatch=f'"{etag}"')
        except Exception as exc:
            if is_precondition_failed(exc):  # a new upload under the same key: keep it for the next run
                log.warning("%s was replaced after it was archived; the new object is left for the next run", name)
            elif not is_missing(exc):
                raise
        return Consumed(escape_name(self._uri(target)))

    def _tag(self, name: str, key: str, etag: str, run_key: str) -> Consumed | None:
        try:
            tags = self.client.get_object_tagging(Bucket=self.bucket, Key=key)["TagSet"]
        except Exception as exc:
            if is_missing(exc):
                return None
            raise
        kept = [t for t in tags if t["Key"] not in (TAG_CONSUMED_BY, TAG_CONSUMED_ETAG)]
        if len(kept) + 2 > _MAX_TAGS:
            raise ValueError(
                f"{self._uri(key)} has {len(kept)} tags of its own; S3 allows {_MAX_TAGS} and marking it consumed "
                "needs two: remove some, or set dataset.mark_consumed to archive"
            )
        tag_set = [*kept, {"Key": TAG_CONSUMED_BY, "Value": run_key}, {"Key": TAG_CONSUMED_ETAG, "Value": etag}]
        try:
            self.client.put_object_tagging(Bucket=self.bucket, Key=key, Tagging={"TagSet": tag_set})
        except Exception as exc:
            if is_missing(exc):
                return None
            raise
        # Replaced between the read and the tag? The tag names the ETag read, not the new object's,
        # so scans still announce the new object.
        return Consumed(escape_name(self._uri(key)))

    def unconsumed(self, announced: Sequence[Mapping[str, Any]]) -> list[str]:
        """Announced objects still waiting: same ETag under their key, and (``tag``) not tagged consumed."""
        waiting: list[str] = []
        for entry in announced:
            path = str(entry.get("path", ""))
            name, problem = self._name_of(path)
            if problem:
                log.warning("%s is not in the drop zone %s (%s): not waiting for it", path, self.location, problem)
                continue
            head = self._head(self.prefix + name)
            if head is None:
                continue
            etag = _plain_etag(str(head["ETag"]))
            if entry.get("etag") is not None and etag != entry["etag"]:
                continue  # the announced object was replaced: it is not the one to wait for
            if self.mark_consumed == "tag" and self._tagged_consumed(self.prefix + name, etag):
                continue
            waiting.append(path)
        return waiting
