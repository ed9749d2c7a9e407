"""Object storage on Amazon S3: the :class:`~mlops_core.storage.ObjectStore` of ``backends.storage: aws``.

The store lives under one configured location, ``s3://<bucket>/<prefix>``; every key is relative
to it and a key that would leave it (absolute, ``..``) is refused, as is a URI of another bucket
or outside the prefix (:meth:`S3ObjectStore.key_of`). The boto3 client is injected: the Airflow
layer passes the provider's ``S3Hook(aws_conn_id=...).get_conn()`` (credentials and endpoint come
from the Airflow connection), so this module never imports Airflow and never sees a secret.

Integrity, end to end:

- every write sends ``ChecksumAlgorithm=SHA256``: S3 recomputes the checksum of what it received
  and refuses the object (``BadDigest``) when a byte changed on the way;
- every object also carries the SHA-256 of its whole content in its metadata (``x-amz-meta-sha256``)
  -- one digest whether the object went up in one request or in parts -- and every read checks
  the bytes against it (:class:`ObjectCorrupted` otherwise). A read of an object this store did
  not write (no digest) is refused with the same error, so nothing unverified reaches a stage.

Objects above ``multipart_threshold`` bytes go up as multipart uploads (``multipart_chunksize``
parts, through boto3's managed transfer); an upload that fails part-way is aborted by boto3 and
never becomes visible under its key. When the bucket has versioning, writes return the object's
``VersionId`` (None otherwise), so callers can record exactly which version they wrote, and
``get_bytes(key, object_version=...)`` reads exactly that version back (a dataset manifest pins
each partition file this way).
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path
from typing import Any

from mlops_core.aws_errors import aws_error
from mlops_core.aws_errors import is_missing as _not_found
from mlops_core.storage import ObjectInfo, ObjectNotFound, _clean_key

log = logging.getLogger(__name__)

SHA256_METADATA = "sha256"  # x-amz-meta-sha256: hex digest of the whole object
MIB = 1024 * 1024
# How S3 answers a VersionId it does not have: NoSuchVersion; InvalidArgument for a malformed id.
_NO_VERSION = frozenset({"NoSuchVersion", "InvalidArgument"})


class ObjectCorrupted(IOError):
    """An object's bytes do not match the SHA-256 recorded when it was written (or none was recorded)."""


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


