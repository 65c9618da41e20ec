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
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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


#: Kafka record headers as librdkafka takes them.
Headers = list[tuple[str, str | bytes | None]]


@dataclass(frozen=True, slots=True)
class Record:
    """One record the relay sends."""

    topic: str
    key: bytes
    value: bytes
    headers: Headers


class RelayProducer:
    """confluent-kafka's ``Producer`` (librdkafka) behind one coroutine: :meth:`send` a batch, return once
    every record of it is acknowledged (``acks=all``), raise ``confluent_kafka.KafkaException`` if any was not.

    librdkafka sends from its own threads; one thread of ours serves its delivery reports (``poll``), so the
    event loop never blocks on it: the batch's last report wakes the loop once (``call_soon_threadsafe``).
    """

    FLUSH_SECONDS = 10.0

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self._producer: confluent_kafka.Producer | None = None
        self._stopping = threading.Event()
        self._poller: threading.Thread | None = None

    async def start(self) -> None:
        self._producer = confluent_kafka.Producer(self.config, error_cb=_log_client_error)
        self._stopping.clear()
        self._poller = threading.Thread(target=self._serve_reports, name="relay-producer-reports", daemon=True)
        self._poller.start()

    def _serve_reports(self) -> None:
        producer = self._producer
        assert producer is not None
        while not self._stopping.is_set():
            producer.poll(0.1)  # runs delivery callbacks in this thread; the GIL is released while it waits

    async def stop(self) -> None:
        """Stop serving reports, then deliver what is still queued (for up to ``FLUSH_SECONDS``)."""
        producer, poller = self._producer, self._poller
        if producer is None or poller is None:
            return
        self._stopping.set()
        await asyncio.to_thread(poller.join)
        await asyncio.to_thread(producer.flush, self.FLUSH_SECONDS)
        self._producer = self._poller = None

    async def send(self, records: Sequence[Record]) -> None:
        """Send ``records`` in order; return when every one is acknowledged, raise the first error otherwise."""
        producer = self._producer
        if producer is None:
            raise RuntimeError("RelayProducer.send before start")
        if not records:
            return
        loop = asyncio.get_running_loop()
        settled: asyncio.Future[None] = loop.create_future()
        errors: list[confluent_kafka.KafkaError] = []
        remaining = len(records)  # only the report thread counts down

        def settle() -> None:
            if settled.done():
                return
            if errors:
                settled.set_exception(confluent_kafka.KafkaException(errors[0]))
            else:
                settled.set_result(None)

        def delivered(error: confluent_kafka.KafkaError | None, _: confluent_kafka.Message) -> None:
            nonlocal remaining
            if error is not None:
                errors.append(error)
            remaining -= 1
            if remaining == 0:
                loop.call_soon_threadsafe(settle)

        for record in records:
            producer.produce(record.topic, record.value, record.key, on_delivery=delivered, headers=record.headers)
        await settled


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
