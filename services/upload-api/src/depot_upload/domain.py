"""The upload domain: documents, their life cycle and the rules on user input.

Imports nothing outward: no FastAPI, asyncpg or boto (only the event contracts).

Life cycle of a document. Each transition returns the next state (version + 1) and the
event announcing it; the caller writes both in one unit of work
(:mod:`depot_upload.unit_of_work`)::

    pending ──store(blob)──▶ stored
       │                       │
       └──fail(reason)──▶ failed ◀──fail("blob_lost")
    pending | stored | failed ──delete()──▶ deleted
"""

from __future__ import annotations

import enum
import mimetypes
import re
import unicodedata
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar

from depot_common.errors import BadRequest, InvalidFilename
from depot_common.events import DocumentDeleted, DocumentFailed, DocumentStored

MAX_FILENAME_BYTES = 255
DEFAULT_CONTENT_TYPE = "application/octet-stream"
_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")


class Status(enum.StrEnum):
    PENDING = "pending"
    STORED = "stored"
    FAILED = "failed"
    DELETED = "deleted"


@dataclass(frozen=True)
class Document:
    id: uuid.UUID
    owner_id: str
    filename: str
    content_type: str
    object_key: str
    status: Status
    version: int
    created_at: datetime
    updated_at: datetime
    size_bytes: int | None = None
    sha256: str | None = None

    def store(self, blob: StoredBlob) -> Transition[DocumentStored]:
        """``pending`` → ``stored`` with the measured size and SHA-256."""
        stored = self._moved("store", Status.STORED, size_bytes=blob.size_bytes, sha256=blob.sha256)
        event = DocumentStored(
            document_id=self.id,
            owner_id=self.owner_id,
            filename=self.filename,
            content_type=self.content_type,
            size_bytes=blob.size_bytes,
            sha256=blob.sha256,
            object_key=self.object_key,
            version=stored.version,
        )
        return Transition(stored, event)

    def fail(self, reason: str) -> Transition[DocumentFailed]:
        """``pending`` (an upload that will never complete) or ``stored`` (bytes lost) → ``failed``."""
        failed = self._moved("fail", Status.FAILED)
        return Transition(failed, DocumentFailed(document_id=self.id, owner_id=self.owner_id, reason=reason))

    def delete(self) -> Transition[DocumentDeleted]:
        """Any live or failed document → ``deleted``: it stops being readable and searchable."""
        deleted = self._moved("delete", Status.DELETED)
        return Transition(
            deleted, DocumentDeleted(document_id=self.id, owner_id=self.owner_id, version=deleted.version)
        )

    def _moved(self, transition: str, to: Status, **changes: Any) -> Document:
        if self.status not in ALLOWED[transition]:
            raise IllegalTransition(f"cannot {transition} a {self.status} document")
        return replace(self, status=to, version=self.version + 1, **changes)


#: The states each transition starts from.
ALLOWED: dict[str, frozenset[Status]] = {
    "store": frozenset({Status.PENDING}),
    "fail": frozenset({Status.PENDING, Status.STORED}),
    "delete": frozenset({Status.PENDING, Status.STORED, Status.FAILED}),
}


class IllegalTransition(Exception):
    """A transition from a state it does not start from: the caller skipped its check (a bug)."""


EventT = TypeVar("EventT", DocumentStored, DocumentFailed, DocumentDeleted)


class Transition(NamedTuple, Generic[EventT]):
    """A document's next state and the event announcing it, to be written together."""

    document: Document
    event: EventT


@dataclass(frozen=True)
class StoredBlob:
    """What the blob store measured while the bytes streamed through."""

    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class PageCursor:
    """Position after the last document of a newest-first page."""

    created_at: datetime
    id: uuid.UUID


@dataclass(frozen=True)
class Page:
    items: list[Document]
    next_cursor: PageCursor | None


@dataclass(frozen=True)
class UploadResult:
    """A stored document, and whether it is the replay of an earlier response."""

    document: Document
    replayed: bool = False


@dataclass(frozen=True)
class OwnerStatus:
    outbox_backlog: int
    oldest_unpublished_age_s: float
    pending_uploads: int


MAX_IDEMPOTENCY_KEY = 255
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def validate_idempotency_key(key: str) -> str:
    """A printable-ASCII key of 1 to 255 characters, or :class:`BadRequest`."""
    if not _IDEMPOTENCY_KEY.match(key):
        raise BadRequest("Idempotency-Key must be 1 to 255 printable ASCII characters", code="invalid_idempotency_key")
    return key


def object_key(document_id: uuid.UUID) -> str:
    """The S3 key of a document: derived from its id only, never from user input."""
    return f"documents/{document_id}"


def validate_filename(filename: str | None) -> str:
    """The filename as given, or :class:`InvalidFilename` when it is unsafe or empty."""
    if filename is None or not filename.strip():
        raise InvalidFilename("filename is empty")
    if "/" in filename or "\\" in filename:
        raise InvalidFilename("filename contains a path separator")
    if ".." in filename:
        raise InvalidFilename("filename contains '..'")
    if any(unicodedata.category(char) == "Cc" for char in filename):
        raise InvalidFilename("filename contains NUL or control characters")
    if len(filename.encode()) > MAX_FILENAME_BYTES:
        raise InvalidFilename(f"filename is longer than {MAX_FILENAME_BYTES} bytes")
    return filename


def normalize_content_type(declared: str | None, filename: str) -> str:
    """A well-formed ``type/subtype``: the declared one, else a guess from the name."""
    media_type = (declared or "").split(";", 1)[0].strip().lower()
    if media_type and media_type != DEFAULT_CONTENT_TYPE and _MEDIA_TYPE.match(media_type):
        return media_type
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    return guessed or DEFAULT_CONTENT_TYPE
