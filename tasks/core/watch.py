"""Watch an S3 prefix for new objects: S3 event notifications from SQS, or polling.

Pure core (no Prefect): the watcher finds new objects, coalesces them into batches and hands
each batch to an ``emit`` callable (the Prefect side turns it into events). Delivery is
at-least-once: SQS messages are deleted and the polling state is advanced only after ``emit``
returned, so a crash re-emits rather than loses; the flow's skip-unchanged makes a repeat cheap.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote_plus

from tasks.core.errors import ConfigError, SourceUnavailableError, TransientError

log = logging.getLogger(__name__)

#: The Prefect event announcing one new object, and the resource label marking the last event
#: of a coalesced batch (the one the event-triggered deployment reacts to).
EVENT_NAME = "s3.object.created"
BATCH_LABEL = "ingest.batch.last"


@dataclass(frozen=True)
class NewObject:
    """An object that appeared (or changed) under the watched prefix."""

    bucket: str
    key: str
    etag: str | None = None
    size: int | None = None
    last_modified: str | None = None  # ISO 8601, as S3 reports it

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → (bucket, prefix); the prefix may be empty."""
    if not url.startswith("s3://"):
        raise ConfigError(f"the watcher needs an s3://bucket/prefix URL, not {url!r}")
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not bucket:
        raise ConfigError("an S3 URL needs a bucket: s3://bucket/prefix")
    return bucket, prefix


def parse_s3_message(body: str) -> list[NewObject]:
    """The created objects an SQS message announces (S3 notification, optionally inside SNS).

    ``s3:TestEvent`` (sent when notifications are configured) and non-create events yield
    nothing; keys arrive URL-encoded (``+`` for spaces) and are decoded here.
    """
    try:
        message = json.loads(body)
    except ValueError:
        log.warning("ignoring an SQS message that is not JSON: %.80r", body)
        return []
    if isinstance(message, dict) and message.get("Type") == "Notification" and "Message" in message:
        return parse_s3_message(message["Message"])  # S3 → SNS → SQS
    if not isinstance(message, dict) or message.get("Event") == "s3:TestEvent":
        return []
    objects = []
    for record in message.get("Records") or []:
        if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
            continue
        s3 = record.get("s3") or {}
        obj = s3.get("object") or {}
        bucket = (s3.get("bucket") or {}).get("name")
        if not bucket or "key" not in obj:
            continue
        objects.append(NewObject(bucket=bucket, key=unquote_plus(obj["key"]),
                                 etag=(obj.get("eTag") or obj.get("etag") or "").strip('"') or None,
                                 size=obj.get("size"), last_modified=record.get("eventTime")))
    return objects


def unique_objects(objects: Iterable[NewObject]) -> list[NewObject]:
    """One entry per key, the last announcement winning (a multipart upload is announced twice)."""
    latest: dict[str, NewObject] = {}
    for obj in objects:
        latest.pop(obj.uri, None)  # re-insert so the order follows the last announcement
        latest[obj.uri] = obj
    return list(latest.values())


