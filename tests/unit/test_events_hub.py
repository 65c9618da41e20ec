"""The event stream's fan-out and the pipeline report, without servers (fast logic tests)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from depot_upload.events_stream.endpoints import stream
from depot_upload.events_stream.service import EventHub, StreamEvent, decode
from depot_upload.pipeline.ports import Backlog, DlqCount, PartitionLag
from depot_upload.pipeline.service import PipelineHealth


def cloud_event(owner: str | None, *, type_: str = "document.indexed", text: str = "ok") -> dict[str, Any]:
    data: dict[str, Any] = {"document_id": str(uuid.uuid4()), "version": 2, "text_chars": len(text)}
    if owner is not None:
        data["owner_id"] = owner
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "type": type_, "subject": "s", "data": data}


def event(owner: str) -> StreamEvent:
    decoded = decode(json.dumps(cloud_event(owner)).encode())
    assert decoded is not None
    return decoded


def test_decode_keeps_document_events_with_an_owner_on_one_line() -> None:
    """A document event becomes (id, type, owner, one-line JSON); the JSON is the whole CloudEvent."""
    raw = cloud_event("alice", text="line one\nline two")
    raw["data"]["note"] = "a\nb"
    decoded = decode(json.dumps(raw, indent=2).encode())
    assert decoded is not None
    assert (decoded.id, decoded.type, decoded.owner_id) == (raw["id"], "document.indexed", "alice")
    assert "\n" not in decoded.data
    assert json.loads(decoded.data) == raw


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"[1, 2]",
        json.dumps(cloud_event("alice", type_="compensation.reindex")).encode(),
        json.dumps(cloud_event(None)).encode(),
        b"",
    ],
)
def test_decode_ignores_what_is_not_an_owned_document_event(value: bytes) -> None:
    """Bad JSON, other event types and events without owner_id are never streamed."""
    assert decode(value) is None


async def test_publish_reaches_only_the_streams_of_the_events_owner() -> None:
    """Every stream of the owner gets the event; another owner's stream gets nothing."""
    hub = EventHub(capacity=4)
    alice_1, alice_2, bob = hub.subscribe("alice"), hub.subscribe("alice"), hub.subscribe("bob")
    sent = event("alice")
    assert hub.publish(sent) == 2
    assert alice_1.drain() == [sent]
    assert alice_2.drain() == [sent]
    assert bob.drain() == []


async def test_a_full_stream_is_dropped_and_the_others_keep_receiving() -> None:
    """Publishing never waits: the stream whose buffer is full is dropped, the other one gets every event."""
    hub = EventHub(capacity=2)
    slow, fast = hub.subscribe("alice"), hub.subscribe("alice")
    for n in range(5):
        hub.publish(event("alice"))
        assert len(fast.drain()) == 1, n  # the fast one keeps up
    assert slow.dropped()
    assert not fast.dropped()
    assert hub.streams == 1


async def test_the_stream_sends_what_is_queued_in_one_write_heartbeats_when_idle_and_ends_when_dropped() -> None:
    """Queued events go out together as SSE; an idle interval yields a heartbeat; a drop ends the stream."""
    hub = EventHub(capacity=8)
    subscribed = hub.subscribe("alice")
    chunks = stream(subscribed, heartbeat=0.05)
    assert await anext(chunks) == b": connected\n\n"
    first, second = event("alice"), event("alice")
    hub.publish(first)
    hub.publish(second)
    chunk = await anext(chunks)
    assert (
        chunk
        == (
            f"event: document.indexed\ndata: {first.data}\nid: {first.id}\n\n"
            f"event: document.indexed\ndata: {second.data}\nid: {second.id}\n\n"
        ).encode()
    )
    assert await anext(chunks) == b": heartbeat\n\n"
    waiting = asyncio.ensure_future(anext(chunks))
    await asyncio.sleep(0.01)
    hub.drop_all(reason="test")
    with pytest.raises(StopAsyncIteration):
        await waiting


async def test_the_stream_ends_when_the_token_expires() -> None:
    """A stream whose token expires says so in a comment and ends, events or not."""
    hub = EventHub(capacity=8)
    now = [1000.0]
    chunks = stream(hub.subscribe("alice"), heartbeat=10, expires_at=1000.05, clock=lambda: now[0])
    assert await anext(chunks) == b": connected\n\n"
    pending = asyncio.ensure_future(anext(chunks))
    await asyncio.sleep(0.01)
    assert not pending.done()  # not expired yet: waiting for an event
    now[0] = 1000.1
    assert await asyncio.wait_for(pending, 1) == b": token expired\n\n"
    with pytest.raises(StopAsyncIteration):
        await anext(chunks)


class FakeOutboxes:
    async def backlog(self, schema: str) -> Backlog | None:
        return {"upload": Backlog(count=2, oldest_age_s=1.5)}.get(schema)


class BrokenOffsets:
    async def lag(self, topic: str, group: str) -> list[PartitionLag]:
        raise ConnectionError("broker down")

    async def dlq(self, topic: str, group: str) -> DlqCount:
        raise ConnectionError("broker down")


async def test_the_pipeline_report_shows_null_for_what_it_cannot_read() -> None:
    """An outbox that does not exist and an unreachable broker are nulls in the report, never an error."""
    report = await PipelineHealth(FakeOutboxes(), BrokenOffsets(), consumers=[("t", "g")]).report()
    assert [(o.schema, o.backlog, o.oldest_unpublished_age_s) for o in report.outboxes] == [
        ("upload", 2, 1.5),
        ("search", None, None),
        ("reconcile", None, None),
    ]
    assert [(c.group, c.lag, c.partitions) for c in report.consumers] == [("g", None, None)]
    assert [(d.topic, d.messages, d.pending) for d in report.dlqs] == [("t.g.dlq", None, None)]
