"""S3 event notifications read from SQS messages: what is taken, and every class of message that is not."""

from __future__ import annotations

import json
from urllib.parse import quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlops_core.s3_notifications import MAX_BODY_BYTES, announced_objects, split_s3_uri

ZONE = "s3://drop-bucket/incoming/churn/"


def _record(key: str, *, bucket: str = "drop-bucket", event: str = "ObjectCreated:Put", encode: bool = True) -> dict:
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": event,
        "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key, safe="/") if encode else key}},
    }


def _message(*records: dict) -> dict:
    return {"MessageId": "m", "ReceiptHandle": "r", "Body": json.dumps({"Records": list(records)})}


def test_created_objects_directly_in_the_drop_zone_are_taken_once_each_in_order():
    got = announced_objects(
        [
            _message(_record("incoming/churn/day2.csv"), _record("incoming/churn/day1.csv")),
            _message(_record("incoming/churn/day2.csv", event="ObjectCreated:CompleteMultipartUpload")),
        ],
        ZONE,
    )
    assert got.uris == ("s3://drop-bucket/incoming/churn/day2.csv", "s3://drop-bucket/incoming/churn/day1.csv")
    assert got.skipped == {}


def test_keys_are_url_decoded_as_s3_encodes_them():
    got = announced_objects([_message(_record("incoming/churn/pct 100% + more.csv"))], ZONE)
    assert got.uris == ("s3://drop-bucket/incoming/churn/pct 100% + more.csv",)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (_record("incoming/churn/x.csv", bucket="other-bucket"), "other_bucket"),
        (_record("incoming/churnX/x.csv"), "outside_prefix"),
        (_record("elsewhere/x.csv"), "outside_prefix"),
        (_record("incoming/churn/sub/x.csv"), "not_directly_in_drop_zone"),
        (_record("incoming/churn/"), "not_directly_in_drop_zone"),
        (_record("incoming/churn/.."), "not_directly_in_drop_zone"),
        (_record("incoming/churn/%2E%2E%2Fsecret.csv", encode=False), "not_directly_in_drop_zone"),
        (_record("incoming/churn/x.csv", event="ObjectRemoved:Delete"), "not_object_created"),
        (_record("incoming/churn/x.csv", event="ObjectRestore:Completed"), "not_object_created"),
        ({"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "drop-bucket"}}}, "no_key"),
        ({"eventName": "ObjectCreated:Put", "s3": "nonsense"}, "no_key"),
        ({"eventName": 7}, "not_object_created"),
    ],
)
def test_records_that_do_not_announce_a_drop_zone_object_are_skipped_with_their_reason(record, reason):
    got = announced_objects([_message(record, _record("incoming/churn/good.csv"))], ZONE)
    assert got.uris == ("s3://drop-bucket/incoming/churn/good.csv",)  # the good record of the message still counts
    assert got.skipped == {reason: 1}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json at all", "not_json"),
        (json.dumps({"Event": "s3:TestEvent", "Bucket": "drop-bucket"}), "test_event"),
        (json.dumps({"Records": []}), "not_a_notification"),
        (json.dumps({"Records": "x"}), "not_a_notification"),
        (json.dumps([1, 2]), "not_a_notification"),
        (json.dumps({"Records": [5]}), "not_a_notification"),
        ("x" * (MAX_BODY_BYTES + 1), "not_a_notification"),
        (None, "not_a_notification"),
        (12, "not_a_notification"),
    ],
)
def test_messages_that_are_not_notifications_are_skipped_without_raising(body, reason):
    got = announced_objects([{"Body": body}, _message(_record("incoming/churn/good.csv"))], ZONE)
    assert got.uris == ("s3://drop-bucket/incoming/churn/good.csv",)
    assert got.skipped == {reason: 1}


def test_notifications_through_sns_and_eventbridge_are_read_too():
    s3_doc = json.dumps({"Records": [_record("incoming/churn/via-sns.csv")]})
    sns = {"Body": json.dumps({"Type": "Notification", "TopicArn": "arn:aws:sns:x", "Message": s3_doc})}
    eventbridge = {
        "Body": json.dumps(
            {
                "source": "aws.s3",
                "detail-type": "Object Created",
                "detail": {"bucket": {"name": "drop-bucket"}, "object": {"key": "incoming/churn/via eb+plus.csv"}},
            }
        )
    }
    deleted = {
        "Body": json.dumps(
            {
                "source": "aws.s3",
                "detail-type": "Object Deleted",
                "detail": {"bucket": {"name": "drop-bucket"}, "object": {"key": "incoming/churn/gone.csv"}},
            }
        )
    }
    got = announced_objects([sns, eventbridge, deleted], ZONE)
    assert got.uris == (
        "s3://drop-bucket/incoming/churn/via-sns.csv",
        "s3://drop-bucket/incoming/churn/via eb+plus.csv",  # EventBridge keys are not URL-encoded
    )
    assert got.skipped == {"not_object_created": 1}


def test_bare_bodies_are_accepted_as_well_as_messages():
    assert announced_objects([json.dumps({"Records": [_record("incoming/churn/a.csv")]})], ZONE).uris == (
        "s3://drop-bucket/incoming/churn/a.csv",
    )


def test_the_drop_zone_uri_is_split_into_bucket_and_prefix():
    assert split_s3_uri("s3://b/p/q/") == ("b", "p/q/")
    assert split_s3_uri("s3://b/p") == ("b", "p/")
    with pytest.raises(ValueError, match="not an s3"):
        split_s3_uri("/local/folder")


@given(st.text(max_size=60))
def test_no_key_ever_leaves_the_drop_zone(name):
    """Whatever a message names, what is taken is a plain name directly under the prefix."""
    got = announced_objects([_message(_record(f"incoming/churn/{name}"))], ZONE)
    for uri in got.uris:
        rest = uri.removeprefix("s3://drop-bucket/incoming/churn/")
        assert rest != uri and rest and "/" not in rest and rest not in (".", "..")
