"""Kafka: producer, consumer and topic helpers over aiokafka, and the outbox relay's producer over librdkafka.

Producers use ``acks="all"`` and no idempotence/transactions: the transactional outbox
plus idempotent consumers give exactly-once effects on any Kafka-protocol broker.

Consumers, their dead-letter producer and the admin helpers use aiokafka. The outbox relay
alone sends through :class:`RelayProducer`, confluent-kafka's ``Producer`` (librdkafka): it
sends the relay's batches for a fraction of aiokafka's CPU (docs/architecture.md, *Outbox
relay producer*).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, NamedTuple

import confluent_kafka
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


#: Kafka record headers as librdkafka takes them: name → value (a ``str`` is sent UTF-8 encoded).
Headers = dict[str, str | bytes | None]


class Record(NamedTuple):
    """One record the relay sends; librdkafka sends a ``str`` key or value UTF-8 encoded."""

    topic: str
    key: str | bytes
    value: str | bytes
    headers: Headers


class RelayProducer:
    """confluent-kafka's ``Producer`` (librdkafka) behind one coroutine: :meth:`send` a batch, return once
    every record of it is acknowledged (``acks=all``), raise ``confluent_kafka.KafkaException`` if any was not.

    librdkafka frames and sends from its own threads. A batch is queued, then ``flush`` waits (in a worker
    thread, so the event loop never blocks) until nothing is left in flight; delivery reports come for failed
    records only (``delivery.report.only.error``), so a batch costs no Python call per acknowledged record.
    One batch at a time: ``flush`` waits for everything the producer holds.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self._producer: confluent_kafka.Producer | None = None
        #: ``flush`` outlasts ``message.timeout.ms``: by then every record was acknowledged or reported failed.
        self._flush_seconds = int(config.get("message.timeout.ms", 300_000)) / 1000 + 5

    async def start(self) -> None:
        self._producer = confluent_kafka.Producer(self.config, error_cb=_log_client_error)

    async def stop(self) -> None:
        """Deliver what is still queued (or give up after ``message.timeout.ms``)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await asyncio.to_thread(producer.flush, self._flush_seconds)

    async def send(self, records: Sequence[Record]) -> None:
        """Send ``records`` in order; return when every one is acknowledged, raise the first error otherwise."""
        producer = self._producer
        if producer is None:
            raise RuntimeError("RelayProducer.send before start")
        errors: list[confluent_kafka.KafkaError] = []

        def failed(error: confluent_kafka.KafkaError | None, _: confluent_kafka.Message) -> None:
            if error is not None:  # runs in the flushing thread
                errors.append(error)

        produce = producer.produce
        for topic, key, value, headers in records:
            produce(topic, value, key, on_delivery=failed, headers=headers)
        left = await asyncio.to_thread(producer.flush, self._flush_seconds)
        if errors:
            raise confluent_kafka.KafkaException(errors[0])
        if left:
            raise confluent_kafka.KafkaException(confluent_kafka.KafkaError(confluent_kafka.KafkaError._MSG_TIMED_OUT))


def _log_client_error(error: confluent_kafka.KafkaError) -> None:
    """librdkafka's client-wide errors (a broker unreachable…): logged; a batch they stop fails on its own."""
    log.warning("kafka.producer.error", code=error.name(), error=error.str())


def make_relay_producer(bootstrap: list[str], **overrides: Any) -> RelayProducer:
    """The outbox relay's producer: ``acks=all``, no idempotence, at most one request in flight (a retried
    request never overtakes a later one: order per partition holds without idempotence), a record not
    acknowledged within ``message.timeout.ms`` fails its batch. ``overrides`` are librdkafka settings."""
    config: dict[str, Any] = {
        "bootstrap.servers": ",".join(bootstrap),
        "acks": "all",
        "enable.idempotence": False,
        "max.in.flight.requests.per.connection": 1,
        "linger.ms": 1,  # the relay hands over whole batches: a batch leaves as it is queued
        "message.timeout.ms": 15000,
        "delivery.report.only.error": True,  # a report (a Python call) only for a record that failed
        "client.id": "depot-outbox-relay",
    }
    config.update(overrides)
    return RelayProducer(config)


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
