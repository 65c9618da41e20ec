"""Fan-out of document events to the connected streams of their owner (no I/O here).

Every stream (:class:`Subscription`) has a bounded queue. :meth:`EventHub.publish` never
waits: a stream whose queue is full is dropped on the spot (its client is too slow), so
one slow client never delays the event for the others, and memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from dataclasses import dataclass

import structlog
from prometheus_client import Counter, Gauge

from depot_common.events import DOCUMENTS_TOPIC, INDEX_TOPIC, types_on

log = structlog.get_logger(__name__)

#: The event types a stream carries (docs/api.md): every type of the documents and index topics.
STREAMED_TYPES = types_on((DOCUMENTS_TOPIC, INDEX_TOPIC))

STREAMS = Gauge("depot_events_streams", "Connected GET /v1/events streams")
DELIVERED = Counter("depot_events_delivered_total", "Events queued to a connected stream")
DROPPED = Counter("depot_events_dropped_streams_total", "Streams disconnected because their client was too slow")


@dataclass(frozen=True)
class StreamEvent:
    """One event as a stream sends it: ``id:`` CloudEvent id, ``event:`` type, ``data:`` the CloudEvent JSON."""

    id: str
    type: str
    owner_id: str
    data: str


def decode(value: bytes | None) -> StreamEvent | None:
    """The stream event in a Kafka value, or ``None`` when it is not a document event with an owner.

    ``data`` is the CloudEvent re-serialized on one line (an SSE ``data:`` field is one line).
    """
    if not value:
        return None
    try:
        event = json.loads(value)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("type") not in STREAMED_TYPES:
        return None
    data = event.get("data")
    owner = data.get("owner_id") if isinstance(data, dict) else None
    event_id = event.get("id")
    if not isinstance(owner, str) or not owner or not isinstance(event_id, str):
        return None
    return StreamEvent(
        id=event_id,
        type=event["type"],
        owner_id=owner,
        data=json.dumps(event, separators=(",", ":"), ensure_ascii=False),
    )


class Subscription:
    """One connected stream of ``owner_id``: a bounded queue of events, and whether it was dropped."""

    def __init__(self, owner_id: str, capacity: int) -> None:
        self.owner_id = owner_id
        self._queue: asyncio.Queue[StreamEvent | None] = asyncio.Queue(capacity)
        self._dropped = False

    def offer(self, event: StreamEvent) -> bool:
        """Queue ``event`` without waiting; ``False`` when the queue is full."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            return False
        return True

    async def next(self, idle: float) -> StreamEvent | None:
        """The next event; ``None`` after ``idle`` seconds without one (time for a heartbeat) or
        when the stream was dropped (check :meth:`dropped`)."""
        try:
            return await asyncio.wait_for(self._queue.get(), idle)
        except TimeoutError:
            return None

    def drain(self) -> list[StreamEvent]:
        """Every event queued right now, without waiting (sent together in one write)."""
        events: list[StreamEvent] = []
        while not self._queue.empty():
            event = self._queue.get_nowait()
            if event is not None:
                events.append(event)
        return events

    def dropped(self) -> bool:
        """Whether the hub dropped this stream: it must end now."""
        return self._dropped

    def close(self) -> None:
        """Mark dropped and wake a waiting :meth:`next` (a full queue needs no wake-up: its reader is busy)."""
        self._dropped = True
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    @property
    def pending(self) -> int:
        return self._queue.qsize()


class EventHub:
    """Connected streams by owner; the feed publishes, the endpoints subscribe."""

    def __init__(self, *, capacity: int) -> None:
        self._capacity = capacity
        self._streams: defaultdict[str, set[Subscription]] = defaultdict(set)
        self.ready = asyncio.Event()
        """Set while the feed reads every partition from a known position (no event can be missed)."""

    def subscribe(self, owner_id: str) -> Subscription:
        subscription = Subscription(owner_id, self._capacity)
        self._streams[owner_id].add(subscription)
        STREAMS.inc()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        streams = self._streams.get(subscription.owner_id)
        if streams is None or subscription not in streams:
            return
        streams.discard(subscription)
        if not streams:
            del self._streams[subscription.owner_id]
        STREAMS.dec()

    def publish(self, event: StreamEvent) -> int:
        """Queue ``event`` to every stream of its owner; drop the streams that are full. Returns how many got it."""
        delivered = 0
        for subscription in list(self._streams.get(event.owner_id, ())):
            if subscription.offer(event):
                delivered += 1
            else:
                self.drop(subscription, reason="buffer_full")
        DELIVERED.inc(delivered)
        return delivered

    def drop(self, subscription: Subscription, *, reason: str) -> None:
        """Disconnect ``subscription``: its stream ends once it has sent what it holds."""
        buffered = subscription.pending
        subscription.close()
        self.unsubscribe(subscription)
        DROPPED.inc()
        log.warning("events.client.dropped", owner_id=subscription.owner_id, reason=reason, buffered=buffered)

    def drop_all(self, *, reason: str) -> None:
        """Disconnect every stream (the feed lost its position: they reconnect and catch up)."""
        for streams in list(self._streams.values()):
            for subscription in list(streams):
                self.drop(subscription, reason=reason)

    @property
    def streams(self) -> int:
        return sum(len(streams) for streams in self._streams.values())