class S3ObjectStore:
    """``s3://bucket/prefix`` as an object store, on an injected boto3 S3 client.

    :param client: a boto3 S3 client (``S3Hook(aws_conn_id).get_conn()`` in Airflow).
    :param bucket: the bucket.
    :param prefix: the store's folder in the bucket (``mlops/dev``); "" for the whole bucket.
    :param multipart_threshold: objects at least this large go up in parts.
    :param multipart_chunksize: size of each part (S3 needs at least 5 MiB for all but the last).
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        multipart_threshold: int = 64 * MIB,
        multipart_chunksize: int = 16 * MIB,
    ) -> None:
        if not bucket or "/" in bucket:
            raise ValueError(f"S3 bucket must be a bucket name, not {bucket!r}")
        if multipart_chunksize < 5 * MIB:
            raise ValueError(
                f"multipart_chunksize must be at least 5 MiB (S3's minimum part size), not {multipart_chunksize}"
            )
        self.client = client
        self.bucket = bucket
        cleaned = _clean_key(prefix.strip("/")) if prefix.strip("/") else ""
        self.prefix = f"{cleaned}/" if cleaned else ""
        self.multipart_threshold = int(multipart_threshold)
        self.multipart_chunksize = int(multipart_chunksize)

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.uri()!r})"

    # ----------------------------------------------------------------- keys
    def _object_key(self, key: str) -> str:
        cleaned = _clean_key(key)
        if not cleaned:
            raise ValueError(f"object key must name an object inside {self.uri()}: {key!r}")
        return self.prefix + cleaned

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self._object_key(key) if key else self.prefix}"

    # ----------------------------------------------------------------- writing
    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=self.multipart_threshold, multipart_chunksize=self.multipart_chunksize
        )

    def _upload(self, key: str, fileobj: Any, size: int, sha256: str) -> str | None:
        target = self._object_key(key)
        extra = {"ChecksumAlgorithm": "SHA256", "Metadata": {SHA256_METADATA: sha256}}
        if size < self.multipart_threshold:
            answer = self.client.put_object(Bucket=self.bucket, Key=target, Body=fileobj, **extra)
            version: str | None = answer.get("VersionId")
            return version
        log.info("Uploading %s (%.1f MiB) in %d MiB parts", self.uri(key), size / MIB, self.multipart_chunksize // MIB)
        self.client.upload_fileobj(fileobj, self.bucket, target, ExtraArgs=extra, Config=self._transfer_config())
        return self.version_id(key)

    def put_bytes(self, key: str, data: bytes) -> str | None:
        """Write ``data`` under ``key`` (whole or not at all); the object's ``VersionId`` when versioned."""
        return self._upload(key, io.BytesIO(data), len(data), hashlib.sha256(data).hexdigest())

    def put_file(self, key: str, path: str | Path) -> str | None:
        """Stream a local file to ``key`` (in parts when large), never holding it in memory."""
        path = Path(path)
        sha256 = _sha256_file(path)
        with path.open("rb") as fh:
            return self._upload(key, fh, path.stat().st_size, sha256)

    # ----------------------------------------------------------------- reading
    def get_bytes(self, key: str, *, object_version: str | None = None) -> bytes:
        """The object's bytes, checked against the digest recorded when it was written.

        ``object_version`` (a ``VersionId`` that ``put_*`` returned) reads exactly that version
        (``s3:GetObjectVersion``), whatever was written under the key since; S3 must answer with
        that version, and a version that was deleted is :class:`~mlops_core.storage.ObjectNotFound`.
        """
        extra = {} if object_version is None else {"VersionId": object_version}
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._object_key(key), **extra)
        except Exception as exc:
            if _not_found(exc) or (object_version is not None and aws_error(exc)[0] in _NO_VERSION):
                which = "" if object_version is None else f" version {object_version!r}"
                raise ObjectNotFound(f"no object {key!r}{which} in {self.uri()}") from exc
            raise
        if object_version is not None and answer.get("VersionId") != object_version:
            raise ObjectCorrupted(
                f"{self.uri(key)}: asked for object version {object_version!r}, S3 answered "
                f"{answer.get('VersionId')!r} (is versioning still enabled on {self.bucket}?)"
            )
        data: bytes = answer["Body"].read()
        recorded = (answer.get("Metadata") or {}).get(SHA256_METADATA)
        if recorded is None:
            raise ObjectCorrupted(
                f"{self.uri(key)} has no recorded sha256 (x-amz-meta-{SHA256_METADATA}): it was not written by this "
                "store, so nothing vouches for its bytes"
            )
        actual = hashlib.sha256(data).hexdigest()
        if actual != recorded:
            raise ObjectCorrupted(f"{self.uri(key)}: expected sha256 {recorded}, read {actual} ({len(data)} bytes)")
        return data

    def get_foreign_bytes(self, key: str) -> bytes:
        """An object written by another service under the prefix (SageMaker's ``model.tar.gz``): no digest
        of ours to check, so S3 checks the checksum its writer sent, where there is one (``ChecksumMode``)."""
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._object_key(key), ChecksumMode="ENABLED")
        except Exception as exc:
            if _not_found(exc):
                raise ObjectNotFound(f"no object {key!r} in {self.uri()}") from exc
            raise
        data: bytes = answer["Body"].read()
        return data

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._object_key(key))
        except Exception as exc:
            if _not_found(exc):
                return False
            raise
        return True

    def version_id(self, key: str) -> str | None:
        """The current ``VersionId`` of ``key`` (None when the bucket has no versioning)."""
        try:
            answer = self.client.head_object(Bucket=self.bucket, Key=self._object_key(key))
        except Exception as exc:
            if _not_found(exc):
                raise ObjectNotFound(f"no object {key!r} in {self.uri()}") from exc
            raise
        version = answer.get("VersionId")
        return None if version in (None, "null") else str(version)

    def list_keys(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix`` (a string prefix, as :class:`~mlops_core.storage.LocalObjectStore`)."""
        prefix = prefix.lstrip("/")
        if prefix:
            _clean_key(prefix)  # validates: relative, no '..'
        paginator = self.client.get_paginator("list_objects_v2")
        out: list[str] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            out.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", []))
        return sorted(out)

    def list_objects(self, prefix: str = "") -> list[ObjectInfo]:
        """As :meth:`list_keys`, with each object's size, ETag (a rewrite gets a new ETag unless the
        bytes are the same) and last-modified time."""
        prefix = prefix.lstrip("/")
        if prefix:
            _clean_key(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        out: list[ObjectInfo] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            out.extend(
                ObjectInfo(
                    item["Key"][len(self.prefix) :],
                    int(item["Size"]),
                    str(item["ETag"]).strip('"'),
                    item.get("LastModified"),
                )
                for item in page.get("Contents", [])
            )
        return sorted(out, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._object_key(key))
