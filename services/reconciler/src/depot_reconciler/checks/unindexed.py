"""``unindexed``: a ``stored`` document absent from the search index, or at an older version (docs/reconciler.md).

Streams keyset pages of stored documents joined with their index entries. A document
changed within ``DEPOT_RECONCILE_INDEX_LAG`` is not a finding yet (the indexer may not
have caught up). Apply re-checks that the row is the one the scan saw and still not
indexed at its version, then emits ``compensation.reindex``: the indexer indexes it again.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from depot_common.events import Reindex
from depot_reconciler.checks.base import Check, Finding, Limits, Reads, Recheck, Source, Verdict, unchanged
from depot_reconciler.checks.streams import NIL, index_rows, keyset

if TYPE_CHECKING:
    from depot_reconciler.repository import StoredFinding

NAME = "unindexed"


@dataclass(frozen=True, slots=True)
class UnindexedCandidate:
    """A ``stored`` document whose index entry is absent, removed, or at an older version."""

    document_id: uuid.UUID
    version: int
    updated_at: datetime
    entry_status: str | None
    entry_version: int | None


async def list_unindexed(reads: Reads) -> AsyncIterator[UnindexedCandidate]:
    """Stored documents absent from ``search.index_entries``, removed there, or indexed at an older version."""
    query = (
        "SELECT d.id AS document_id, d.version, d.updated_at, e.status AS entry_status, e.version AS entry_version"
        " FROM upload.documents d LEFT JOIN search.index_entries e ON e.document_id = d.id"
        " WHERE d.status = 'stored' AND d.id > $1"
        "   AND (e.document_id IS NULL OR e.status <> 'indexed' OR e.version < d.version)"
        " ORDER BY d.id LIMIT $2"
    )
    async for row in keyset(reads.pool, query, key="document_id", start=NIL, page_size=reads.page_size):
        yield UnindexedCandidate(**row)


def classify(candidate: UnindexedCandidate, limits: Limits) -> Finding | None:
    if candidate.updated_at > limits.now - limits.index_lag:
        return None
    return Finding(
        NAME,
        str(candidate.document_id),
        {
            "document_id": str(candidate.document_id),
            "status": "stored",
            "version": candidate.version,
            "updated_at": candidate.updated_at.isoformat(),
            "entry_status": candidate.entry_status,
            "entry_version": candidate.entry_version,
        },
    )


async def recheck(at: Recheck, finding: StoredFinding) -> Verdict:
    row = await at.document(finding.subject)
    if row is None or not unchanged(row, finding.details):
        return None, "document changed since the scan"
    entry = await at.conn.fetchrow("SELECT status, version FROM search.index_entries WHERE document_id = $1", row["id"])
    if entry is not None and entry["status"] == "indexed" and entry["version"] >= row["version"]:
        return None, "indexed now"
    return Reindex(document_id=row["id"], run_id=finding.run_id), "stored document missing from the index"


UNINDEXED_DOCUMENTS: Source[UnindexedCandidate] = Source("unindexed_documents", list_unindexed, index_rows)
CHECK = Check(NAME, UNINDEXED_DOCUMENTS, classify, Reindex, recheck)
