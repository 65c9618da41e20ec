"""Data models of topic ``depot.index.v1`` (producer: indexer, through its outbox in schema ``search``)."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict

INDEX_TOPIC = "depot.index.v1"


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DocumentIndexed(_Data):
    """A document's current version is searchable; ``text_chars`` characters of its text were indexed."""

    document_id: uuid.UUID
    owner_id: str
    version: int
    text_chars: int


class DocumentIndexFailed(_Data):
    """Text extraction failed for a document's version; it stays findable by its filename."""

    document_id: uuid.UUID
    owner_id: str
    version: int
    reason: str