class WatchState:
    """What the watcher has already announced, in SQLite: the polling checkpoint and the
    de-duplication memory. Survives restarts, so neither everything is re-announced nor
    anything uploaded while the watcher was down is missed."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS announced (uri TEXT PRIMARY KEY, etag TEXT)")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
        self._db.commit()

    def is_new(self, obj: NewObject) -> bool:
        """True unless this object, with this ETag, was announced before."""
        row = self._db.execute("SELECT etag FROM announced WHERE uri = ?", (obj.uri,)).fetchone()
        return row is None or (obj.etag is not None and row[0] != obj.etag)

    def record(self, objects: Sequence[NewObject]) -> None:
        """Remember ``objects`` as announced (one transaction)."""
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO announced (uri, etag) VALUES (?, ?)",
                                 [(o.uri, o.etag) for o in objects])

    @property
    def baselined(self) -> bool:
        return self._db.execute("SELECT 1 FROM meta WHERE name = 'baseline'").fetchone() is not None

    def mark_baselined(self) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('baseline', ?)", (str(time.time()),))

    def close(self) -> None:
        self._db.close()


def list_objects(bucket: str, prefix: str) -> Iterator[NewObject]:
    """Every object under the prefix (ListObjectsV2, page by page, through s3fs)."""
    from tasks.core.sources import (
        filesystem,
        is_hidden,
        iter_s3_objects,
        transient_errors,
    )

    filesystem("s3").invalidate_cache(bucket)  # a poll must see the bucket as it is now
    try:
        for info in iter_s3_objects(bucket, prefix):
            key = info["name"][len(bucket) + 1:]
            if is_hidden(key[len(prefix):]):
                continue
            modified = info.get("LastModified")
            yield NewObject(bucket=bucket, key=key, etag=(info.get("ETag") or "").strip('"') or None,
                            size=info.get("size"),
                            last_modified=modified.isoformat() if modified is not None else None)
    except FileNotFoundError as exc:
        raise ConfigError(f"bucket not found: {bucket}") from exc
    except transient_errors() as exc:
        raise SourceUnavailableError(f"cannot list s3://{bucket}/{prefix}: {exc}") from exc


@dataclass
class Coalescer:
    """Gathers new objects into batches: a burst becomes one batch, not one per object.

    A batch is ready when no new object arrived for ``settle_s``, when its oldest object has
    waited ``max_wait_s``, or when it holds ``max_batch`` objects.
    """

    settle_s: float = 2.0
    max_wait_s: float = 30.0
    max_batch: int = 500
    clock: Callable[[], float] = time.monotonic
    _pending: dict[str, NewObject] = field(default_factory=dict)
    _first: float | None = None
    _last: float | None = None

    def add(self, objects: Iterable[NewObject]) -> None:
        for obj in objects:
            now = self.clock()
            self._pending.pop(obj.uri, None)
            self._pending[obj.uri] = obj
            self._first = self._first if self._first is not None else now
            self._last = now

    def __len__(self) -> int:
        return len(self._pending)

    def ready(self) -> bool:
        if not self._pending:
            return False
        now = self.clock()
        return (len(self._pending) >= self.max_batch or now - self._last >= self.settle_s
                or now - self._first >= self.max_wait_s)

    def take(self) -> list[NewObject]:
        """Up to ``max_batch`` pending objects, oldest first."""
        uris = list(self._pending)[:self.max_batch]
        batch = [self._pending.pop(uri) for uri in uris]
        if not self._pending:
            self._first = self._last = None
        return batch


class SqsQueue:
    """The SQS queue S3 sends its event notifications to (botocore, standard AWS config)."""

    def __init__(self, queue_url: str, *, wait_s: int = 1, visibility_s: int = 300) -> None:
        import botocore.session

        session = botocore.session.get_session()
        region = session.get_config_variable("region") or "us-east-1"
        self._client = session.create_client("sqs", region_name=region)
        self.url = queue_url
        self.wait_s = wait_s
        # Long enough that a held message is not redelivered while its batch settles.
        self.visibility_s = visibility_s

    def receive(self) -> list[tuple[str, str]]:
        """Up to 10 messages as (receipt handle, body)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            reply = self._client.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=self.wait_s,
                VisibilityTimeout=self.visibility_s)
        except (BotoCoreError, ClientError) as exc:
            raise SourceUnavailableError(f"cannot receive from {self.url}: {exc}") from exc
        return [(m["ReceiptHandle"], m["Body"]) for m in reply.get("Messages", [])]

    def delete(self, receipts: Sequence[str]) -> None:
        """Delete handled messages, ten per request (the SQS limit)."""
        for begin in range(0, len(receipts), 10):
            entries = [{"Id": str(i), "ReceiptHandle": r}
                       for i, r in enumerate(receipts[begin:begin + 10])]
            self._client.delete_message_batch(QueueUrl=self.url, Entries=entries)


EmitBatch = Callable[[list[NewObject]], None]


