"""The Kafka side of the event stream: read the document topics from their end, with no group.

Each upload-API replica assigns itself every partition of ``depot.documents.v1`` and
``depot.index.v1`` (no consumer group, nothing committed: every replica sees every event)
and starts at their end when the process starts — not per client — so a stream that
opens after :attr:`EventHub.ready` misses no event that reaches Kafka after it opened.
"""

from __future__ import annotations

import asyncio

import structlog
from aiokafka import TopicPartition

from depot_common.events import DOCUMENTS_TOPIC, INDEX_TOPIC
from depot_common.kafka import end_offsets, ensure_topics, make_consumer
from depot_upload.events_stream.service import EventHub, decode

log = structlog.get_logger(__name__)

#: The topics a stream's events come from.
TOPICS = (DOCUMENTS_TOPIC, INDEX_TOPIC)


class KafkaFeed:
    """Publishes every document event to ``hub``; run :meth:`run` as a task for the app's lifetime."""

    def __init__(self, hub: EventHub, bootstrap: list[str], *, partitions: int, retry_interval: float = 2.0) -> None:
        self._hub = hub
        self._bootstrap = bootstrap
        self._partitions = partitions
        self._retry = retry_interval

    async def run(self) -> None:
        """Read until cancelled. A failure (Kafka unreachable at start, or gone for good) makes the hub
        not ready, disconnects every stream (their clients reconnect and catch up from the documents
        list) and starts again from the end."""
        while True:
            try:
                await self._read()
            except Exception as error:  # the feed must outlive any broker trouble
                log.warning("events.feed.failed", error=repr(error))
            self._hub.ready.clear()
            self._hub.drop_all(reason="feed_restarted")
            await asyncio.sleep(self._retry)

    async def _read(self) -> None:
        await ensure_topics(self._bootstrap, dict.fromkeys(TOPICS, self._partitions))
        # fetch_max_wait_ms stays make_consumer's 50: at 500 (tried for the ~20 ms of CPU a second an idle
        # API spends fetching) the broker held each fetch to its end, and an event reached its SSE client
        # 252 ms after the broker's ack at p50 (make bench, sse, 02:43 UTC; 19.7 ms with 50, under load)
        consumer = make_consumer(self._bootstrap, group_id=None, auto_offset_reset="latest")
        await consumer.start()
        try:
            await consumer.topics()  # metadata of every topic, so partitions_for_topic knows ours
            partitions = [
                TopicPartition(topic, number)
                for topic in TOPICS
                for number in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            ends = await end_offsets(consumer, partitions)  # assigns them
            for partition, end in ends.items():
                consumer.seek(partition, end)
            self._hub.ready.set()
            log.info("events.feed.ready", partitions=len(partitions))
            while True:
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    for record in records:
                        event = decode(record.value)
                        if event is not None:
                            self._hub.publish(event)
                            await asyncio.sleep(0)  # let the streams send it before the next: a burst
                            # from Kafka then drains as it comes, and only a client that cannot keep up fills up
        finally:
            self._hub.ready.clear()
            await consumer.stop()
