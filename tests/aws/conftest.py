"""Fixtures shared by the aws tests: the tests' own S3 client on the moto server and a fresh bucket."""

from __future__ import annotations

import pytest

from tests.moto_server import unique_name


@pytest.fixture
def s3(moto_server):
    """The tests' own S3 client (setup and assertions; its calls are not held against the IAM policy)."""
    return moto_server.client("s3")


@pytest.fixture
def bucket(s3, request):
    """A new empty bucket, named after the test module (``test_s3_storage`` -> ``s3-storage-<hex>``)."""
    name = unique_name(request.module.__name__.rpartition(".")[2].removeprefix("test_").replace("_", "-"))
    s3.create_bucket(Bucket=name)
    return name
