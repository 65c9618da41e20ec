"""Index entries, search results and the opaque search cursor (no I/O here)."""

from __future__ import annotations

import base64
import binascii
import json
import math
import uuid
from dataclasses import dataclass

from depot_common.errors import BadRequest

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


@dataclass(frozen=True)
class Cursor:
    """The position after the last hit of a page: results sort by ``(score, document_id)`` descending."""

    score: float
    document_id: uuid.UUID

    def encode(self) -> str:
        raw = json.dumps({"s": self.score, "d": str(self.document_id)}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        """Parse a cursor a previous page returned; anything else is a 400 ``invalid_cursor``."""
        try:
            if len(token) > 512:
                raise ValueError("cursor too long")
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            values = json.loads(raw)
            score = values["s"]
            if not isinstance(score, int | float) or isinstance(score, bool) or not math.isfinite(score):
                raise ValueError("score is not a finite number")
            return cls(score=float(score), document_id=uuid.UUID(str(values["d"])))
        except (binascii.Error, ValueError, TypeError, KeyError):
            raise BadRequest("the cursor is not one this API returned", code="invalid_cursor") from None


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
