"""The pipeline health report: outbox backlogs, consumer lag and DLQ sizes, read side by side.

A figure that cannot be read (an outbox not migrated yet, Kafka unreachable or slow) is
``None`` in the report, never an error: the report is what an operator looks at when
something is wrong.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from depot_common.consumer import dlq_topic
from depot_common.events import COMPENSATIONS_TOPIC, DOCUMENTS_TOPIC, INDEX_TOPIC
from depot_upload.pipeline.ports import DlqCount, Offsets, Outboxes, PartitionLag

log = structlog.get_logger(__name__)

#: Every outbox of Depot: ``(schema, topic it is published to)``.
OUTBOXES = (("upload", DOCUMENTS_TOPIC), ("search", INDEX_TOPIC), ("reconcile", COMPENSATIONS_TOPIC))


@dataclass(frozen=True)
class OutboxReport:
    schema: str
    topic: str
    backlog: int | None
    oldest_unpublished_age_s: float | None


@dataclass(frozen=True)
class ConsumerReport:
    group: str
    topic: str
    lag: int | None
    partitions: list[PartitionLag] | None


@dataclass(frozen=True)
class DlqReport:
    topic: str
    group: str
    source_topic: str
    messages: int | None
    pending: int | None


@dataclass(frozen=True)
class PipelineReport:
    checked_at: datetime
    outboxes: list[OutboxReport]
    consumers: list[ConsumerReport]
    dlqs: list[DlqReport]


class PipelineHealth:
    """Reads the report; ``consumers`` are the ``(topic, group)`` pairs whose lag and DLQ it shows."""

    def __init__(
        self, outboxes: Outboxes, offsets: Offsets, *, consumers: list[tuple[str, str]], timeout: float = 10.0
    ) -> None:
        self._outboxes = outboxes
        self._offsets = offsets
        self._consumers = consumers
        self._timeout = timeout

    async def report(self) -> PipelineReport:
        outboxes, consumers, dlqs = await asyncio.gather(
            asyncio.gather(*(self._outbox(schema, topic) for schema, topic in OUTBOXES)),
            asyncio.gather(*(self._lag(topic, group) for topic, group in self._consumers)),
            asyncio.gather(*(self._dlq(topic, group) for topic, group in self._consumers)),
        )
        return PipelineReport(
            checked_at=datetime.now(UTC), outboxes=list(outboxes), consumers=list(consumers), dlqs=list(dlqs)
        )

    async def _outbox(self, schema: str, topic: str) -> OutboxReport:
        try:
            async with asyncio.timeout(self._timeout):
                backlog = await self._outboxes.backlog(schema)
        except Exception as error:  # the report shows what it can read
            log.warning("pipeline.outbox_unreadable", schema=schema, error=repr(error))
            backlog = None
        return OutboxReport(
            schema=schema,
            topic=topic,
            backlog=backlog.count if backlog else None,
            oldest_unpublished_age_s=backlog.oldest_age_s if backlog else None,
        )

    async def _lag(self, topic: str, group: str) -> ConsumerReport:
        try:
            async with asyncio.timeout(self._timeout):
                partitions = await self._offsets.lag(topic, group)
        except Exception as error:
            log.warning("pipeline.lag_unreadable", topic=topic, group=group, error=repr(error))
            return ConsumerReport(group=group, topic=topic, lag=None, partitions=None)
        return ConsumerReport(group=group, topic=topic, lag=sum(p.lag for p in partitions), partitions=partitions)

    async def _dlq(self, topic: str, group: str) -> DlqReport:
        count: DlqCount | None
        try:
            async with asyncio.timeout(self._timeout):
                count = await self._offsets.dlq(topic, group)
        except Exception as error:
            log.warning("pipeline.dlq_unreadable", topic=topic, group=group, error=repr(error))
            count = None
        return DlqReport(
            topic=dlq_topic(topic, group),
            group=group,
            source_topic=topic,
            messages=count.messages if count else None,
            pending=count.pending if count else None,
        )
