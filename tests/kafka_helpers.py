"""Reading topics from tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord


async def read_until(
    bootstrap: str,
    topic: str,
    done: Callable[[list[ConsumerRecord[bytes, bytes]]], bool],
    *,
    timeout: float = 15,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from the beginning, read until ``done(records)`` or timeout."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not done(records) and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for partition_records in batch.values():
                records.extend(partition_records)
    finally:
        await consumer.stop()
    return records


def event_of(record: ConsumerRecord[bytes, bytes]) -> dict[str, Any]:
    assert record.value is not None
    value: dict[str, Any] = json.loads(record.value)
    return value


async def published_events(
    bootstrap: str, topic: str, subject: str, *, event_type: str | None = None, timeout: float = 15
) -> list[dict[str, Any]]:
    """The events about ``subject`` (of ``event_type``) on ``topic``, once one is there: what a relay published
    from an outbox (it deletes a row once Kafka acked it, so the outbox no longer holds it)."""

    def about(record: ConsumerRecord[bytes, bytes]) -> bool:
        event = event_of(record)
        return event.get("subject") == subject and event_type in (None, event.get("type"))

    records = await read_until(bootstrap, topic, lambda rs: any(about(r) for r in rs), timeout=timeout)
    events = [event_of(r) for r in records if about(r)]
    assert events, f"no {event_type or 'event'} about {subject} on {topic} within {timeout} s"
    return events


def with_subject(subject: str) -> Callable[[list[ConsumerRecord[bytes, bytes]]], bool]:
    return lambda records: any(event_of(r).get("subject") == subject for r in records)
