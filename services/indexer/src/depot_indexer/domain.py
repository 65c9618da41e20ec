"""Index entries, search results and the opaque search cursor (no I/O here)."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from depot_common.cursor import CursorCodec, uuid_field

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


@dataclass(frozen=True)
class IndexEntry:
    """What ``document.stored`` puts in the index."""

    document_id: uuid.UUID
    owner_id: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    version: int
    body: str
    extraction_failure: str | None = None
    """Why there is no text (the entry is findable by filename only); None when it was extracted."""


@dataclass(frozen=True)
class IndexedEntry:
    """That a document is in the search index (findable), at which version, since when."""

    document_id: uuid.UUID
    version: int
    indexed_at: datetime
    extraction_failure: str | None = None


@dataclass(frozen=True)
class Cursor:
    """The position after the last hit of a page: results sort by ``(score, document_id)`` descending."""

    score: float
    document_id: uuid.UUID

    def encode(self) -> str:
        return SEARCH_CURSOR.encode(self)

    @classmethod
    def decode(cls, token: str) -> Cursor:
        """Parse a cursor a previous page returned; anything else is a 400 ``invalid_cursor``."""
        return SEARCH_CURSOR.decode(token)

    @classmethod
    def of(cls, fields: dict[str, Any]) -> Cursor:
        score = fields["s"]
        if not isinstance(score, int | float) or isinstance(score, bool) or not math.isfinite(score):
            raise ValueError("score is not a finite number")
        return cls(score=float(score), document_id=uuid_field(fields["d"]))


#: ``next_cursor`` of a search: the ``(score, document_id)`` after the last hit of a page.
SEARCH_CURSOR = CursorCodec[Cursor](dump=lambda at: {"s": at.score, "d": str(at.document_id)}, load=Cursor.of)


@dataclass(frozen=True)
class SearchHit:
    document_id: uuid.UUID
    filename: str
    snippet: str
    score: float


@dataclass(frozen=True)
class SearchPage:
    hits: list[SearchHit]
    next_cursor: Cursor | None
