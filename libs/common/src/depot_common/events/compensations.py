"""Data models of topic ``depot.compensations.v1`` (producer: reconciler, through its outbox).

Each type is executed by the service that owns the data it repairs, as registered in
:mod:`depot_common.events.registry`.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict

COMPENSATIONS_TOPIC = "depot.compensations.v1"


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OrphanObject(_Data):
    """An object under ``documents/`` belongs to no live document: quarantine it."""

    object_key: str
    size_bytes: int
    last_modified: datetime
    run_id: uuid.UUID


class MissingBlob(_Data):
    """A ``stored`` document's object is absent or has the wrong size: mark it ``failed``."""

    document_id: uuid.UUID
    object_key: str
    run_id: uuid.UUID


class StaleUpload(_Data):
    """A ``pending`` document outlived its TTL: finalize it if its bytes match, else fail it."""

    document_id: uuid.UUID
    run_id: uuid.UUID


class Reindex(_Data):
    """A ``stored`` document is missing from the index or indexed at an older version."""

    document_id: uuid.UUID
    run_id: uuid.UUID


class GhostIndexEntry(_Data):
    """An index entry's document is not ``stored``: remove the entry."""

    document_id: uuid.UUID
    run_id: uuid.UUID


class AbandonedMultipart(_Data):
    """An S3 multipart upload under ``documents/`` outlived the upload TTL plus grace with no live upload: abort it."""

    object_key: str
    upload_id: str
    initiated: datetime
    run_id: uuid.UUID


class ContentMismatch(_Data):
    """A ``stored`` document's object no longer hashes to its recorded SHA-256: quarantine it, fail the document."""

    document_id: uuid.UUID
    object_key: str
    expected_sha256: str
    actual_sha256: str
    run_id: uuid.UUID
