"""The outbox relay's producer: confluent-kafka's ``Producer`` (librdkafka) behind one coroutine.

It sends the relay's batches for a fraction of aiokafka's CPU (docs/architecture.md, *Outbox relay
producer*). Only relay processes import it: librdkafka costs ~14 MiB of RSS in a process that loads
it, which the upload API and the indexer do not (their Kafka clients are aiokafka's, :mod:`depot_common.kafka`).
:func:`dependency_of` says which of its errors mean the broker is unreachable (:mod:`depot_common.outages`
asks it once librdkafka is loaded).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import confluent_kafka
import structlog

from depot_common.errors import Dependency

log = structlog.get_logger(__name__)


#: Kafka record headers as librdkafka takes them: name → value (a ``str`` is sent UTF-8 encoded).
Headers = dict[str, str | bytes | None]


#: One record the relay sends: ``(topic, key, value, headers)``; librdkafka sends a ``str`` key or value UTF-8
#: encoded.
Record = tuple[str, str | bytes, str | bytes, Headers]


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


#: librdkafka's errors that say the broker is unreachable or too slow, besides those it flags retriable itself.
_OUTAGES = frozenset(
    {
        confluent_kafka.KafkaError._MSG_TIMED_OUT,
        confluent_kafka.KafkaError._TIMED_OUT,
        confluent_kafka.KafkaError._TRANSPORT,
        confluent_kafka.KafkaError._ALL_BROKERS_DOWN,
        confluent_kafka.KafkaError._RESOLVE,
        confluent_kafka.KafkaError.REQUEST_TIMED_OUT,
        confluent_kafka.KafkaError.NETWORK_EXCEPTION,
    }
)


def dependency_of(error: BaseException) -> Dependency | None:
    """``"kafka"`` when ``error`` is librdkafka's and says the broker is unreachable; ``None`` otherwise."""
    if not isinstance(error, confluent_kafka.KafkaException):
        return None
    kafka_error = error.args[0] if error.args else None
    if not isinstance(kafka_error, confluent_kafka.KafkaError):
        return None
    return "kafka" if kafka_error.retriable() or kafka_error.code() in _OUTAGES else None
