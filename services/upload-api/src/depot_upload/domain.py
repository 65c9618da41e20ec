"""The upload domain: documents, their life cycle and the rules on user input.

Imports nothing outward: no FastAPI, asyncpg or boto.
"""

from __future__ import annotations

import enum
import mimetypes
import re
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime

from depot_common.errors import BadRequest, InvalidFilename

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
