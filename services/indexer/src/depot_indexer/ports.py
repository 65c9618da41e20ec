"""The adapter the indexer's handlers need, as a small Protocol."""

from __future__ import annotations

import uuid
from typing import Protocol

from depot_common.db import Connection
from depot_common.events import DocumentStored


class BlobNotFound(Exception):
    """The object does not exist (any more)."""


class BlobReader(Protocol):
    async def read(self, key: str, max_bytes: int) -> bytes:
        """The first ``max_bytes`` bytes of object ``key``; raises :class:`BlobNotFound`."""
        ...


class DocumentSource(Protocol):
    async def current(self, conn: Connection, document_id: uuid.UUID) -> DocumentStored | None:
        """The document as a ``document.stored`` event would describe it now, if it is ``stored``."""
        ...
