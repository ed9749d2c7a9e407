"""``python -m mlops_demo.ship DESTINATION``: copy ``dags/``, ``include/`` and ``plugins/`` to an environment.

What the CI/CD files of a fork run on a merge to main (``.github/workflows/ci.yml``,
``azure-pipelines.yml``, ``buildspec.yml``, through ``make ship``). The destination is where the
environment's Airflow reads its code:

- ``s3://bucket/prefix`` - e.g. an MWAA environment's bucket (boto3's usual credentials; an
  ``AWS_ENDPOINT_URL`` is honoured, as for moto);
- ``azure://container/prefix`` - Blob Storage (``AZURE_STORAGE_ACCOUNT_URL`` with the usual Azure
  credential chain, or ``AZURE_STORAGE_CONNECTION_STRING``);
- a folder (``/srv/airflow`` or ``file:///srv/airflow``) - a shared volume, or a test.

It works like ``aws s3 sync --delete`` restricted to the three folders: a file whose bytes changed
(MD5) is uploaded, an unchanged one is left alone, and a file under ``<prefix>/dags/``,
``<prefix>/include/`` or ``<prefix>/plugins/`` that no longer exists in the repository is deleted
(a removed DAG must disappear). Nothing else under the prefix is touched. Byte-code, caches and
build metadata are never shipped. It prints what it did and exits non-zero on any error.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

SHIPPED_FOLDERS = ("dags", "include", "plugins")
_SKIPPED_PARTS = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"})
_SKIPPED_SUFFIXES = (".pyc", ".pyo")


def shipped_files(root: Path) -> dict[str, Path]:
    """``relative key -> file`` for every file of the shipped folders under ``root`` (sorted keys)."""
    found: dict[str, Path] = {}
    for folder in SHIPPED_FOLDERS:
        base = root / folder
        if not base.is_dir():
            raise FileNotFoundError(f"{base} is missing: run from the repository root or pass --source")
        for path in sorted(base.rglob("*")):
            relative = path.relative_to(root)
            if not path.is_file() or path.is_symlink():
                continue
            if _SKIPPED_PARTS & set(relative.parts) or path.suffix in _SKIPPED_SUFFIXES:
                continue
            if any(part.endswith(".egg-info") for part in relative.parts):
                continue
            found[relative.as_posix()] = path
    return found


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class Destination(Protocol):
    """Where the files go: list what is there (key -> MD5 hex), put one, delete one."""

    def existing(self) -> dict[str, str]: ...
    def put(self, key: str, data: bytes) -> None: ...
    def delete(self, key: str) -> None: ...


@dataclass
class FolderDestination:
    root: Path

    def existing(self) -> dict[str, str]:
        found = {}
        for folder in SHIPPED_FOLDERS:
            for path in (self.root / folder).rglob("*"):
                if path.is_file():
                    found[path.relative_to(self.root).as_posix()] = md5_hex(path.read_bytes())
        return found

    def put(self, key: str, data: bytes) -> None:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        partial.write_bytes(data)
        os.replace(partial, target)  # a reader sees the old file or the new one, never half of it

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)


@dataclass
class S3Destination:
    bucket: str
    prefix: str
    client: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.client is None:
            import boto3

            self.client = boto3.client("s3")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def existing(self) -> dict[str, str]:
        found = {}
        paginator = self.client.get_paginator("list_objects_v2")
        for folder in SHIPPED_FOLDERS:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(folder) + "/"):
                for item in page.get("Contents", []):
                    key = item["Key"][len(self._key("")) :]
                    found[key] = item["ETag"].strip('"')  # MD5 of a single-part upload (ours)
        return found

    def put(self, key: str, data: bytes) -> None:
        digest = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ContentMD5=digest)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))


@dataclass
class AzureBlobDestination:
    container: str
    prefix: str
    client: Any = field(default=None, repr=False)  # a ContainerClient

    def __post_init__(self) -> None:
        if self.client is None:
            from azure.storage.blob import BlobServiceClient

            connection_string = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
            if connection_string:
                service = BlobServiceClient.from_connection_string(connection_string)
            else:
                account_url = os.environ.get("AZURE_STORAGE_ACCOUNT_URL")
                if not account_url:
                    raise ValueError("set AZURE_STORAGE_ACCOUNT_URL (or AZURE_STORAGE_CONNECTION_STRING) for azure://")
                from azure.identity import DefaultAzureCredential

                service = BlobServiceClient(account_url, credential=DefaultAzureCredential())
            self.client = service.get_container_client(self.container)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def existing(self) -> dict[str, str]:
        found = {}
        for folder in SHIPPED_FOLDERS:
            for blob in self.client.list_blobs(name_starts_with=self._key(folder) + "/"):
                md5 = blob.content_settings.content_md5
                found[blob.name[len(self._key("")) :]] = bytes(md5).hex() if md5 else ""
        return found

    def put(self, key: str, data: bytes) -> None:
        from azure.storage.blob import ContentSettings

        settings = ContentSettings(content_md5=bytearray(hashlib.md5(data, usedforsecurity=False).digest()))
        self.client.upload_blob(self._key(key), data, overwrite=True, content_settings=settings)

    def delete(self, key: str) -> None:
        self.client.delete_blob(self._key(key))


def destination_for(target: str) -> Destination:
    """The destination named by ``s3://``, ``azure://``, ``file://`` or a plain folder path."""
    if target.startswith(("s3://", "azure://")):
        scheme, _, rest = target.partition("://")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ValueError(f"{target}: no bucket/container name")
        if scheme == "s3":
            return S3Destination(bucket, prefix.strip("/"))
        return AzureBlobDestination(bucket, prefix.strip("/"))
    if "://" in target and not target.startswith("file://"):
        raise ValueError(f"{target}: expected s3://bucket/prefix, azure://container/prefix or a folder")
    return FolderDestination(Path(target.removeprefix("file://")).expanduser().resolve())


