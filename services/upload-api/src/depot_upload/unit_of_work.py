"""The unit of work: one transaction in which a use case changes state and writes its events.

The use case opens it where it runs, so the transaction is visible there (cosmicpython's
``with uow: … uow.commit()``)::

    async with self._uow() as uow:
        document = await uow.documents.lock(document_id)
        ...
        await uow.apply(document.store(blob))  # the new state and its outbox event
        await uow.commit()

Leaving the block without ``commit()`` rolls back the state and the events together.
Implemented by :class:`depot_upload.postgres.PostgresUnitOfWork` and, for fast tests,
:class:`depot_upload.fakes.FakeUnitOfWork`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, Self

from depot_upload.compensations.ports import CompensationRecords
from depot_upload.documents.ports import DocumentRepository
from depot_upload.domain import Document, Transition
from depot_upload.presigned.ports import UploadSessions


class UnitOfWork(Protocol):
    @property
    def documents(self) -> DocumentRepository: ...

    @property
    def sessions(self) -> UploadSessions: ...

    @property
    def compensations(self) -> CompensationRecords: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        """Roll back whatever was not committed."""

    async def apply(self, transition: Transition[Any]) -> Document:
        """Save the transition's document and add its event to the outbox; the document as saved."""

    async def commit(self) -> None: ...


#: Each use case opens a fresh unit of work: ``async with uow_factory() as uow``.
UnitOfWorkFactory = Callable[[], UnitOfWork]
