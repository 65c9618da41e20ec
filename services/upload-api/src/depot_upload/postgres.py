"""The PostgreSQL unit of work: one pooled connection, one transaction, the repositories bound to it, the outbox."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from asyncpg.transaction import Transaction

from depot_common.events import DOCUMENTS_TOPIC
from depot_common.outbox import enqueue
from depot_upload.compensations.repository import PostgresCompensations
from depot_upload.documents.repository import SCHEMA, PostgresDocuments, document_event
from depot_upload.domain import Document, Transition
from depot_upload.presigned.repository import PostgresUploadSessions


class PostgresUnitOfWork:
    """``async with PostgresUnitOfWork(pool) as uow: … await uow.commit()``; rolled back unless committed."""

    documents: PostgresDocuments
    sessions: PostgresUploadSessions
    compensations: PostgresCompensations

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._conn: PoolConnectionProxy[asyncpg.Record] | None = None
        self._transaction: Transaction | None = None
        self._committed = False

    async def __aenter__(self) -> Self:
        conn: PoolConnectionProxy[asyncpg.Record] = await self._pool.acquire()
        try:
            transaction = conn.transaction()
            await transaction.start()
        except BaseException:
            await self._pool.release(conn)
            raise
        self._conn, self._transaction = conn, transaction
        self.documents = PostgresDocuments(conn)
        self.sessions = PostgresUploadSessions(conn)
        self.compensations = PostgresCompensations(conn)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        assert self._conn is not None
        assert self._transaction is not None
        try:
            if not self._committed:
                await self._transaction.rollback()
        except Exception:
            if error is None:
                raise  # otherwise the error that ended the unit of work is the one to report
        finally:
            await self._pool.release(self._conn)
            self._conn = self._transaction = None

    async def apply(self, transition: Transition[Any]) -> Document:
        assert self._conn is not None
        document = await self.documents.save(transition.document)
        await enqueue(self._conn, SCHEMA, topic=DOCUMENTS_TOPIC, key=str(document.id), event=document_event(transition))
        return document

    async def commit(self) -> None:
        assert self._transaction is not None
        await self._transaction.commit()
        self._committed = True
