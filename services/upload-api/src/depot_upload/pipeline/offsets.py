"""Kafka adapter of the pipeline report: consumer lag and DLQ sizes.

End offsets come from :func:`depot_common.kafka.end_offsets` and DLQ sizes from
:class:`depot_common.dlq.DeadLetterQueue` (the code of ``depot dlq``), because some
Kafka-protocol brokers (tansu) report short end offsets and lack the admin API's
consumer-group offsets: committed offsets are read with a consumer of the group that
never joins it (OffsetFetch only), so the report never disturbs the group.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition

from depot_common.consumer import dlq_topic
from depot_common.dlq import DeadLetterQueue
from depot_common.kafka import end_offsets, make_consumer
from depot_upload.pipeline.ports import DlqCount, PartitionLag

#: Milliseconds any one Kafka request of the report may take.
REQUEST_TIMEOUT_MS = 5000


@contextlib.asynccontextmanager
async def _started(consumer: AIOKafkaConsumer) -> AsyncIterator[AIOKafkaConsumer]:
    try:
        await consumer.start()
        yield consumer
    finally:
        await consumer.stop()


class KafkaOffsets:
    def __init__(self, bootstrap: list[str]) -> None:
        self._bootstrap = bootstrap

    def _consumer(self, group: str | None) -> AIOKafkaConsumer:
        return make_consumer(self._bootstrap, group_id=group, request_timeout_ms=REQUEST_TIMEOUT_MS)

    async def lag(self, topic: str, group: str) -> list[PartitionLag]:
        async with _started(self._consumer(group)) as consumer:
            if topic not in await consumer.topics():
                return []
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            committed = {tp: await consumer.committed(tp) for tp in partitions}
            firsts = await consumer.beginning_offsets(partitions)
            ends = await end_offsets(consumer, partitions, probe_timeout=REQUEST_TIMEOUT_MS / 1000)
        return [
            PartitionLag(
                partition=tp.partition,
                committed=committed[tp],
                end=ends[tp],
                lag=max(0, ends[tp] - max(int(firsts[tp]), committed[tp] or 0)),
            )
            for tp in partitions
        ]

    async def dlq(self, topic: str, group: str) -> DlqCount:
        async with _started(self._consumer(None)) as probe:
            if dlq_topic(topic, group) not in await probe.topics():
                return DlqCount(messages=0, pending=0)
        messages = pending = 0
        async with DeadLetterQueue(self._bootstrap, topic, group, idle_timeout=REQUEST_TIMEOUT_MS / 1000) as queue:
            for partition in queue.partitions:
                first, end = await queue.bounds(partition)
                mark = await queue.watermark(partition)
                messages += end - first
                pending += max(0, end - mark)
        return DlqCount(messages=messages, pending=pending)
