"""A real moto server on loopback for the aws backend's tests, with moto made faithful where we lean on it.

One server per test session (``moto_server`` fixture in ``tests/conftest.py``): moto 5.2.5 in server
mode (``ThreadedMotoServer``, port 0 so the kernel picks a free port), reached over HTTP by boto3,
the Amazon provider's hooks and Airflow task processes alike. Tests isolate themselves by bucket
and resource names (``unique_name``), or call :meth:`MotoServer.reset`.

moto is not faithful everywhere. Where the code under test depends on a behaviour the real service
has and moto lacks, this module extends moto's server to behave like the service, and says so:

- **S3 checksums** (``x-amz-checksum-*``): moto stores whatever value the client sends and never
  checks it; S3 recomputes the checksum of the received bytes and answers ``400 BadDigest`` when
  they differ. :func:`_verify_s3_checksums` makes moto do the same for PutObject and UploadPart.
- **UpdateModelPackage** changes only what the request sends (``CustomerMetadataProperties`` are
  merged in, ``CustomerMetadataPropertiesToRemove`` removes); moto 5.2.5 sets every field,
  so an approval would wipe the package's metadata and description.
  :func:`_update_model_package_keeps_unsent_fields` makes it behave like SageMaker.

Each extension has a test in ``tests/aws/test_moto_fidelity.py`` that fails loudly if moto's
internals it relies on move (moto is pinned exactly in ``requirements.txt`` for that reason).
"""

from __future__ import annotations

import base64
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

import requests

REGION = "us-east-1"
_CHECKSUM_HEADER = re.compile(r"^x-amz-checksum-(crc32|crc32c|crc64nvme|sha1|sha256)$", re.IGNORECASE)
_TRAILER = re.compile(rb"x-amz-checksum-(crc32|crc32c|crc64nvme|sha1|sha256):([A-Za-z0-9+/=]+)", re.IGNORECASE)
_patched = False


def _verify_s3_checksums() -> None:
    """PutObject/UploadPart: a checksum sent by the client must match the bytes received (S3's BadDigest)."""
    from moto.s3.exceptions import S3ClientError
    from moto.s3.responses import S3Response
    from moto.s3.utils import compute_checksum

    class BadDigest(S3ClientError):
        code = "BadDigest"

        def __init__(self, algorithm: str) -> None:
            super().__init__(
                "BadDigest", f"The {algorithm.upper()} you specified did not match the calculated checksum."
            )

    original = S3Response._get_checksum

    def _get_checksum(self: Any, response_headers: dict[str, Any]) -> tuple[str, str | None]:
        sent: list[tuple[str, str]] = [
            (m.group(1), str(value)) for name, value in self.headers.items() if (m := _CHECKSUM_HEADER.match(name))
        ]
        if not sent and self.raw_body:  # aws-chunked uploads carry the checksum in a trailer
            sent = [(m.group(1).decode(), m.group(2).decode()) for m in _TRAILER.finditer(self.raw_body[-512:])]
        for algorithm, value in sent:
            expected = compute_checksum(self.body or b"", algorithm=algorithm.upper()).decode()
            if base64.b64decode(value) != base64.b64decode(expected):
                raise BadDigest(algorithm)
        return original(self, response_headers)  # type: ignore[no-any-return]

    S3Response._get_checksum = _get_checksum  # type: ignore[method-assign]


def _update_model_package_keeps_unsent_fields() -> None:
    from moto.sagemaker.models import SageMakerModelBackend

    original = SageMakerModelBackend.update_model_package

    def update_model_package(
        self: Any,
        model_package_arn: str,
        model_approval_status: str | None,
        approval_description: str | None,
        customer_metadata_properties: dict[str, str] | None,
        customer_metadata_properties_to_remove: list[str],
        additional_inference_specifications_to_add: list[Any] | None,
    ) -> str:
        package = self.model_packages.get(self.model_package_name_mapping.get(model_package_arn, model_package_arn))
        if package is not None:
            if model_approval_status is None:
                model_approval_status = package.model_approval_status
            if approval_description is None:
                approval_description = package.approval_description
            customer_metadata_properties = {
                **(package.customer_metadata_properties or {}),
                **(customer_metadata_properties or {}),
            }
        return original(  # type: ignore[no-any-return]
            self,
            model_package_arn,
            model_approval_status,
            approval_description,
            customer_metadata_properties,
            customer_metadata_properties_to_remove,
            additional_inference_specifications_to_add,
        )

    SageMakerModelBackend.update_model_package = update_model_package  # type: ignore[method-assign]


def make_moto_faithful() -> None:
    """Apply every extension above once per process (they survive ``/moto-api/reset``)."""
    global _patched
    if not _patched:
        _verify_s3_checksums()
        _update_model_package_keeps_unsent_fields()
        _patched = True


def unique_name(prefix: str) -> str:
    """A resource name no other test uses (buckets: lowercase, <= 63 characters)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class MotoServer:
    """A running moto server: its URL and the settings clients need to reach it."""

    url: str
    region: str = REGION

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id="testing",  # moto accepts any key; nothing secret
            aws_secret_access_key="testing",
        )

    def connection_uri(self) -> str:
        """An Airflow connection (JSON form, for ``AIRFLOW_CONN_<ID>``) whose hooks reach this server."""
        import json

        return json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {
                    "region_name": self.region,
                    "endpoint_url": self.url,
                    # the provider's connection test and role assumption use STS, which ignores endpoint_url
                    "service_config": {"sts": {"endpoint_url": self.url}},
                },
            }
        )

    def reset(self) -> None:
        requests.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()


def start_moto_server() -> tuple[MotoServer, Any]:
    """Start moto on a free loopback port; returns the server description and the handle to stop it."""
    from moto.server import ThreadedMotoServer

    make_moto_faithful()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return MotoServer(url=f"http://{host}:{port}"), server
