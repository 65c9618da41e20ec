"""Kafka: producer, consumer and topic helpers over aiokafka.

Producers use ``acks="all"`` and no idempotence/transactions: the transactional outbox
plus idempotent consumers give exactly-once effects on any Kafka-protocol broker.

Consumers, their dead-letter producer and the admin helpers use aiokafka. The outbox relay
alone sends through librdkafka (:mod:`depot_common.relay_producer`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

_TOPIC_ALREADY_EXISTS = 36

log = structlog.get_logger(__name__)


def make_producer(bootstrap: list[str], **overrides: Any) -> AIOKafkaProducer:
    options: dict[str, Any] = {
        "acks": "all",
        "enable_idempotence": False,
        "linger_ms": 5,
        "max_batch_size": 1024 * 1024,
        "request_timeout_ms": 15000,
    }
    options.update(overrides)
    return AIOKafkaProducer(bootstrap_servers=bootstrap, **options)


def make_consumer(bootstrap: list[str], *topics: str, group_id: str | None, **overrides: Any) -> AIOKafkaConsumer:
    options: dict[str, Any] = {
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": 500,
        "fetch_max_wait_ms": 50,  # an idle consumer sees a new event within ~50 ms on any broker
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, **options)


async def ensure_topics(bootstrap: list[str], topics: dict[str, int]) -> None:
    """Create each ``topic: partitions`` unless it exists."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(name, partitions, 1) for name, partitions in topics.items()])
        for name, code, message in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"cannot create topic {name}: {code} {message}")
    finally:
        await admin.close()


async def end_offsets(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], *, probe_timeout: float = 15.0
) -> dict[TopicPartition, int]:
    """The true end offset (offset of the next record) of each of ``partitions``; assigns them to ``consumer``.

    Some Kafka-protocol brokers (tansu 0.6) answer ListOffsets with the last record batch's base
    offset + 1, short of the real end when that batch held several records; the high watermark of
    a fetch is right, so each non-empty partition is probed with one fetch of its last record.
    Leaves ``consumer``'s positions anywhere: seek before reading.
    """
    if not partitions:
        return {}
    firsts = await consumer.beginning_offsets(partitions)
    ends = {tp: int(end) for tp, end in (await consumer.end_offsets(partitions)).items()}
    consumer.assign(partitions)
    probed = {tp for tp in partitions if ends[tp] > int(firsts[tp])}
    for tp in probed:
        consumer.seek(tp, ends[tp] - 1)
    deadline = asyncio.get_running_loop().time() + probe_timeout
    while probed:
        await consumer.getmany(*probed, timeout_ms=500)
        for tp in list(probed):
            highwater = consumer.highwater(tp)
            if highwater is not None:
                ends[tp] = max(ends[tp], int(highwater))
                probed.discard(tp)
        if probed and asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"no fetch answer from {sorted(map(str, probed))} within {probe_timeout:.0f} s")
    return ends


async def answers(bootstrap: list[str], within: float = 2.0) -> bool:
    """Whether a bootstrap server answers a protocol request (Metadata) within ``within`` seconds: a broker
    that accepts connections but is stopped or hung is not reachable."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(within * 1000))
    try:
        async with asyncio.timeout(within):
            await client.bootstrap()
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await client.close()
    return True
