"""JSON shapes of ``/v1/documents`` and ``/v1/status``."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from depot_upload.domain import Document, Status


class DocumentOut(BaseModel):
    id: uuid.UUID
    owner_id: str
    filename: str
    content_type: str
    size_bytes: int | None
    sha256: str | None
    status: Status
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, document: Document) -> DocumentOut:
        return cls(
            id=document.id,
            owner_id=document.owner_id,
            filename=document.filename,
            content_type=document.content_type,
            size_bytes=document.size_bytes,
            sha256=document.sha256,
            status=document.status,
            created_at=document.created_at,
            updated_at=document.updated_at,
        )


class DocumentPageOut(BaseModel):
    items: list[DocumentOut]
    next_cursor: str | None


class BatchItemOut(BaseModel):
    """One file of a batch: ``document`` when ``status`` is 201, else ``error``.

    ``filename`` is null only for the item that reports a body unreadable after earlier files.
    """

    filename: str | None
    status: int
    document: DocumentOut | None = None
    error: dict[str, Any] | None = None


class BatchSummaryOut(BaseModel):
    """What an uploader reads first: how many files were stored, were duplicates, or failed otherwise."""

    total: int
    stored: int
    duplicates: int
    failed: int


class BatchOut(BaseModel):
    results: list[BatchItemOut]
    summary: BatchSummaryOut

    @classmethod
    def of(cls, results: list[BatchItemOut]) -> BatchOut:
        stored = sum(1 for item in results if item.status == 201)
        duplicates = sum(1 for item in results if item.error is not None and item.error.get("error") == "duplicate")
        return cls(
            results=results,
            summary=BatchSummaryOut(
                total=len(results), stored=stored, duplicates=duplicates, failed=len(results) - stored - duplicates
            ),
        )


class StatusOut(BaseModel):
    outbox_backlog: int
    oldest_unpublished_age_s: float
    pending_uploads: int