class BucketWatcher:
    """Finds new objects under ``s3://bucket/prefix`` and emits them in coalesced batches.

    ``queue`` selects SQS mode; without it the prefix is polled every ``interval_s``. In
    polling mode the first start records what is already there without announcing it (those
    objects are not new; ``backfill`` announces them too).
    """

    def __init__(self, url: str, emit: EmitBatch, state: WatchState, *,
                 queue: SqsQueue | None = None, interval_s: float = 10.0,
                 coalescer: Coalescer | None = None, backfill: bool = False) -> None:
        self.bucket, self.prefix = split_s3_url(url)
        self.emit = emit
        self.state = state
        self.queue = queue
        self.interval_s = interval_s
        self.coalescer = coalescer or Coalescer()
        self.backfill = backfill
        # SQS messages held until every object they announced was emitted: (receipt, URIs).
        self._held: list[tuple[str, set[str]]] = []
        self._stop = threading.Event()
        self.emitted = 0

    def stop(self) -> None:
        self._stop.set()

    def _in_scope(self, obj: NewObject) -> bool:
        from tasks.core.sources import is_hidden

        return (obj.bucket == self.bucket and obj.key.startswith(self.prefix)
                and not obj.key.endswith("/") and not is_hidden(obj.key[len(self.prefix):]))

    def poll_once(self) -> None:
        """One listing of the prefix; new or changed objects go to the coalescer."""
        first = not self.state.baselined
        listed = [o for o in list_objects(self.bucket, self.prefix) if self.state.is_new(o)]
        if first and not self.backfill:
            self.state.record(listed)
            log.info("first start: %d existing objects recorded, not announced", len(listed))
        else:
            self.coalescer.add(listed)
        if first:
            self.state.mark_baselined()

    def receive_once(self) -> None:
        """One SQS receive; announced objects go to the coalescer, their messages are held."""
        for receipt, body in self.queue.receive():
            objects = [o for o in parse_s3_message(body) if self._in_scope(o) and self.state.is_new(o)]
            self.coalescer.add(objects)
            self._held.append((receipt, {o.uri for o in objects}))
        self._release(set())

    def _release(self, emitted: set[str]) -> None:
        """Delete the held messages whose objects have all been emitted."""
        done = []
        for receipt, uris in self._held:
            uris -= emitted
            if not uris:
                done.append(receipt)
        if done:
            self._held = [(r, u) for r, u in self._held if u]
            self.queue.delete(done)

    def flush(self, *, force: bool = False) -> int:
        """Emit every ready batch; returns how many objects were emitted."""
        emitted = 0
        while len(self.coalescer) and (force or self.coalescer.ready()):
            batch = unique_objects(self.coalescer.take())
            try:
                self.emit(batch)
            except Exception as exc:  # nothing recorded or deleted: re-emitted later, never lost
                self.coalescer.add(batch)
                raise TransientError(f"cannot emit {len(batch)} events: {type(exc).__name__}: {exc}") from exc
            self.state.record(batch)
            emitted += len(batch)
            if self.queue is not None:
                self._release({o.uri for o in batch})
        self.emitted += emitted
        return emitted

    def run(self, *, max_seconds: float | None = None) -> None:
        """Watch until ``stop()`` (or ``max_seconds``); transient faults are logged and retried."""
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        next_poll = 0.0
        while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
            try:
                if self.queue is not None:
                    self.receive_once()  # long-polls: this is the loop's pause
                elif time.monotonic() >= next_poll:
                    self.poll_once()
                    next_poll = time.monotonic() + self.interval_s
                self.flush()
            except TransientError as exc:
                pause = min(self.interval_s, 5.0)
                log.warning("%s; retrying in %.0fs", exc, pause)
                self._stop.wait(pause)
                continue
            if self.queue is None:
                self._stop.wait(0.2 if len(self.coalescer) else min(1.0, self.interval_s))
        try:
            self.flush(force=True)
        except TransientError as exc:
            log.warning("%s; left for the next start", exc)
