"""W3C trace context: parse or start a ``traceparent`` and carry it in a contextvar.

The HTTP middleware sets it from the request, the outbox stores it with the event, the
relay sends it as a Kafka header and consumers bind it while they handle the event.
"""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
current_traceparent: ContextVar[str | None] = ContextVar("current_traceparent", default=None)


def new_traceparent(trace_id: str | None = None) -> str:
    """A fresh ``traceparent`` (a new span, in ``trace_id`` when given)."""
    return f"00-{trace_id or secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def parse_traceparent(value: str | None) -> str | None:
    """The trace id of a valid ``traceparent`` header, else ``None``."""
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None or match.group(1) == "0" * 32:
        return None
    return match.group(1)


def child_traceparent(incoming: str | None) -> str:
    """Continue the incoming trace with a new span, or start a new trace."""
    return new_traceparent(parse_traceparent(incoming))
