"""``stale_upload``: a ``pending`` document older than its upload TTL plus grace (docs/reconciler.md).

Streams the S3 listing merged with the documents. Apply re-checks that the row is the
one the scan saw, then emits ``compensation.stale_upload``: upload-api finalizes the
upload if its bytes match what was declared, and fails it otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from depot_common.events import StaleUpload
from depot_reconciler.checks.base import Check, Finding, Limits, Recheck, Verdict, unchanged
from depot_reconciler.checks.streams import OBJECTS_AND_DOCUMENTS, Pair

if TYPE_CHECKING:
    from depot_reconciler.repository import StoredFinding

NAME = "stale_upload"


def classify(pair: Pair, limits: Limits) -> Finding | None:
    _, doc = pair
    if doc is None or doc.status != "pending" or doc.created_at > limits.now - limits.upload_ttl - limits.grace:
        return None
    details = {
        "document_id": str(doc.id),
        "status": doc.status,
        "version": doc.version,
        "updated_at": doc.updated_at.isoformat(),
        "created_at": doc.created_at.isoformat(),
    }
    return Finding(NAME, str(doc.id), details)


async def recheck(at: Recheck, finding: StoredFinding) -> Verdict:
    row = await at.document(finding.subject)
    if row is None or not unchanged(row, finding.details):
        return None, "document changed since the scan"
    return StaleUpload(document_id=row["id"], run_id=finding.run_id), "pending past upload TTL plus grace"


CHECK = Check(NAME, OBJECTS_AND_DOCUMENTS, classify, StaleUpload, recheck)
