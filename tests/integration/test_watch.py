"""The bucket watcher against moto's server: S3 notifications through SQS, and polling."""

from __future__ import annotations

import io

import pytest

from tasks.core.watch import BucketWatcher, Coalescer, SqsQueue, WatchState

pytestmark = pytest.mark.integration


@pytest.fixture()
def boto(moto_endpoint):
    import boto3

    return {name: boto3.client(name, endpoint_url=moto_endpoint, region_name="us-east-1")
            for name in ("s3", "sqs")}


@pytest.fixture()
def notified_queue(boto, s3_bucket):
    """An SQS queue receiving the bucket's ObjectCreated notifications."""
    sqs, s3 = boto["sqs"], boto["s3"]
    url = sqs.create_queue(QueueName=f"q-{s3_bucket}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=s3_bucket, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]})
    return url


class Collect:
    """Records emitted batches; can be told to fail (an unreachable Prefect API)."""

    def __init__(self) -> None:
        self.batches: list[list] = []
        self.fail = False

    def __call__(self, batch) -> None:
        if self.fail:
            raise ConnectionError("Prefect API unreachable")
        self.batches.append(batch)

    @property
    def keys(self) -> list[str]:
        return sorted(o.key for batch in self.batches for o in batch)


def _multipart_put(s3, bucket: str, key: str, data: bytes) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)
    part = s3.upload_part(Bucket=bucket, Key=key, PartNumber=1, UploadId=upload["UploadId"], Body=data)
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={
        "Parts": [{"ETag": part["ETag"], "PartNumber": 1}]})


def _drain(watcher: BucketWatcher, rounds: int = 6) -> None:
    for _ in range(rounds):
        watcher.receive_once()
    watcher.flush(force=True)


def test_sqs_mode_emits_each_new_object_once_and_deletes_messages_after(boto, s3_bucket, notified_queue, tmp_path):
    s3, sqs = boto["s3"], boto["sqs"]
    collect = Collect()
    watcher = BucketWatcher(f"s3://{s3_bucket}/inbox/", collect, WatchState(tmp_path / "w.sqlite"),
                            queue=SqsQueue(notified_queue, wait_s=0, visibility_s=2),
                            coalescer=Coalescer(settle_s=60))
    s3.put_object(Bucket=s3_bucket, Key="inbox/a note.txt", Body=b"alpha")
    s3.put_object(Bucket=s3_bucket, Key="inbox/café.txt", Body=b"beta")
    s3.put_object(Bucket=s3_bucket, Key="elsewhere/x.txt", Body=b"out of scope")
    _multipart_put(s3, s3_bucket, "inbox/big.pdf", b"%PDF-1.4 gamma")

    collect.fail = True  # the first emit fails: nothing is deleted or remembered
    for _ in range(4):
        watcher.receive_once()
    with pytest.raises(Exception, match="cannot emit"):
        watcher.flush(force=True)
    assert collect.batches == []
    collect.fail = False
    watcher.flush(force=True)
    assert len(collect.batches) == 1
    assert collect.keys == ["inbox/a note.txt", "inbox/big.pdf", "inbox/café.txt"]
    assert all(o.etag and o.size for o in collect.batches[0])

    _drain(watcher)  # late duplicates (the multipart's second event) are not re-emitted
    assert collect.keys == ["inbox/a note.txt", "inbox/big.pdf", "inbox/café.txt"]
    attributes = sqs.get_queue_attributes(QueueUrl=notified_queue, AttributeNames=["All"])["Attributes"]
    assert int(attributes["ApproximateNumberOfMessages"]) == 0
    assert int(attributes["ApproximateNumberOfMessagesNotVisible"]) == 0


def test_polling_mode_baselines_then_survives_a_restart(boto, s3_bucket, tmp_path):
    s3 = boto["s3"]
    s3.put_object(Bucket=s3_bucket, Key="docs/old.txt", Body=b"already there")
    state_path = tmp_path / "poll.sqlite"

    def start() -> tuple[BucketWatcher, Collect]:
        collect = Collect()
        return BucketWatcher(f"s3://{s3_bucket}/docs/", collect, WatchState(state_path)), collect

    watcher, collect = start()
    watcher.poll_once()
    watcher.flush(force=True)
    assert collect.batches == []  # what was there before the first start is not new

    s3.put_object(Bucket=s3_bucket, Key="docs/new.txt", Body=b"new")
    s3.put_object(Bucket=s3_bucket, Key="docs/old.txt", Body=b"rewritten")
    s3.put_object(Bucket=s3_bucket, Key="docs/.hidden", Body=b"x")
    watcher.poll_once()
    watcher.flush(force=True)
    assert collect.keys == ["docs/new.txt", "docs/old.txt"]
    watcher.state.close()

    s3.put_object(Bucket=s3_bucket, Key="docs/while-down.txt", Body=io.BytesIO(b"down").read())
    watcher, collect = start()  # a restart: nothing re-announced, nothing missed
    watcher.poll_once()
    watcher.flush(force=True)
    assert collect.keys == ["docs/while-down.txt"]


def test_polling_backfill_announces_what_is_already_there(boto, s3_bucket, tmp_path):
    boto["s3"].put_object(Bucket=s3_bucket, Key="p/a.txt", Body=b"a")
    collect = Collect()
    watcher = BucketWatcher(f"s3://{s3_bucket}/p/", collect, WatchState(tmp_path / "s.sqlite"), backfill=True)
    watcher.run(max_seconds=0.5)
    assert collect.keys == ["p/a.txt"]
