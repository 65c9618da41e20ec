"""Dead-letter topics: inspect them and redrive their messages (``depot dlq``).

:class:`depot_common.consumer.EventConsumer` sends what it cannot process to
``<topic>.<group>.dlq`` with the original key, value and headers plus ``x-error``,
``x-original-topic``, ``x-original-partition``, ``x-original-offset`` and ``x-attempts``.

Redrive re-publishes dead letters, in DLQ order, to their ``x-original-topic`` and
``x-original-partition`` (the key's partition when that one no longer exists) with the
same key and value, the original headers without the ``x-*``
DLQ headers, and ``x-redriven-from: <dlq>:<partition>:<offset>``. Its progress is the
committed offset of consumer group ``<group>.redrive`` on the DLQ topic: a watermark per
partition below which every message has been redriven, committed after the broker acked
the re-published messages. So no invocation redrives a message an earlier one finished,
and none skips one. A crash between ack and commit re-sends a few messages, which the
idempotent consumers absorb (inbox by event id, version checks); the same holds for
redriving an event that is older than what a consumer has applied since.

Messages are read with a consumer that assigns the partitions itself (no group join) and
reads up to the end offsets taken when it starts, so an empty DLQ returns at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from depot_common.consumer import dlq_topic
from depot_common.errors import DepotError, NotFound
from depot_common.kafka import end_offsets, make_consumer

#: Headers :class:`~depot_common.consumer.EventConsumer` adds when it dead-letters a message.
ERROR_HEADERS = frozenset({"x-error", "x-original-topic", "x-original-partition", "x-original-offset", "x-attempts"})
#: Header a redriven message carries: ``<dlq topic>:<partition>:<offset>`` it came from.
REDRIVEN_FROM = "x-redriven-from"
#: Messages re-published per acknowledged batch (and per progress commit).
REDRIVE_BATCH = 100


class DlqError(DepotError):
    """An operator-facing failure of a ``depot dlq`` command: bad input, missing topic, broker trouble (exit 2)."""

    code = "dlq_error"


class MessageNotFound(DlqError, NotFound):
    """The DLQ has no message at the requested partition and offset (404; ``depot dlq`` exits 1)."""

    code = "dlq_message_not_found"


def redrive_group(group: str) -> str:
    """The consumer group whose committed offsets on the DLQ are redrive's progress."""
    return f"{group}.redrive"


@dataclass(frozen=True)
class DeadLetter:
    """One message of a DLQ topic."""

    topic: str
    partition: int
    offset: int
    timestamp: datetime | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    redriven: bool

    @classmethod
    def of(cls, record: ConsumerRecord[bytes, bytes], *, redriven: bool) -> DeadLetter:
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC) if record.timestamp >= 0 else None,
            key=record.key,
            value=record.value,
            headers=tuple(record.headers or ()),
            redriven=redriven,
        )

    def header(self, name: str) -> str | None:
        """The last value of header ``name``, decoded; ``None`` when absent."""
        values = [value for key, value in self.headers if key == name]
        return values[-1].decode(errors="replace") if values else None

    @property
    def status(self) -> str:
        return "redriven" if self.redriven else "pending"

    @property
    def error(self) -> str | None:
        return self.header("x-error")

    @property
    def attempts(self) -> int | None:
        return _int(self.header("x-attempts"))

    @property
    def original_topic(self) -> str | None:
        return self.header("x-original-topic")

    @property
    def original_partition(self) -> int | None:
        return _int(self.header("x-original-partition"))

    @property
    def original_offset(self) -> int | None:
        return _int(self.header("x-original-offset"))

    @property
    def origin(self) -> str:
        """``<dlq topic>:<partition>:<offset>``, the value of ``x-redriven-from``."""
        return f"{self.topic}:{self.partition}:{self.offset}"

    def redrive_headers(self) -> list[tuple[str, bytes]]:
        """The original headers without the DLQ ones, plus ``x-redriven-from``."""
        kept = [(name, value) for name, value in self.headers if name not in ERROR_HEADERS and name != REDRIVEN_FROM]
        return [*kept, (REDRIVEN_FROM, self.origin.encode())]

    def summary(self) -> dict[str, Any]:
        """The fields of a ``list --json`` line."""
        return {
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp.isoformat() if self.timestamp else None,
            "key": _text(self.key),
            "status": self.status,
            "attempts": self.attempts,
            "error": self.error,
            "original_topic": self.original_topic,
            "original_partition": self.original_partition,
            "original_offset": self.original_offset,
        }


@dataclass
class RedriveReport:
    """What one redrive did, per DLQ partition."""

    redriven: dict[int, list[int]] = field(default_factory=dict)
    """DLQ offsets re-published, by partition."""
    targets: set[str] = field(default_factory=set)
    """Topics the messages went back to."""

    @property
    def count(self) -> int:
        return sum(len(offsets) for offsets in self.redriven.values())


