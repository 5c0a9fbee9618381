"""The bucket watcher's Prefect side: new objects become ``s3.object.created`` events.

Every object gets its own event (resource ``s3://bucket/key``; payload ETag, size,
last-modified). The last event of each coalesced batch also carries the whole batch
(``payload.batch``, the URIs) and the resource label ``ingest.batch.last = "true"``: the
``on-new-objects`` deployment triggers on exactly those, so a burst of 500 uploads becomes one
flow run over 500 objects instead of 500 runs that each load the model.

Events are sent with ``POST /api/events``: the server acknowledges them, so SQS messages are
deleted (and the polling state advanced) only after the server has the events.
"""

from __future__ import annotations

import logging

from prefect.events import Event

from tasks.core.watch import BATCH_LABEL, EVENT_NAME, NewObject

# One request stays far below the server's event size limit even with a 1,000-URI batch.
EVENTS_PER_REQUEST = 100

log = logging.getLogger(__name__)


def object_events(batch: list[NewObject], watched: str) -> list[Event]:
    """One event per object; the last one carries the batch and the trigger's label."""
    events = []
    for position, obj in enumerate(batch, start=1):
        last = position == len(batch)
        payload = {"etag": obj.etag, "size": obj.size, "last_modified": obj.last_modified}
        if last:
            payload.update(batch=[o.uri for o in batch], batch_size=len(batch))
        events.append(Event(
            event=EVENT_NAME,
            resource={"prefect.resource.id": obj.uri, "prefect.resource.name": obj.key,
                      "s3.bucket": obj.bucket, "s3.key": obj.key,
                      BATCH_LABEL: "true" if last else "false"},
            related=[{"prefect.resource.id": watched, "prefect.resource.role": "watched-prefix"}],
            payload=payload))
    return events


class EventSender:
    """Sends events to the Prefect API and waits for its acknowledgement."""

    def __init__(self, watched: str) -> None:
        from prefect.client.orchestration import get_client

        self.watched = watched
        self._client = get_client(sync_client=True)
        self._client.__enter__()

    def __call__(self, batch: list[NewObject]) -> None:
        events = object_events(batch, self.watched)
        for begin in range(0, len(events), EVENTS_PER_REQUEST):
            chunk = events[begin:begin + EVENTS_PER_REQUEST]
            response = self._client.request("POST", "/events",
                                            json=[e.model_dump(mode="json") for e in chunk])
            response.raise_for_status()
        log.info("emitted %d %s events (one batch)", len(events), EVENT_NAME)

    def close(self) -> None:
        self._client.__exit__(None, None, None)
