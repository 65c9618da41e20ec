"""Read-only view of upload-api's documents, for the compensations the indexer executes.

``compensation.reindex`` and ``compensation.ghost_index_entry`` carry only a document id:
the indexer re-reads the document's current state (``upload.documents``, read-only, the
same access the reconciler has) at the moment it acts, so it never acts on a stale plan.
"""

from __future__ import annotations

import uuid

from depot_common.db import Connection
from depot_common.events import DocumentStored


class UploadDocumentsView:
    async def current(self, conn: Connection, document_id: uuid.UUID) -> DocumentStored | None:
        row = await conn.fetchrow(
            "SELECT id, owner_id, filename, content_type, size_bytes, sha256, object_key, version"
            " FROM upload.documents WHERE id = $1 AND status = 'stored'",
            document_id,
        )
        if row is None:
            return None
        return DocumentStored(
            document_id=row["id"],
            owner_id=row["owner_id"],
            filename=row["filename"],
            content_type=row["content_type"],
            size_bytes=row["size_bytes"],
            sha256=row["sha256"],
            object_key=row["object_key"],
            version=row["version"],
        )
