"""``orphan_object``: an object under ``documents/`` with no live document (docs/reconciler.md).

Streams the S3 listing merged with the documents. An object is an orphan when no
document names it, or its document is neither ``pending`` nor ``stored``, and it is older
than ``DEPOT_RECONCILE_GRACE`` (a younger one may belong to an upload in flight). Apply
re-checks that the object is still there unchanged (ETag and size) and that no live
document claims it now, then emits ``compensation.orphan_object``: upload-api quarantines it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from depot_common.events import OrphanObject
from depot_reconciler.checks.base import Check, Finding, Limits, Recheck, Verdict
from depot_reconciler.checks.streams import OBJECTS_AND_DOCUMENTS, Pair

if TYPE_CHECKING:
    from depot_reconciler.repository import StoredFinding

NAME = "orphan_object"
#: Document statuses whose object belongs to them (a pending upload may have written it).
LIVE_STATUSES = frozenset({"stored", "pending"})


def classify(pair: Pair, limits: Limits) -> Finding | None:
    obj, doc = pair
    if obj is None or (doc is not None and doc.status in LIVE_STATUSES):
        return None
    if obj.last_modified > limits.now - limits.grace:
        return None
    details: dict[str, Any] = {
        "object_key": obj.key,
        "size_bytes": obj.size,
        "last_modified": obj.last_modified.isoformat(),
        "etag": obj.etag,
    }
    if doc is not None:
        details |= {
            "document_id": str(doc.id),
            "status": doc.status,
            "version": doc.version,
            "updated_at": doc.updated_at.isoformat(),
        }
    return Finding(NAME, obj.key, details)


async def recheck(at: Recheck, finding: StoredFinding) -> Verdict:
    details = finding.details
    head = await at.head(finding.subject)
    if head is None:
        return None, "object gone"
    if str(head.get("ETag", "")).strip('"') != details["etag"] or head["ContentLength"] != details["size_bytes"]:
        return None, "object changed"
    status = await at.conn.fetchval("SELECT status FROM upload.documents WHERE object_key = $1", finding.subject)
    if status in LIVE_STATUSES:
        return None, f"object now belongs to a {status} document"
    compensation = OrphanObject(
        object_key=finding.subject,
        size_bytes=details["size_bytes"],
        last_modified=datetime.fromisoformat(details["last_modified"]),
        run_id=finding.run_id,
    )
    return compensation, "object belongs to no live document"


CHECK = Check(NAME, OBJECTS_AND_DOCUMENTS, classify, OrphanObject, recheck)
