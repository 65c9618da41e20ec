"""A consumer handler in two steps: read what it needs first, then change state in the transaction.

:class:`depot_common.consumer.EventConsumer` runs a plain handler ``(conn, event)`` inside the
transaction that also records the event in the inbox. A :class:`Staged` handler splits it:
``read(db, event)`` runs *before* that transaction opens, on the consumer's pool (a check
that makes the rest unnecessary, a download from S3, text extraction: nothing it does may
change state), and ``apply(conn, event, what_read_returned)`` runs inside it. So a slow read
never holds a transaction (nor a connection) open, and the events of a partition's batch are
read concurrently, then applied in order in one transaction.

An optional ``settle(db, events)`` answers for a whole batch in one query which events need no
read (a stale event: its result instead of a read), so a batch costs one check, not one per
event; ``read`` then runs only for the others.

A ``Staged`` is also an ordinary handler: called as ``handler(conn, event)`` it settles, reads
and applies on ``conn`` (tests and callers that hold their own transaction use it so). This module
imports neither aiokafka nor the consumer, so handler modules can use it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

import asyncpg

from depot_common.db import Connection
from depot_common.events.envelope import CloudEvent

T = TypeVar("T")
#: What ``read`` queries through: the consumer's pool (or the caller's connection, called as a plain handler).
Queryable: TypeAlias = "Connection | asyncpg.Pool[asyncpg.Record]"


@dataclass(frozen=True)
class Staged(Generic[T]):
    """``read`` outside the transaction (no state change), then ``apply`` with its result inside it; ``settle``
    (optional, no state change either) gives, per event of a batch, what ``apply`` gets without a read, or
    ``None`` for an event that must be read."""

    read: Callable[[Queryable, CloudEvent[Any]], Awaitable[T]]
    apply: Callable[[Connection, CloudEvent[Any], T], Awaitable[None]]
    settle: Callable[[Queryable, Sequence[CloudEvent[Any]]], Awaitable[Sequence[T | None]]] | None = None

    async def settled(self, db: Queryable, events: Sequence[CloudEvent[Any]]) -> Sequence[T | None]:
        """``settle``'s answer for ``events`` (all ``None`` without one)."""
        return [None] * len(events) if self.settle is None else await self.settle(db, events)

    async def prepare(self, db: Queryable, event: CloudEvent[Any]) -> T:
        """What ``apply`` gets for one event: settled, or read."""
        [found] = await self.settled(db, [event])
        return await self.read(db, event) if found is None else found

    async def __call__(self, conn: Connection, event: CloudEvent[Any]) -> None:
        await self.apply(conn, event, await self.prepare(conn, event))
