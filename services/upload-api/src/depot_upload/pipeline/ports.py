"""What the pipeline health report reads, as small Protocols (PostgreSQL outboxes, Kafka offsets)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Backlog:
    """Unpublished events of one outbox, and the age of the oldest (0 when none)."""

    count: int
    oldest_age_s: float


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    committed: int | None
    """The group's committed offset; ``None`` when it never committed on this partition."""
    end: int
    lag: int


@dataclass(frozen=True)
class DlqCount:
    messages: int
    """Messages the DLQ holds."""
    pending: int
    """Of those, the ones ``depot dlq redrive`` has not replayed."""


class Outboxes(Protocol):
    async def backlog(self, schema: str) -> Backlog | None:
        """``schema``'s outbox backlog; ``None`` when that outbox does not exist (yet)."""
        ...


class Offsets(Protocol):
    async def lag(self, topic: str, group: str) -> list[PartitionLag]:
        """Per partition of ``topic``: ``group``'s committed offset, the end, and the lag."""
        ...

    async def dlq(self, topic: str, group: str) -> DlqCount:
        """The size of ``<topic>.<group>.dlq`` (zero when it does not exist)."""
        ...
