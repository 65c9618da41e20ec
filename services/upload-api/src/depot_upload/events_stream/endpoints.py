"""``GET /v1/events``: translate a connected client into a hub subscription, and its events into SSE."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from fastapi.sse import format_sse_event

from depot_common.errors import DependencyUnavailable
from depot_common.openapi import ErrorOut
from depot_common.web import CurrentPrincipal
from depot_upload.events_stream.service import EventHub, StreamEvent, Subscription

router = APIRouter(prefix="/v1", tags=["events"])

#: Seconds a client is told to wait before retrying while the stream is not ready.
RETRY_AFTER = 2
CONNECTED = format_sse_event(comment="connected")
HEARTBEAT = format_sse_event(comment="heartbeat")
EXPIRED = format_sse_event(comment="token expired")


class EventStreamResponse(StreamingResponse):
    """A ``text/event-stream`` response of bytes already in SSE form (FastAPI's ``EventSourceResponse``
    is for generator endpoints, which send each event in its own write; a stream here writes whatever
    is queued in one, so a burst from Kafka never overflows the buffer of a client that keeps up)."""

    media_type = "text/event-stream"


def get_hub(request: Request) -> EventHub:
    hub: EventHub = request.app.state.event_hub
    return hub


async def token_expiry(principal: CurrentPrincipal) -> float | None:
    return principal.expires_at


async def subscription(request: Request, principal: CurrentPrincipal) -> AsyncIterator[Subscription]:
    """The caller's subscription: registered before the response starts (so no event that reaches Kafka
    afterwards is missed), removed after the response ended, however it ended."""
    hub = get_hub(request)
    if not hub.ready.is_set():
        raise DependencyUnavailable(
            "kafka", "the event stream is not reading Kafka yet; retry shortly", retry_after=RETRY_AFTER
        )
    subscribed = hub.subscribe(principal.owner_id)
    try:
        yield subscribed
    finally:
        hub.unsubscribe(subscribed)


def sse(event: StreamEvent) -> bytes:
    """``id:`` the CloudEvent id, ``event:`` its type, ``data:`` the CloudEvent JSON (one line)."""
    return format_sse_event(id=event.id, event=event.type, data_str=event.data)


async def stream(
    subscribed: Subscription,
    heartbeat: float,
    *,
    expires_at: float | None = None,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[bytes]:
    """The bytes of one stream: everything queued goes out in one write, a heartbeat when idle. It ends
    when the hub drops the subscription (its client fell a whole buffer behind), and when the token
    expires (``: token expired``): a stream never outlives the token that opened it."""
    yield CONNECTED
    while True:
        idle = heartbeat if expires_at is None else max(0.0, min(heartbeat, expires_at - clock()))
        event = await subscribed.next(idle)
        if subscribed.dropped():
            return
        if expires_at is not None and clock() >= expires_at:
            yield EXPIRED
            return
        if event is None:
            yield HEARTBEAT
            continue
        yield b"".join([sse(event), *map(sse, subscribed.drain())])


_SSE_SCHEMA: dict[str, Any] = {
    "type": "string",
    "description": "Server-Sent Events: `id:` CloudEvent id, `event:` type, `data:` the CloudEvent JSON; "
    "`: heartbeat` comments",
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {"schema": _SSE_SCHEMA}}, "description": "the stream; it does not end"},
    401: {"model": ErrorOut, "description": "missing, invalid or expired bearer token"},
    503: {"model": ErrorOut, "description": "`dependency_unavailable`: not reading Kafka yet (`Retry-After`)"},
}


@router.get(
    "/events",
    response_class=EventStreamResponse,
    responses=_RESPONSES,
    summary="Your document events, live (Server-Sent Events).",
)
async def events(
    request: Request,
    subscribed: Annotated[Subscription, Depends(subscription)],
    expires_at: Annotated[float | None, Depends(token_expiry)],
) -> EventStreamResponse:
    """`document.stored|deleted|failed` and `document.indexed|index_failed` of the caller's documents,
    as they reach Kafka: `id:` the CloudEvent id, `event:` its type, `data:` the CloudEvent JSON.
    A `: heartbeat` comment when idle; a client too slow to keep up is disconnected (reconnect,
    then catch up from `GET /v1/documents`); the stream ends when the token expires. Send the
    token in `Authorization` (use fetch)."""
    heartbeat: float = request.app.state.events_heartbeat_interval
    return EventStreamResponse(
        stream(subscribed, heartbeat, expires_at=expires_at),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
