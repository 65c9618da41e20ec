"""``stuck_outbox``: upload-api outbox events unpublished longer than the allowance (docs/reconciler.md).

Streams keyset pages of the unpublished rows of ``upload.outbox``. Reported only: no
compensation, nothing re-checked (the relay publishes them once it runs again).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from depot_reconciler.checks.base import Check, Finding, Limits, Reads, Source
from depot_reconciler.checks.streams import keyset, outbox_rows

NAME = "stuck_outbox"


@dataclass(frozen=True, slots=True)
class UnpublishedEvent:
    """An unpublished row of ``upload.outbox``."""

    event_id: uuid.UUID
    topic: str
    key: str
    created_at: datetime


async def list_unpublished(reads: Reads) -> AsyncIterator[UnpublishedEvent]:
    """Unpublished events of ``upload.outbox`` in id order."""
    query = "SELECT id, event_id, topic, key, created_at FROM upload.outbox WHERE id > $1 ORDER BY id LIMIT $2"
    async for row in keyset(reads.pool, query, key="id", start=0, page_size=reads.page_size):
        del row["id"]
        yield UnpublishedEvent(**row)


def classify(event: UnpublishedEvent, limits: Limits) -> Finding | None:
    if event.created_at > limits.now - limits.outbox_allowance:
        return None
    return Finding(
        NAME,
        str(event.event_id),
        {
            "topic": event.topic,
            "key": event.key,
            "created_at": event.created_at.isoformat(),
            "age_seconds": int((limits.now - event.created_at).total_seconds()),
        },
    )


UNPUBLISHED_EVENTS: Source[UnpublishedEvent] = Source("unpublished_events", list_unpublished, outbox_rows)
CHECK = Check(NAME, UNPUBLISHED_EVENTS, classify)
