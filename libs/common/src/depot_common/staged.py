"""A consumer handler in two steps: read what it needs first, then change state in the transaction.

:class:`depot_common.consumer.EventConsumer` runs a plain handler ``(conn, event)`` inside the
transaction that also records the event in the inbox. A :class:`Staged` handler splits it:
``read(db, event)`` runs *before* that transaction opens, on the consumer's pool (a check
that makes the rest unnecessary, a download from S3, text extraction: nothing it does may
change state), and ``apply(conn, event, what_read_returned)`` runs inside it. So a slow read
never holds a transaction (nor a connection) open, and the events of a partition's batch are
read concurrently, then applied in order in one transaction.

A ``Staged`` is also an ordinary handler: called as ``handler(conn, event)`` it reads and
applies on ``conn`` (tests and callers that hold their own transaction use it so). This module
imports neither aiokafka nor the consumer, so handler modules can use it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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
    """``read`` outside the transaction (no state change), then ``apply`` with its result inside it."""

    read: Callable[[Queryable, CloudEvent[Any]], Awaitable[T]]
    apply: Callable[[Connection, CloudEvent[Any], T], Awaitable[None]]

    async def __call__(self, conn: Connection, event: CloudEvent[Any]) -> None:
        await self.apply(conn, event, await self.read(conn, event))
