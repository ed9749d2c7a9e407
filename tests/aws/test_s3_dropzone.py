"""The S3 drop zone against a real moto server: complete objects only, never twice, consumed marked; bad input.

Each bad input the issue names has its outcome here: an object outside the prefix, a zero-byte
object, an unfinished multipart upload, the same bytes under two keys, an object deleted (or
replaced) between listing and reading. The drop zone's client is the project code's identity
(``code_client``), so every call it makes is held against the shipped IAM policy.
"""

from __future__ import annotations

import time

import pytest

from mlops_core.backends import backends_for
from mlops_core.delivered_files import UntrustedPath
from mlops_core.drop_source import DropSource
from mlops_core.dropzone import ArrivalRule, complete_files, state_from_primitives, state_to_primitives, watch_spec
from mlops_core.s3_dropzone import TAG_CONSUMED_BY, TAG_CONSUMED_ETAG, S3DropZone, name_problem
from mlops_core.settings import load_settings
from mlops_core.stages.ingest import ingest_files
from tests.stages.churn_files import churn_frame, file_bytes, quarantine_by_source, store_snapshot

AT = "2026-02-01T00:00:00+00:00"
PREFIX = "drop/churn"
STABLE = ArrivalRule(rule="stable", min_age_seconds=0, poll_seconds=0.2)
CSV = ("*.csv",)


@pytest.fixture
def zone(moto_server, bucket):
    return S3DropZone(moto_server.code_client("s3"), bucket, PREFIX)


def _put(s3, bucket: str, name: str, data: bytes, prefix: str = PREFIX) -> str:
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=data)
    return f"s3://{bucket}/{prefix}/{name}"


def _keys(s3, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def _ready_after_two_scans(zone: S3DropZone, rule: ArrivalRule = STABLE):
    first = zone.scan(CSV, rule)
    time.sleep(rule.poll_seconds)
    return first, zone.scan(CSV, rule, first.state)


# ---- what the watch announces ------------------------------------------------------------------


def test_only_complete_objects_directly_under_the_prefix_are_announced(s3, bucket, zone):
    assert isinstance(zone, DropSource)
    good = _put(s3, bucket, "a.csv", b"x,y\n1,2\n")
    empty = _put(s3, bucket, "empty.csv", b"")  # zero bytes: announced; ingest quarantines it as empty
    _put(s3, bucket, "sub/b.csv", b"x")
    _put(s3, bucket, "b.csv", b"x", prefix="drop/churnX")  # a sibling prefix is outside the drop zone
    _put(s3, bucket, "ctl\x1b[31m.csv", b"x")  # an escape sequence in a key: never a file name
    _put(s3, bucket, ".upload.csv.part", b"x")
    _put(s3, bucket, "notes.txt", b"x")
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}/", Body=b"")  # the console's "folder" object
    upload = s3.create_multipart_upload(Bucket=bucket, Key=f"{PREFIX}/half.csv")
    s3.upload_part(Bucket=bucket, Key=f"{PREFIX}/half.csv", UploadId=upload["UploadId"], PartNumber=1, Body=b"x")

    first, second = _ready_after_two_scans(zone)
    assert first.ready == ()  # one listing proves nothing about an object still being replaced
    assert {e.name: e.reason for e in first.ignored}["a.csv"] == "waiting_stable"
    assert [(f.path, f.size) for f in second.ready] == [(good, 8), (empty, 0)]
    assert second.ready[0].to_dict()["etag"] == s3.head_object(Bucket=bucket, Key=f"{PREFIX}/a.csv")["ETag"].strip('"')
    assert {e.name: e.reason for e in second.ignored} == {
        "sub/": "not_regular_file",
        "ctl%1B[31m.csv": "unsafe_name",  # escaped in every report
        ".upload.csv.part": "hidden",
        "notes.txt": "pattern",
    }
    # The unfinished multipart upload is no object: neither announced nor listed as ignored.
    assert "half.csv" not in {f.name for f in second.ready} | {e.name for e in second.ignored}


