"""What the event benchmarks (``relay``, ``indexer``, ``pipeline``) share.

Realistic ``document.stored`` events (built with the very models the upload API uses),
the outbox table DDL taken from the upload API's own migration, the relay's way of
producing (send a batch, then wait for every ack), an observer that notes when each key
first shows up on a topic, and a way to start a consumer group at the end of a topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from depot_common.events import CONTENT_TYPE, CloudEvent, DocumentStored, type_of
from depot_common.kafka import make_consumer
from depot_common.tracing import new_traceparent

SOURCE = "depot/upload-api"
OWNER = "bench"
#: The upload API's migration that creates ``upload.outbox``: scratch outboxes copy it.


def document_stored(
    *,
    document_id: uuid.UUID | None = None,
    owner_id: str = OWNER,
    filename: str = "quarterly-report-2026.txt",
    content_type: str = "text/plain",
    content: bytes = b"",
    size_bytes: int = 18_432,
) -> CloudEvent[DocumentStored]:
    """A ``document.stored`` event as the upload API writes it (``content`` sets size and hash)."""
    document_id = document_id or uuid.uuid4()
    return CloudEvent[DocumentStored](
        source=SOURCE,
        type=type_of(DocumentStored),
        subject=str(document_id),
        data=DocumentStored(
            document_id=document_id,
            owner_id=owner_id,
            filename=filename,
            content_type=content_type,
            size_bytes=len(content) if content else size_bytes,
            sha256=hashlib.sha256(content or document_id.bytes).hexdigest(),
            object_key=f"documents/{document_id}",
            version=1,
        ),
    )


_WORDS = [
    "the",
    "quarterly",
    "report",
    "covers",
    "revenue",
    "growth",
    "across",
    "every",
    "region",
    "while",
    "costs",
    "stayed",
    "flat",
    "and",
    "the",
    "team",
    "shipped",
    "the",
    "new",
    "storage",
    "service",
    "on",
    "time",
    "with",
    "fewer",
    "incidents",
    "than",
    "last",
    "year",
]


def text_document(number: int, word: str, size: int = 1024) -> bytes:
    """About ``size`` bytes of English text holding ``word`` once (and ``number``, so it is distinct)."""
    words = [f"Note {number}: {word}."]
    length = len(words[0])
    while length < size:
        words.append(_WORDS[len(words) % len(_WORDS)])
        length += len(words[-1]) + 1
    return " ".join(words).encode()


def unique_word() -> str:
    """A word no other document holds: letters only, so every text search parser keeps it whole."""
    return "zq" + "".join(secrets.choice("bcdfghjklmnpqrstvwxz") for _ in range(12))


def outbox_headers() -> dict[str, str]:
    """The headers ``depot_common.outbox.enqueue`` stores with an event."""
    return {"content-type": CONTENT_TYPE, "traceparent": new_traceparent()}


@dataclass(frozen=True)
class Message:
    """One Kafka record as the relay sends it."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]

    @classmethod
    def of(cls, event: CloudEvent[Any], headers: dict[str, str]) -> Message:
        return cls(
            key=event.subject.encode(),
            value=event.model_dump_json().encode(),
            headers=[(name, value.encode()) for name, value in headers.items()],
        )


async def produce(producer: AIOKafkaProducer, topic: str, messages: Sequence[Message], batch_size: int) -> None:
    """What the relay does per batch, without the database: send every record, then wait for every ack."""
    for start in range(0, len(messages), batch_size):
        futures = [
            await producer.send(topic, value=message.value, key=message.key, headers=message.headers)
            for message in messages[start : start + batch_size]
        ]
        await asyncio.gather(*futures)


async def move_group_to_end(bootstrap: list[str], topic: str, group: str) -> int:
    """Commit ``group``'s offsets at the end of ``topic`` (by reading it); return the records skipped.

    A service consumer started in ``group`` then sees only what is produced afterwards. The
    partitions are assigned, not subscribed to: this consumer never joins the group, so the
    service's consumer joins a new group at once (on tansu, joining after a member left
    takes seconds). Reading rather than asking: tansu answers ``ListOffsets(latest)`` with
    the base offset of the last record batch + 1, not the high watermark.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        max_poll_records=5000,
    )
    await consumer.start()
    try:
        await consumer.topics()  # metadata of every topic
        partitions = [TopicPartition(topic, number) for number in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            raise RuntimeError(f"topic {topic} has no partitions")
        consumer.assign(partitions)
        skipped = idle = 0
        while idle < 3:
            batch = await consumer.getmany(timeout_ms=200)
            count = sum(len(records) for records in batch.values())
            skipped += count
            idle = idle + 1 if count == 0 else 0
        await consumer.commit({partition: await consumer.position(partition) for partition in partitions})
        return skipped
    finally:
        await consumer.stop()


@dataclass
class Observer:
    """Reads a topic (from the start, in no group) and notes when each key was first seen."""

    consumer: AIOKafkaConsumer
    seen: dict[bytes, float] = field(default_factory=dict)
    _waiters: dict[bytes, asyncio.Future[float]] = field(default_factory=dict)

    async def _run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=1000)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    if record.key is None or record.key in self.seen:
                        continue
                    self.seen[record.key] = now
                    waiter = self._waiters.pop(record.key, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(now)

    async def wait_for(self, key: bytes, patience: float) -> float:
        """When ``key`` was first seen (``time.perf_counter``); waits up to ``patience`` s."""
        if key in self.seen:
            return self.seen[key]
        waiter = self._waiters.setdefault(key, asyncio.get_running_loop().create_future())
        return await asyncio.wait_for(asyncio.shield(waiter), patience)

    @classmethod
    @contextlib.asynccontextmanager
    async def reading(cls, bootstrap: list[str], topic: str, **options: Any) -> AsyncIterator[Observer]:
        """An observer of ``topic`` running for the block.

        Its consumer is the services' (``make_consumer``), ``options`` overriding, but in no
        group: joining one takes seconds on tansu, and membership changes nothing in fetching.
        """
        consumer = make_consumer(bootstrap, topic, group_id=None, **options)
        await consumer.start()
        observer = cls(consumer)
        task = asyncio.create_task(observer._run())
        try:
            yield observer
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await consumer.stop()
