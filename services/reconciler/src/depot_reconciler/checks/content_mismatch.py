"""``content_mismatch``: a ``stored`` document whose object's bytes no longer hash to its SHA-256 (docs/reconciler.md).

Tampering or bit rot that keeps the size: ``missing_blob`` compares sizes only. Reading
every byte is expensive, so this check runs only when asked (``on_request``): with
``--verify-content`` it reads back every ``stored`` document, with ``--verify-sample F``
a random share F of them (:mod:`depot_reconciler.verification`), paced by
``DEPOT_RECONCILE_VERIFY_BYTES_PER_S``, each object streamed through SHA-256 in bounded
chunks. The stored documents are keyset-paged by id; an object absent or of another
size is ``missing_blob``'s finding, not read here; a document changed after the run
started is left to the next run. Apply re-checks that the row is the one the scan saw
and hashes the object again, then emits ``compensation.content_mismatch``: upload-api
quarantines the object and marks the document ``failed`` (``content_mismatch``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from depot_common.events import ContentMismatch
from depot_reconciler.checks.base import Check, Finding, Limits, Reads, Recheck, Source, Verdict, unchanged
from depot_reconciler.checks.streams import NIL, keyset
from depot_reconciler.verification import Hashed, Pacer, hash_object

if TYPE_CHECKING:
    from depot_reconciler.repository import StoredFinding
    from depot_reconciler.scan import ScanProgress

NAME = "content_mismatch"


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """The columns of a ``stored`` document the check needs."""

    id: uuid.UUID
    object_key: str
    size_bytes: int
    sha256: str
    status: str
    version: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ReadBack:
    """A sampled document and its object as read back (``None``: no object)."""

    document: StoredDocument
    object: Hashed | None


_STORED = (
    "SELECT id, object_key, size_bytes, sha256, status, version, updated_at FROM upload.documents"
    " WHERE status = 'stored' AND id > $1 ORDER BY id LIMIT $2"
)


async def read_back(reads: Reads) -> AsyncIterator[ReadBack]:
    """The sampled ``stored`` documents, each with its object hashed, one page of rows at a time."""
    verification = reads.verification
    if verification is None:  # not asked: read nothing
        return
    picked = verification.sampler()
    pacer = Pacer(verification.bytes_per_s)
    async for row in keyset(reads.pool, _STORED, key="id", start=NIL, page_size=reads.page_size):
        if not picked():
            continue
        document = StoredDocument(**row)
        hashed = await hash_object(
            reads.s3, reads.bucket, document.object_key, expected_size=document.size_bytes, pacer=pacer
        )
        yield ReadBack(document, hashed)


def _tally(progress: ScanProgress, item: ReadBack) -> None:
    progress.verified_documents += 1
    if item.object is not None and item.object.sha256 is not None:
        progress.verified_bytes += item.object.size


def classify(item: ReadBack, limits: Limits) -> Finding | None:
    doc, obj = item.document, item.object
    if doc.updated_at > limits.now or obj is None or obj.sha256 is None or obj.sha256 == doc.sha256:
        return None
    details = {
        "document_id": str(doc.id),
        "status": doc.status,
        "version": doc.version,
        "updated_at": doc.updated_at.isoformat(),
        "object_key": doc.object_key,
        "size_bytes": doc.size_bytes,
        "expected_sha256": doc.sha256,
        "actual_sha256": obj.sha256,
    }
    return Finding(NAME, str(doc.id), details)


async def recheck(at: Recheck, finding: StoredFinding) -> Verdict:
    details = finding.details
    row = await at.document(finding.subject)
    if row is None or not unchanged(row, details):
        return None, "document changed since the scan"
    hashed = await hash_object(at.s3, at.bucket, row["object_key"], expected_size=row["size_bytes"])
    if hashed is None or hashed.sha256 is None:
        return None, "object absent or of another size now (missing_blob)"
    if hashed.sha256 == row["sha256"]:
        return None, "object hashes to its recorded SHA-256 now"
    compensation = ContentMismatch(
        document_id=row["id"],
        object_key=row["object_key"],
        expected_sha256=row["sha256"],
        actual_sha256=hashed.sha256,
        run_id=finding.run_id,
    )
    return compensation, f"object hashes to {hashed.sha256}, not the recorded {row['sha256']}"


SAMPLED_STORED_DOCUMENTS: Source[ReadBack] = Source("sampled_stored_documents", read_back, _tally)
CHECK = Check(NAME, SAMPLED_STORED_DOCUMENTS, classify, ContentMismatch, recheck, on_request=True)