Progress = Callable[[int, int], None]
"""Called with ``(done, total)`` after each acknowledged batch of a redrive."""


class DeadLetterQueue:
    """The DLQ of ``topic`` for consumer ``group``; use as ``async with``."""

    def __init__(self, bootstrap: list[str], topic: str, group: str, *, idle_timeout: float = 15.0) -> None:
        self.topic = dlq_topic(topic, group)
        self.group = group
        self._bootstrap = bootstrap
        self._idle_timeout = idle_timeout
        self._consumer: AIOKafkaConsumer = make_consumer(
            bootstrap, group_id=redrive_group(group), request_timeout_ms=15000
        )
        self._partitions: list[TopicPartition] = []

    async def __aenter__(self) -> DeadLetterQueue:
        try:
            await self._consumer.start()
        except Exception as error:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
            raise DlqError(f"cannot reach Kafka at {','.join(self._bootstrap)}: {error}") from error
        try:
            if self.topic not in await self._consumer.topics():
                raise DlqError(
                    f"topic {self.topic} does not exist (check --topic and --group; "
                    "a consumer creates its DLQ when it starts)"
                )
            partitions = self._consumer.partitions_for_topic(self.topic)
            if not partitions:
                raise DlqError(f"no partition metadata for topic {self.topic}")
            self._partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        except BaseException:
            await self._consumer.stop()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self._consumer.stop()

    @property
    def partitions(self) -> list[int]:
        return [tp.partition for tp in self._partitions]

    def _partition(self, partition: int) -> TopicPartition:
        tp = TopicPartition(self.topic, partition)
        if tp not in self._partitions:
            raise DlqError(f"topic {self.topic} has no partition {partition} (partitions: {self.partitions})")
        return tp

    def _not_found(self, partition: int, offset: int, first: int, end: int) -> MessageNotFound:
        holds = f"offsets {first}..{end - 1}" if end > first else "it is empty"
        return MessageNotFound(f"no message at offset {offset} of {self.topic} partition {partition} ({holds})")

    async def watermark(self, partition: int) -> int:
        """The first offset of ``partition`` not redriven yet."""
        tp = self._partition(partition)
        committed = await self._consumer.committed(tp)
        first: int = (await self._consumer.beginning_offsets([tp]))[tp]
        return max(first, committed or 0)

    async def bounds(self, partition: int) -> tuple[int, int]:
        """``(first offset, end offset)`` of ``partition`` right now (the end as
        :func:`~depot_common.kafka.end_offsets` probes it)."""
        tp = self._partition(partition)
        first = int((await self._consumer.beginning_offsets([tp]))[tp])
        try:
            ends = await end_offsets(self._consumer, [tp], probe_timeout=self._idle_timeout)
        except TimeoutError as error:
            raise DlqError(f"no data from {self.topic} partition {partition}: {error}") from None
        return first, ends[tp]

    async def messages(self, *, pending_only: bool = False) -> AsyncGenerator[DeadLetter, None]:
        """Every message of every partition (partition by partition, in offset order)."""
        for partition in self.partitions:
            first, end = await self.bounds(partition)
            mark = await self.watermark(partition)
            start = mark if pending_only else first
            async with contextlib.aclosing(self._read(partition, start, end)) as records:
                async for record in records:
                    yield DeadLetter.of(record, redriven=record.offset < mark)

    async def get(self, partition: int, offset: int) -> DeadLetter:
        """The message at ``partition``/``offset``; :class:`MessageNotFound` when there is none."""
        first, end = await self.bounds(partition)
        if not first <= offset < end:
            raise self._not_found(partition, offset, first, end)
        mark = await self.watermark(partition)
        async with contextlib.aclosing(self._read(partition, offset, offset + 1)) as records:
            async for record in records:
                return DeadLetter.of(record, redriven=record.offset < mark)
        raise MessageNotFound(f"no message at offset {offset} of {self.topic} partition {partition}")

    async def redrive(
        self,
        producer: AIOKafkaProducer,
        *,
        partition: int | None = None,
        through: int | None = None,
        progress: Progress | None = None,
    ) -> RedriveReport:
        """Re-publish pending messages (of ``partition``, up to offset ``through``), committing progress.

        ``through`` needs ``partition``; an offset already redriven redrives nothing, one past
        the end raises :class:`MessageNotFound` before anything is sent.
        """
        if through is not None and partition is None:
            raise DlqError("an offset needs a partition")
        ranges: dict[int, tuple[int, int]] = {}
        for number in self.partitions if partition is None else [partition]:
            first, end = await self.bounds(number)
            start = await self.watermark(number)
            if through is not None:
                if not first <= through < end:
                    raise self._not_found(number, through, first, end)
                end = min(end, through + 1)
            if start < end:
                ranges[number] = (start, end)
        total = sum(end - start for start, end in ranges.values())
        report = RedriveReport()
        partitions_of: dict[str, set[int]] = {}
        for number, (start, end) in ranges.items():
            tp = self._partition(number)
            done: list[int] = report.redriven.setdefault(number, [])
            batch: list[tuple[int, asyncio.Future[Any]]] = []
            async with contextlib.aclosing(self._read(number, start, end)) as records:
                async for record in records:
                    letter = DeadLetter.of(record, redriven=False)
                    target = letter.original_topic
                    if not target or target == self.topic:
                        await self._flush(tp, batch, done, progress, report, total)
                        raise DlqError(
                            f"{letter.origin}: x-original-topic is {'the DLQ itself' if target else 'missing'},"
                            " so it is not a Depot dead letter; redrive stopped before it"
                            " (inspect it with depot dlq show)"
                        )
                    if target not in partitions_of:
                        partitions_of[target] = set(await producer.partitions_for(target))
                    original = letter.original_partition
                    future = await producer.send(
                        target,
                        value=letter.value,
                        key=letter.key,
                        headers=letter.redrive_headers(),
                        partition=original if original in partitions_of[target] else None,
                    )
                    batch.append((record.offset, future))
                    report.targets.add(target)
                    if len(batch) >= REDRIVE_BATCH:
                        await self._flush(tp, batch, done, progress, report, total)
            await self._flush(tp, batch, done, progress, report, total)
        return report

    async def _flush(
        self,
        tp: TopicPartition,
        batch: list[tuple[int, asyncio.Future[Any]]],
        done: list[int],
        progress: Progress | None,
        report: RedriveReport,
        total: int,
    ) -> None:
        """Wait for the acks of ``batch``, then commit past it."""
        if not batch:
            return
        try:
            await asyncio.gather(*(future for _, future in batch))
        except Exception as error:
            raise DlqError(f"publishing failed; progress kept up to the last committed batch: {error!r}") from error
        await self._consumer.commit({tp: batch[-1][0] + 1})
        done.extend(offset for offset, _ in batch)
        batch.clear()
        if progress is not None:
            progress(report.count, total)

    async def _read(self, partition: int, start: int, end: int) -> AsyncGenerator[ConsumerRecord[bytes, bytes], None]:
        """Records of ``partition`` with ``start <= offset < end``, in order."""
        if start >= end:
            return
        tp = self._partition(partition)
        self._consumer.assign([tp])
        self._consumer.seek(tp, start)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._idle_timeout
        while True:
            batch = await self._consumer.getmany(tp, timeout_ms=500)
            for record in batch.get(tp, []):
                if record.offset >= end:
                    return
                if record.offset >= start:
                    yield record
            if await self._consumer.position(tp) >= end:
                return
            if batch:
                deadline = loop.time() + self._idle_timeout
            elif loop.time() > deadline:
                raise DlqError(f"no data from {self.topic} partition {partition} for {self._idle_timeout:.0f} s")