def test_an_object_replaced_between_scans_is_not_taken_until_it_stays_unchanged(s3, bucket, zone):
    _put(s3, bucket, "a.csv", b"x,y\n1,2\n")
    first = zone.scan(CSV, STABLE)
    time.sleep(STABLE.poll_seconds)
    _put(s3, bucket, "a.csv", b"x,y\n1,2\n3,4\n")  # the writer uploads again
    second = zone.scan(CSV, STABLE, first.state)
    assert second.ready == ()
    time.sleep(STABLE.poll_seconds)
    third = zone.scan(CSV, STABLE, second.state)
    assert [f.size for f in third.ready] == [12]
    young = ArrivalRule(rule="stable", min_age_seconds=3600, poll_seconds=0.2)
    assert {e.reason for e in zone.scan(CSV, young, third.state).ignored} == {"too_new"}
    rename = ArrivalRule(rule="rename", min_age_seconds=0)
    assert [f.name for f in zone.scan(CSV, rename).ready] == ["a.csv"]  # one listing is enough
    with pytest.raises(ValueError, match="not offered for an S3 drop zone"):
        zone.scan(CSV, ArrivalRule(rule="marker"))


def test_a_multipart_upload_is_announced_only_once_completed(s3, bucket, zone):
    key = f"{PREFIX}/big.csv"
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)
    part = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x,y\n1,2\n")
    assert _ready_after_two_scans(zone)[1].ready == ()
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
    )
    announced = _ready_after_two_scans(zone)[1].ready
    assert [f.name for f in announced] == ["big.csv"] and announced[0].etag and announced[0].etag.endswith("-1")


def test_the_scan_state_survives_a_round_trip_through_primitives(s3, bucket, zone):
    """A trigger keeps its sightings in its kwargs: rebuilt from them, it goes on without a new first look."""
    _put(s3, bucket, "a.csv", b"x,y\n1,2\n")
    rule = ArrivalRule(rule="stable", min_age_seconds=0, poll_seconds=30)
    first = zone.scan(CSV, rule, now=time.time() - 31)  # seen a poll ago
    carried = state_from_primitives(state_to_primitives(first.state))
    assert carried == first.state
    assert [f.name for f in zone.scan(CSV, rule, carried).ready] == ["a.csv"]
    assert zone.scan(CSV, rule, {}).ready == ()  # without it: back to the first look


def test_names_must_be_plain_file_names():
    assert name_problem("a.csv") == "" and name_problem("données 100%.csv") == ""
    for bad in ("", "..", "a/b.csv", "a\\b.csv", "nul\x00.csv", "bidi\u202e.csv", "x" * 256):
        assert name_problem(bad), bad
    for prefix in ("", "/", "a/../b", "a//b"):
        with pytest.raises(ValueError, match="needs a prefix"):
            S3DropZone(object(), "b", prefix)
    with pytest.raises(ValueError, match="mark_consumed"):
        S3DropZone(object(), "b", "p", mark_consumed="delete")


# ---- ingest from the S3 drop zone -----------------------------------------------------------


@pytest.fixture
def settings(mlops_home, bucket):
    return load_settings("dev", {"dataset": {"drop_zone": f"s3://{bucket}/{PREFIX}/"}})


