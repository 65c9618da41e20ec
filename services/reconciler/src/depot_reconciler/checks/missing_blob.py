"""``missing_blob``: a ``stored`` document whose object is absent or has the wrong size (docs/reconciler.md).

Streams the S3 listing merged with the documents. A document changed after the run
started is left to the next run (the listing and the pages interleave, so its object may
have been listed before it was written). Apply re-checks that the row is the one the
scan saw and the object is still absent or of the wrong size, then emits
``compensation.missing_blob``: upload-api marks the document ``failed``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from depot_common.events import MissingBlob
from depot_reconciler.checks.base import Check, Finding, Limits, Recheck, Verdict, unchanged
from depot_reconciler.checks.streams import OBJECTS_AND_DOCUMENTS, Pair

if TYPE_CHECKING:
    from depot_reconciler.repository import StoredFinding

NAME = "missing_blob"


def classify(pair: Pair, limits: Limits) -> Finding | None:
    obj, doc = pair
    if doc is None or doc.status != "stored" or doc.updated_at > limits.now:
        return None
    if obj is not None and obj.size == doc.size_bytes:
        return None
    details = {
        "document_id": str(doc.id),
        "status": doc.status,
        "version": doc.version,
        "updated_at": doc.updated_at.isoformat(),
        "object_key": doc.object_key,
        "expected_size": doc.size_bytes,
        "actual_size": None if obj is None else obj.size,
    }
    return Finding(NAME, str(doc.id), details)


async def recheck(at: Recheck, finding: StoredFinding) -> Verdict:
    details = finding.details
    row = await at.document(finding.subject)
    if row is None or not unchanged(row, details):
        return None, "document changed since the scan"
    head = await at.head(details["object_key"])
    if head is not None and head["ContentLength"] == row["size_bytes"]:
        return None, "object present with its recorded size"
    reason = "object absent" if head is None else f"object has {head['ContentLength']} bytes, not {row['size_bytes']}"
    return MissingBlob(document_id=row["id"], object_key=details["object_key"], run_id=finding.run_id), reason


CHECK = Check(NAME, OBJECTS_AND_DOCUMENTS, classify, MissingBlob, recheck)
