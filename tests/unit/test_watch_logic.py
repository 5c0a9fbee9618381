"""The watcher's pure logic: S3 notification parsing, de-duplication, coalescing, state."""

from __future__ import annotations

import json

import pytest

from tasks.core.watch import (
    Coalescer,
    NewObject,
    WatchState,
    parse_s3_message,
    unique_objects,
)


def _record(key: str, etag: str = "abc", event: str = "ObjectCreated:Put", bucket: str = "b") -> dict:
    return {"eventName": event, "eventTime": "2026-11-29T10:00:00.000Z",
            "s3": {"bucket": {"name": bucket}, "object": {"key": key, "eTag": etag, "size": 5}}}


def test_test_events_and_non_json_are_ignored():
    assert parse_s3_message(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})) == []
    assert parse_s3_message("not json") == []
    assert parse_s3_message(json.dumps({"Records": [_record("a.txt", event="ObjectRemoved:Delete")]})) == []


def test_keys_are_url_decoded():
    body = json.dumps({"Records": [_record("reports/caf%C3%A9+menu+%282026%29.pdf")]})
    [obj] = parse_s3_message(body)
    assert obj.key == "reports/café menu (2026).pdf"
    assert obj.uri == "s3://b/reports/café menu (2026).pdf"
    assert (obj.etag, obj.size, obj.last_modified) == ("abc", 5, "2026-11-29T10:00:00.000Z")


def test_sns_wrapped_notifications_are_unwrapped():
    inner = json.dumps({"Records": [_record("x.txt")]})
    body = json.dumps({"Type": "Notification", "Message": inner})
    assert [o.key for o in parse_s3_message(body)] == ["x.txt"]


def test_double_announcement_of_a_multipart_upload_is_one_object():
    first, second = NewObject("b", "big.pdf", "e-1"), NewObject("b", "big.pdf", "e-1")
    other = NewObject("b", "other.txt", "e-2")
    assert unique_objects([first, other, second]) == [other, second]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_coalescer_closes_a_batch_after_quiet_time_max_wait_or_max_size():
    clock = Clock()
    coalescer = Coalescer(settle_s=2, max_wait_s=10, max_batch=3, clock=clock)
    coalescer.add([NewObject("b", "1")])
    clock.now = 1.5
    coalescer.add([NewObject("b", "2")])
    clock.now = 3.0
    assert not coalescer.ready()  # the last arrival was 1.5 s ago
    clock.now = 3.6
    assert coalescer.ready()
    assert [o.key for o in coalescer.take()] == ["1", "2"]
    for t in range(12):  # a steady trickle never settles: max_wait closes the batch
        clock.now = 10 + t
        coalescer.add([NewObject("b", f"t{t % 2}")])
    assert coalescer.ready() and len(coalescer) == 2
    coalescer.take()
    coalescer.add([NewObject("b", k) for k in "abcd"])
    assert coalescer.ready()
    assert len(coalescer.take()) == 3 and len(coalescer) == 1


def test_state_remembers_announced_objects_across_restarts(tmp_path):
    state = WatchState(tmp_path / "w.sqlite")
    a = NewObject("b", "a.txt", "e1")
    assert state.is_new(a) and not state.baselined
    state.record([a])
    state.mark_baselined()
    state.close()
    state = WatchState(tmp_path / "w.sqlite")
    assert state.baselined
    assert not state.is_new(a)
    assert state.is_new(NewObject("b", "a.txt", "e2"))  # overwritten with new content
    assert state.is_new(NewObject("b", "b.txt", "e1"))


@pytest.mark.parametrize("url", ["b/prefix", "s3://"])
def test_watcher_needs_an_s3_url(url):
    from tasks.core.errors import ConfigError
    from tasks.core.watch import split_s3_url

    with pytest.raises(ConfigError):
        split_s3_url(url)