def test_ingest_reads_objects_quarantines_bad_ones_and_archives_what_it_consumed(s3, bucket, zone, settings):
    good = file_bytes(churn_frame(20), "csv")
    paths = [
        _put(s3, bucket, "day1.csv", good),
        _put(s3, bucket, "day1_resent.csv", good),  # the same bytes under a second key
        _put(s3, bucket, "empty.csv", b""),  # a zero-byte object
        _put(s3, bucket, "pct 100%.csv", file_bytes(churn_frame(5, day=1), "csv")),
    ]
    report = ingest_files(settings, paths, backends_for(settings), run_id="manual__1", ingested_at=AT, source=zone)

    by_file = {f["file"]: f for f in report["files"]}
    assert report["created"] and report["rows"] == 25
    assert by_file["day1.csv"]["status"] == "accepted" and by_file["day1.csv"]["rows_accepted"] == 20
    resent = by_file["day1_resent.csv"]
    assert (resent["status"], resent["seen_in"]) == ("duplicate_file", "this batch (day1.csv)")
    assert by_file["empty.csv"]["status"] == "rejected" and by_file["empty.csv"]["reason_code"] == "empty"
    assert "pct 100%25.csv" in by_file  # names are escaped in the report
    assert by_file["day1.csv"]["archived_as"] == f"s3://{bucket}/drop/churn.archive/manual__1/day1.csv"
    assert set(quarantine_by_source(_dataset_store(settings))) == {"day1_resent.csv", "empty.csv"}
    assert _keys(s3, bucket) == sorted(
        f"drop/churn.archive/manual__1/{n}" for n in ("day1.csv", "day1_resent.csv", "empty.csv", "pct 100%.csv")
    )
    # The archived copy is the object that was read, byte for byte.
    assert s3.get_object(Bucket=bucket, Key="drop/churn.archive/manual__1/day1.csv")["Body"].read() == good

    # Re-running the same run changes nothing: the objects are gone, the version stands.
    before = store_snapshot(settings)
    again = ingest_files(settings, paths, backends_for(settings), run_id="manual__1", ingested_at=AT, source=zone)
    assert again["files"] == [] and store_snapshot(settings) == before


def test_paths_outside_the_prefix_refuse_the_call_before_anything_is_touched(s3, bucket, zone, settings):
    good = _put(s3, bucket, "good.csv", file_bytes(churn_frame(5), "csv"))
    outside = _put(s3, bucket, "secret.csv", b"customer_id\nCANARY\n", prefix="drop/churnX")
    for bad in (
        outside,
        f"s3://other-bucket/{PREFIX}/good.csv",
        f"s3://{bucket}/{PREFIX}/../churnX/secret.csv",
        f"s3://{bucket}/{PREFIX}/sub/good.csv",
        f"s3://{bucket}/{PREFIX}/.hidden.csv",
        f"s3://{bucket}/{PREFIX}/",
        "/etc/passwd",
    ):
        with pytest.raises(UntrustedPath, match="not objects directly under the drop zone"):
            ingest_files(settings, [good, bad], backends_for(settings), run_id="r1", ingested_at=AT, source=zone)
    assert _keys(s3, bucket) == ["drop/churn/good.csv", "drop/churnX/secret.csv"]
    assert store_snapshot(settings) == {}


def test_an_object_deleted_between_listing_and_reading_is_skipped(s3, bucket, zone, settings):
    _put(s3, bucket, "a.csv", file_bytes(churn_frame(5), "csv"))
    _put(s3, bucket, "b.csv", file_bytes(churn_frame(5, day=1), "csv"))
    spec = watch_spec(settings.dataset, rule="rename", min_age_seconds=0)
    listed = [f.path for f in complete_files(spec, zone).ready]
    assert len(listed) == 2
    s3.delete_object(Bucket=bucket, Key=f"{PREFIX}/b.csv")
    report = ingest_files(settings, listed, backends_for(settings), run_id="r1", ingested_at=AT, source=zone)
    assert [f["file"] for f in report["files"]] == ["a.csv"] and report["rows"] == 5
    assert report["files_quarantined"] == 0


class _ReplacedWhileRead:
    """The code's real S3 client, with another writer replacing ``key`` just before each GetObject."""

    def __init__(self, client, writer, bucket: str, key: str) -> None:
        self._client, self._writer, self._bucket, self._key = client, writer, bucket, key

    def __getattr__(self, name: str):
        return getattr(self._client, name)

    def get_object(self, **kwargs):
        if kwargs["Key"] == self._key:
            self._writer.put_object(Bucket=self._bucket, Key=self._key, Body=b"customer_id\nnew upload\n")
        return self._client.get_object(**kwargs)


