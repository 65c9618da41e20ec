"""``ghost_index_entry``: an index entry whose document is not ``stored`` (docs/reconciler.md).

Streams keyset pages of indexed entries joined with their documents. An entry of a
document changed within ``DEPOT_RECONCILE_INDEX_LAG`` is not a finding yet (the indexer
may not have applied the change). Apply re-checks that the entry is still indexed and
its document still not stored, then emits ``compensation.ghost_index_entry``: the
indexer removes the entry.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from depot_common.events import GhostIndexEntry
from depot_reconciler.checks.base import Check, Finding, Limits, Reads, Recheck, Source, Verdict
from depot_reconciler.checks.streams import NIL, index_rows, keyset

if TYPE_CHECKING:
    from depot_reconciler.repository import StoredFinding

NAME = "ghost_index_entry"


@dataclass(frozen=True, slots=True)
class GhostCandidate:
    """An ``indexed`` entry whose document is absent or not ``stored``."""

    document_id: uuid.UUID
    entry_version: int
    indexed_at: datetime
    document_status: str | None
    document_updated_at: datetime | None


async def list_ghosts(reads: Reads) -> AsyncIterator[GhostCandidate]:
    """Indexed entries whose document is absent or not stored."""
    query = (
        "SELECT e.document_id, e.version AS entry_version, e.indexed_at, d.status AS document_status,"
        " d.updated_at AS document_updated_at"
        " FROM search.index_entries e LEFT JOIN upload.documents d ON d.id = e.document_id"
        " WHERE e.status = 'indexed' AND e.document_id > $1 AND (d.id IS NULL OR d.status <> 'stored')"
        " ORDER BY e.document_id LIMIT $2"
    )
    async for row in keyset(reads.pool, query, key="document_id", start=NIL, page_size=reads.page_size):
        yield GhostCandidate(**row)


def classify(candidate: GhostCandidate, limits: Limits) -> Finding | None:
    changed_at = candidate.document_updated_at or candidate.indexed_at
    if changed_at > limits.now - limits.index_lag:
        return None
    return Finding(
        NAME,
        str(candidate.document_id),
        {
            "document_id": str(candidate.document_id),
            "entry_version": candidate.entry_version,
            "document_status": candidate.document_status,
        },
    )


async def recheck(at: Recheck, finding: StoredFinding) -> Verdict:
    document_id = uuid.UUID(finding.subject)
    entry = await at.conn.fetchval("SELECT status FROM search.index_entries WHERE document_id = $1", document_id)
    if entry != "indexed":
        return None, "index entry no longer indexed"
    row = await at.document(finding.subject)
    if row is not None and row["status"] == "stored":
        return None, "document now stored"
    return GhostIndexEntry(document_id=document_id, run_id=finding.run_id), "document is not stored"


INDEXED_ENTRIES: Source[GhostCandidate] = Source("ghost_index_entries", list_ghosts, index_rows)
CHECK = Check(NAME, INDEXED_ENTRIES, classify, GhostIndexEntry, recheck)
