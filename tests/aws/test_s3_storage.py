"""S3ObjectStore against a real moto server: the ObjectStore contract, integrity and prefix confinement."""

from __future__ import annotations

import hashlib

import pytest

from mlops_core.compute import object_key
from mlops_core.s3_storage import MIB, ObjectCorrupted, S3ObjectStore
from mlops_core.storage import ObjectNotFound, ObjectStore


@pytest.fixture
def code_s3(moto_server):
    """The store's client: the project code's identity (its calls are held against the IAM policy)."""
    return moto_server.code_client("s3")


def test_round_trip_and_listing_match_the_local_store(s3, code_s3, bucket):
    store = S3ObjectStore(code_s3, bucket, "mlops/dev")
    assert isinstance(store, ObjectStore)
    for key in ("q/run1/a.json", "q/run10/b.json", "q/run2/c.json", "other.txt"):
        store.put_bytes(key, key.encode())
    s3.put_object(Bucket=bucket, Key="mlops/devX/outside.txt", Body=b"x")  # a sibling prefix is not ours
    assert store.get_bytes("q/run1/a.json") == b"q/run1/a.json"
    assert store.list_keys("q/run1/") == ["q/run1/a.json"]
    assert store.list_keys("q/run1") == ["q/run1/a.json", "q/run10/b.json"]
    assert store.list_keys("q/run3/") == []
    assert store.list_keys("oth") == ["other.txt"]
    assert len(store.list_keys()) == 4
    listed = {o.key: o for o in store.list_objects("q/")}
    assert sorted(listed) == ["q/run1/a.json", "q/run10/b.json", "q/run2/c.json"]
    # the last-modified time (read_labels skips label files written before its window)
    assert all(o.modified is not None and o.modified.tzinfo is not None for o in listed.values())
    assert store.exists("other.txt") and not store.exists("missing")
    store.delete("other.txt")
    assert not store.exists("other.txt")
    assert store.uri("q/run1/a.json") == f"s3://{bucket}/mlops/dev/q/run1/a.json"
    assert store.put_bytes("a", b"1") is None  # no versioning on this bucket: no version id


def test_keys_and_uris_outside_the_prefix_are_refused(s3, code_s3, bucket):
    store = S3ObjectStore(code_s3, bucket, "mlops/dev")
    with pytest.raises(ObjectNotFound, match="no object 'nope'"):
        store.get_bytes("nope")
    for bad in ("../x", "/etc/passwd", "a/../../x", ""):
        with pytest.raises(ValueError, match=r"inside the store|inside s3://"):
            store.put_bytes(bad, b"x")
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0  # nothing was written anywhere
    assert object_key(store, f"s3://{bucket}/mlops/dev/train/part-0.parquet") == "train/part-0.parquet"
    for uri in (
        "s3://other-bucket/mlops/dev/a",
        f"s3://{bucket}/mlops/prod/a",
        f"s3://{bucket}/mlops/devX/a",
        f"s3://{bucket}/mlops/dev/../prod/a",
        f"https://{bucket}/mlops/dev/a",
    ):
        with pytest.raises(ValueError, match=r"not an object of the store"):
            object_key(store, uri)


def test_every_object_carries_its_sha256_and_reads_are_verified(s3, code_s3, bucket):
    store = S3ObjectStore(code_s3, bucket, "p")
    store.put_bytes("part.parquet", b"accepted rows")
    head = s3.head_object(Bucket=bucket, Key="p/part.parquet", ChecksumMode="ENABLED")
    assert head["Metadata"]["sha256"] == hashlib.sha256(b"accepted rows").hexdigest()
    assert "ChecksumSHA256" in head  # S3 checked the bytes it received against the sent checksum
    # Someone rewrites the object behind the store's back, keeping the metadata: the read refuses it.
    s3.put_object(Bucket=bucket, Key="p/part.parquet", Body=b"changed rows", Metadata=head["Metadata"])
    with pytest.raises(ObjectCorrupted, match="expected sha256"):
        store.get_bytes("part.parquet")
    s3.put_object(Bucket=bucket, Key="p/foreign.bin", Body=b"no digest", ChecksumAlgorithm="SHA256")
    with pytest.raises(ObjectCorrupted, match="no recorded sha256"):
        store.get_bytes("foreign.bin")
    assert store.get_foreign_bytes("foreign.bin") == b"no digest"  # another service's output: S3's checksum only


def test_large_objects_go_up_in_parts_and_keep_one_digest(s3, code_s3, bucket, tmp_path):
    store = S3ObjectStore(code_s3, bucket, "big", multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    data = bytes(range(256)) * (12 * MIB // 256)  # 12 MiB -> 3 parts
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    store.put_file("from-file.bin", path)
    store.put_bytes("from-bytes.bin", data)
    for key in ("from-file.bin", "from-bytes.bin"):
        head = s3.head_object(Bucket=bucket, Key=f"big/{key}")
        assert head["ETag"].strip('"').endswith("-3"), head["ETag"]  # a multipart upload of three parts
        assert store.get_bytes(key) == data
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_versioned_bucket_returns_the_version_written(s3, code_s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    store = S3ObjectStore(code_s3, bucket, "v", multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    first = store.put_bytes("manifest.json", b"1")
    second = store.put_bytes("manifest.json", b"2")
    big = store.put_bytes("big.bin", b"x" * (6 * MIB))
    assert first and second and big and first != second
    assert store.version_id("manifest.json") == second
    old = s3.get_object(Bucket=bucket, Key="v/manifest.json", VersionId=first)["Body"].read()
    assert old == b"1"


def test_the_store_refuses_bad_configuration(s3, code_s3):
    with pytest.raises(ValueError, match="bucket name"):
        S3ObjectStore(code_s3, "a/b")
    with pytest.raises(ValueError, match="5 MiB"):
        S3ObjectStore(code_s3, "b", multipart_chunksize=MIB)
    with pytest.raises(ValueError, match="inside the store"):
        S3ObjectStore(code_s3, "b", "../x")