def line(letter: DeadLetter, *, error_width: int = 100) -> str:
    """One ``list`` line: where, status, key, attempts, origin, and the error shortened."""
    error = " ".join((letter.error or "-").split())
    if len(error) > error_width:
        error = error[: error_width - 1] + "…"
    origin = (
        f"{letter.original_topic}:{letter.original_partition}:{letter.original_offset}"
        if letter.original_topic
        else "-"
    )
    return (
        f"partition={letter.partition} offset={letter.offset} status={letter.status} key={_text(letter.key) or '-'}"
        f" attempts={letter.attempts if letter.attempts is not None else '-'} original={origin} error={error}"
    )


def full(letter: DeadLetter) -> str:
    """Every detail of a message: where, headers, and the value (pretty JSON when it is JSON)."""
    lines = [
        f"dlq:       {letter.origin}",
        f"status:    {letter.status}",
        f"timestamp: {letter.timestamp.isoformat() if letter.timestamp else '-'}",
        f"key:       {_text(letter.key) if letter.key is not None else '(none)'}",
        "headers:",
        *(f"  {name}: {value.decode(errors='replace')}" for name, value in letter.headers),
        "value:",
    ]
    if letter.value is None:
        lines.append("(none)")
    else:
        try:
            lines.append(json.dumps(json.loads(letter.value), indent=2, ensure_ascii=False))
        except ValueError:
            lines.append(letter.value.decode(errors="backslashreplace"))
    return "\n".join(lines) + "\n"


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    with contextlib.suppress(ValueError):
        return int(text)
    return None


def _text(raw: bytes | None) -> str | None:
    return raw.decode(errors="backslashreplace") if raw is not None else None