def test_an_object_replaced_while_being_read_is_left_for_the_next_run(moto_server, s3, bucket, settings):
    """HeadObject saw one ETag, the download asks IfMatch it: S3 answers 412 instead of the new bytes."""
    _put(s3, bucket, "a.csv", file_bytes(churn_frame(5), "csv"))
    path = _put(s3, bucket, "b.csv", file_bytes(churn_frame(5, day=1), "csv"))
    client = _ReplacedWhileRead(moto_server.code_client("s3"), s3, bucket, f"{PREFIX}/b.csv")
    zone = S3DropZone(client, bucket, PREFIX)
    report = ingest_files(
        settings,
        [path.replace("b.csv", "a.csv"), path],
        backends_for(settings),
        run_id="r1",
        ingested_at=AT,
        source=zone,
    )
    assert [f["file"] for f in report["files"]] == ["a.csv"]
    assert s3.get_object(Bucket=bucket, Key=f"{PREFIX}/b.csv")["Body"].read() == b"customer_id\nnew upload\n"


def test_an_unfinished_multipart_upload_named_in_an_event_is_not_read(s3, bucket, zone, settings):
    key = f"{PREFIX}/half.csv"
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)
    part = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x")
    path = f"s3://{bucket}/{key}"
    report = ingest_files(settings, [path], backends_for(settings), run_id="r1", ingested_at=AT, source=zone)
    assert report["files"] == [] and report["files_quarantined"] == 0 and not report["created"]
    data = file_bytes(churn_frame(5), "csv")
    s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
    assert part["ETag"]
    s3.put_object(Bucket=bucket, Key=key, Body=data)  # delivered whole later: read by the next run
    assert ingest_files(settings, [path], backends_for(settings), run_id="r2", ingested_at=AT, source=zone)["rows"] == 5


def test_tagged_objects_stay_in_place_and_are_never_announced_again(s3, bucket, moto_server, settings):
    zone = S3DropZone(moto_server.code_client("s3"), bucket, PREFIX, mark_consumed="tag")
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}/a.csv", Body=file_bytes(churn_frame(5), "csv"), Tagging="team=ml")
    _put(s3, bucket, "b.csv", file_bytes(churn_frame(5, day=1), "csv"))
    announced = _ready_after_two_scans(zone)[1]
    files = [f.to_dict() for f in announced.ready]
    assert zone.unconsumed(files) == [f["path"] for f in files]  # the watch waits for ingest

    report = ingest_files(
        settings, [f["path"] for f in files], backends_for(settings), run_id="r1", ingested_at=AT, source=zone
    )
    assert report["rows"] == 10
    assert zone.unconsumed(files) == []
    assert _keys(s3, bucket) == ["drop/churn/a.csv", "drop/churn/b.csv"]
    tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=f"{PREFIX}/a.csv")["TagSet"]}
    assert tags == {"team": "ml", TAG_CONSUMED_BY: "r1", TAG_CONSUMED_ETAG: files[0]["etag"]}

    later = zone.scan(CSV, STABLE, announced.state)
    assert later.ready == () and {e.reason for e in later.ignored} == {"consumed"}
    _put(s3, bucket, "b.csv", file_bytes(churn_frame(5, day=2), "csv"))  # a new upload under a consumed key
    again = _ready_after_two_scans(zone)[1]
    assert [f.name for f in again.ready] == ["b.csv"]


def test_the_watch_stops_waiting_for_an_object_that_was_consumed_or_replaced(s3, bucket, zone, settings):
    paths = [_put(s3, bucket, n, file_bytes(churn_frame(5, day=i), "csv")) for i, n in enumerate(("a.csv", "b.csv"))]
    files = [f.to_dict() for f in _ready_after_two_scans(zone)[1].ready]
    assert zone.unconsumed(files) == paths
    _put(s3, bucket, "b.csv", b"replaced")
    assert zone.unconsumed(files) == [paths[0]]  # the announced b.csv is gone; the new one is announced anew
    ingest_files(settings, [paths[0]], backends_for(settings), run_id="r1", ingested_at=AT, source=zone)
    assert zone.unconsumed(files) == []


def _dataset_store(settings):
    from mlops_core.backends import object_store
    from mlops_core.datasets import DatasetStore

    return DatasetStore(object_store(settings), "churn")
