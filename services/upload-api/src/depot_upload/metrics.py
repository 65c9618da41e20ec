"""Prometheus metrics of the upload API."""

from __future__ import annotations

from prometheus_client import Counter

UPLOADS = Counter("depot_uploads_total", "Upload attempts by outcome", ["outcome"])
BYTES_STORED = Counter("depot_upload_bytes_stored_total", "Bytes of documents stored")
DELETES = Counter("depot_documents_deleted_total", "Documents deleted by their owners")
CONTENT_MISMATCHES = Counter(
    "depot_download_content_mismatch_total", "Downloads aborted: the stored bytes differ from the recorded SHA-256"
)