@dataclass(frozen=True)
class ShipReport:
    uploaded: tuple[str, ...]
    unchanged: int
    deleted: tuple[str, ...]


def ship(source: Path, destination: Destination, *, delete: bool = True) -> ShipReport:
    """Make the destination's ``dags/``, ``include/`` and ``plugins/`` equal to ``source``'s."""
    local = shipped_files(source)
    remote = destination.existing()
    uploaded = []
    for key, path in local.items():
        data = path.read_bytes()
        if remote.get(key) != md5_hex(data):
            destination.put(key, data)
            uploaded.append(key)
    deleted = sorted(set(remote) - set(local)) if delete else []
    for key in deleted:
        destination.delete(key)
    return ShipReport(tuple(uploaded), len(local) - len(uploaded), tuple(deleted))


def _lines(report: ShipReport, target: str) -> Iterator[str]:
    for key in report.uploaded:
        yield f"upload {key}"
    for key in report.deleted:
        yield f"delete {key}"
    yield (
        f"shipped to {target}: {len(report.uploaded)} uploaded, {report.unchanged} unchanged, "
        f"{len(report.deleted)} deleted"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlops_demo.ship", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("destination", help="s3://bucket/prefix, azure://container/prefix, or a folder")
    parser.add_argument("--source", type=Path, default=Path.cwd(), help="repository root (default: .)")
    parser.add_argument("--keep-removed", action="store_true", help="do not delete files gone from the repository")
    args = parser.parse_args(argv)
    try:
        report = ship(args.source.resolve(), destination_for(args.destination), delete=not args.keep_removed)
    except Exception as exc:  # a command line: one clear line (S3, Azure and file errors alike), exit 1
        print(f"error: shipping to {args.destination} failed: {exc}", file=sys.stderr)
        return 1
    for line in _lines(report, args.destination):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
