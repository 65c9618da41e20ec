"""Data models of topic ``depot.documents.v1`` (producer: upload-api)."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict

DOCUMENTS_TOPIC = "depot.documents.v1"


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DocumentStored(_Data):
    """A document's bytes are durable in S3 and its row is ``stored``."""

    document_id: uuid.UUID
    owner_id: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    object_key: str
    version: int


class DocumentDeleted(_Data):
    """A document was deleted by its owner; it must stop being readable and searchable."""

    document_id: uuid.UUID
    owner_id: str
    version: int


class DocumentFailed(_Data):
    """An upload was abandoned or its bytes were lost."""

    document_id: uuid.UUID
    owner_id: str
    reason: str
