"""S3 event notifications (as SQS delivers them) -> the drop-zone objects they announce.

An ``s3://`` drop zone watched by an AssetWatcher learns of new objects from the bucket's event
notifications, sent to an SQS queue and read there by Airflow's ``MessageQueueTrigger``. Each
message is untrusted input: anyone allowed to send to the queue can put anything in it. What
:func:`announced_objects` takes from a batch of messages:

* bodies in the three shapes S3 notifications reach SQS in: S3's own (``{"Records": [...]}``),
  wrapped by SNS (``{"Type": "Notification", "Message": "<the S3 JSON>"}``), and EventBridge's
  (``{"detail-type": "Object Created", "detail": {...}}``);
* only ``ObjectCreated:*`` events (removals, restores, replication and S3's ``s3:TestEvent`` are
  skipped), for the drop zone's bucket, with a key directly under its prefix (the drop zone is
  not recursive) and no ``.``/``..`` parts. The key is URL-decoded (S3 sends keys the way
  ``quote_plus`` encodes them; EventBridge sends them as they are);
* each object once, however often it is announced (S3 delivers at least once, and some uploads,
  a multipart one on moto for example, send two events).

Everything else is counted, with its reason, in :attr:`Announced.skipped`, never raised: one bad
message must not hold back the good ones in the same batch. Whether the object is still there,
complete and new is decided by ingest as for any other path (its checksum ledger ignores an
object already ingested), so a duplicate or late notification adds nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

MAX_BODY_BYTES = 256 * 1024  # SQS's own limit on a message; anything larger did not come from SQS


@dataclass(frozen=True)
class Announced:
    """What a batch of notifications announces: ``s3://`` URIs in order of first mention, and what was skipped."""

    uris: tuple[str, ...] = ()
    skipped: Mapping[str, int] = field(default_factory=dict)  # reason -> count


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix/`` -> ``("bucket", "prefix/")`` (the prefix ends with ``/`` unless empty)."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return bucket, prefix


def announced_objects(messages: Iterable[Any], drop_zone: str) -> Announced:
    """The objects of ``drop_zone`` (``s3://bucket/prefix/``) that ``messages`` announce as created.

    ``messages`` are SQS messages as boto3 returns them (dicts with a ``Body``), or bare bodies.
    """
    bucket, prefix = split_s3_uri(drop_zone)
    uris: dict[str, None] = {}
    skipped: Counter[str] = Counter()
    for message in messages:
        body = message.get("Body") if isinstance(message, Mapping) else message
        for record, reason in _records(body):
            if reason:
                skipped[reason] += 1
                continue
            key, reason = _created_key(record, bucket, prefix)
            if reason:
                skipped[reason] += 1
            else:
                uris.setdefault(f"s3://{bucket}/{key}", None)
    return Announced(tuple(uris), dict(skipped))


def _records(body: Any) -> Iterable[tuple[Mapping[str, Any], str]]:
    """Each event record of one message body (as ``(record, "")``), or ``({}, reason)`` when it has none."""
    if not isinstance(body, str | bytes) or len(body) > MAX_BODY_BYTES:
        yield {}, "not_a_notification"
        return
    try:
        doc = json.loads(body)
    except ValueError:
        yield {}, "not_json"
        return
    if isinstance(doc, Mapping) and doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):
        yield from _records(doc["Message"])  # SNS -> SQS: the S3 notification is the SNS message
        return
    if isinstance(doc, Mapping) and doc.get("Event") == "s3:TestEvent":
        yield {}, "test_event"  # S3 sends one when the notification configuration is saved
        return
    if isinstance(doc, Mapping) and isinstance(doc.get("detail"), Mapping) and doc.get("source") == "aws.s3":
        yield _from_eventbridge(doc), ""
        return
    records = doc.get("Records") if isinstance(doc, Mapping) else None
    if not isinstance(records, list) or not records:
        yield {}, "not_a_notification"
        return
    for record in records:
        yield (record, "") if isinstance(record, Mapping) else ({}, "not_a_notification")


def _from_eventbridge(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    """An EventBridge S3 event in the shape of an S3 notification record (its key is not URL-encoded)."""
    detail = doc["detail"]
    created = doc.get("detail-type") == "Object Created"
    obj, bucket = _mapping(detail.get("object")), _mapping(detail.get("bucket"))
    return {
        "eventName": "ObjectCreated:EventBridge" if created else str(doc.get("detail-type")),
        "s3": {"bucket": {"name": bucket.get("name")}, "object": {"key": obj.get("key")}},
        "_key_encoded": False,
    }


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _created_key(record: Mapping[str, Any], bucket: str, prefix: str) -> tuple[str, str]:
    """``(key, "")`` for an object created directly under ``prefix`` of ``bucket``, else ``("", reason)``."""
    event = record.get("eventName")
    if not isinstance(event, str) or not event.startswith("ObjectCreated:"):
        return "", "not_object_created"
    where = _mapping(record.get("s3"))
    bucket_of, object_of = _mapping(where.get("bucket")), _mapping(where.get("object"))
    raw_key = object_of.get("key")
    if not isinstance(raw_key, str) or not raw_key:
        return "", "no_key"
    if bucket_of.get("name") != bucket:
        return "", "other_bucket"
    key = unquote_plus(raw_key) if record.get("_key_encoded", True) else raw_key
    if not key.startswith(prefix):
        return "", "outside_prefix"
    name = key[len(prefix) :]
    if not name or "/" in name or name in (".", "..") or "\x00" in name:
        return "", "not_directly_in_drop_zone"
    return key, ""
