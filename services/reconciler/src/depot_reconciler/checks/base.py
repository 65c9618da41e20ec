"""What every reconcile check is made of, and the pure types the checks share.

A :class:`Check` declares what it streams (its :class:`Source`), how it classifies one
item of that stream (a :class:`Finding` or ``None``, measured against :class:`Limits`),
how ``apply`` re-checks a planned finding at the moment it acts (:class:`Recheck`), and
which compensation it emits (a registered event model of ``depot_common.events``, executed
by the service that owns the data). A check without a compensation is reported only.
Checks that read the same source share one pass over it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import asyncpg
from botocore.exceptions import ClientError
from pydantic import BaseModel

from depot_common.db import Connection
from depot_common.s3 import is_not_found

if TYPE_CHECKING:
    from depot_reconciler.repository import StoredFinding
    from depot_reconciler.scan import ScanProgress
    from depot_reconciler.verification import Verification

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Limits:
    """Every allowance of the checks, and the ``now`` they are measured from."""

    now: datetime
    grace: timedelta
    upload_ttl: timedelta
    index_lag: timedelta
    outbox_allowance: timedelta


@dataclass(frozen=True, slots=True)
class Finding:
    """One inconsistency: its class, what it is about, and the state the scan saw."""

    check: str
    subject: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reads:
    """What a source reads from: PostgreSQL (the scan's pool), the bucket, and the page size.

    ``verification`` is the share of stored documents to read back and its pace, when the
    run was asked to verify content (``None``: no bytes are read).
    """

    pool: asyncpg.Pool
    s3: Any
    bucket: str
    page_size: int
    verification: Verification | None = None


@dataclass(frozen=True, slots=True)
class Source(Generic[T]):
    """A stream the scan reads once, however many selected checks classify its items.

    ``open`` starts the stream; ``tally`` adds one item to the scan's progress counts.
    """

    name: str
    open: Callable[[Reads], AsyncIterator[T]]
    tally: Callable[[ScanProgress, T], None]


@dataclass(frozen=True, slots=True)
class Recheck:
    """What ``apply`` re-checks a finding with: the run's connection (in the finding's transaction) and S3."""

    conn: Connection
    s3: Any
    bucket: str

    async def head(self, key: str) -> dict[str, Any] | None:
        """The object's ``HeadObject`` answer, ``None`` when it does not exist."""
        try:
            head: dict[str, Any] = await self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if is_not_found(error):
                return None
            raise
        return head

    async def document(self, document_id: str) -> asyncpg.Record | None:
        """The document row as it is now."""
        return await self.conn.fetchrow(
            "SELECT id, status, version, size_bytes, sha256, object_key, updated_at"
            " FROM upload.documents WHERE id = $1",
            uuid.UUID(document_id),
        )


#: A re-check's answer: the compensation to emit (``None``: skip the finding) and why.
Verdict = tuple[BaseModel | None, str]


@dataclass(frozen=True, slots=True)
class Check(Generic[T]):
    """One class of finding: what it streams, how it classifies, how it is re-checked, what it emits."""

    name: str
    source: Source[T]
    classify: Callable[[T, Limits], Finding | None]
    compensation: type[BaseModel] | None = None
    recheck: Callable[[Recheck, StoredFinding], Awaitable[Verdict]] | None = None
    #: Runs only when asked (named, or content verification requested), never in "all checks".
    on_request: bool = False

    def __post_init__(self) -> None:
        if (self.compensation is None) != (self.recheck is None):
            raise ValueError(f"check {self.name}: a compensation needs a re-check, and a re-check a compensation")

    @property
    def acts(self) -> bool:
        """Whether ``apply`` emits a compensation for this check's findings (else they are reported only)."""
        return self.compensation is not None


def unchanged(row: asyncpg.Record | None, details: dict[str, Any]) -> bool:
    """The document row is the one the scan saw (same status, version and last change)."""
    return (
        row is not None
        and row["status"] == details["status"]
        and row["version"] == details["version"]
        and row["updated_at"] == datetime.fromisoformat(details["updated_at"])
    )
