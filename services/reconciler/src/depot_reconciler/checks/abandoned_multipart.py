"""``abandoned_multipart``: an in-progress S3 multipart upload that no live upload claims (docs/reconciler.md).

Its repair keeps invariant 7 of docs/invariants.md.

Streams the bucket's in-progress multipart uploads under ``documents/`` (one listing page
at a time), each joined with what PostgreSQL knows of it: whether a ``pending`` upload
session records its upload id, and when a ``pending`` document of its key was created.
An upload started longer than the upload TTL plus grace ago is a finding unless a
pending session claims it or a pending document of the key is still within TTL plus
grace (a streamed upload in flight). A key can have several uploads in progress (a client
or SDK retrying CreateMultipartUpload whose answer was lost), so a finding's subject is
``<key>?uploadId=<id>``. Apply re-checks that S3 still has the upload and
that nothing claims it now, then emits ``compensation.abandoned_multipart``: upload-api
aborts it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from depot_common.events import AbandonedMultipart
from depot_reconciler.checks.base import Check, Finding, Limits, Reads, Recheck, Source, Verdict
from depot_reconciler.checks.streams import DOCUMENTS_PREFIX

if TYPE_CHECKING:
    from depot_reconciler.repository import StoredFinding
    from depot_reconciler.scan import ScanProgress

NAME = "abandoned_multipart"


@dataclass(frozen=True, slots=True)
class MultipartUpload:
    """One in-progress multipart upload, and what PostgreSQL knows of it."""

    key: str
    upload_id: str
    initiated: datetime
    session_pending: bool
    document_pending_since: datetime | None


_CLAIMS = (
    "SELECT u.key, u.upload_id,"
    " EXISTS (SELECT 1 FROM upload.upload_sessions s"
    "         WHERE s.multipart_upload_id = u.upload_id AND s.status = 'pending') AS session_pending,"
    " (SELECT max(d.created_at) FROM upload.documents d WHERE d.object_key = u.key AND d.status = 'pending')"
    "   AS document_pending_since"
    " FROM unnest($1::text[], $2::text[]) AS u (key, upload_id)"
)


async def list_multipart_uploads(reads: Reads) -> AsyncIterator[MultipartUpload]:
    """The in-progress multipart uploads under ``documents/``, one listing page (and one query) at a time."""
    paginator = reads.s3.get_paginator("list_multipart_uploads")
    pages = paginator.paginate(
        Bucket=reads.bucket, Prefix=DOCUMENTS_PREFIX, PaginationConfig={"PageSize": min(reads.page_size, 1000)}
    )
    async for page in pages:
        uploads = page.get("Uploads", [])
        if not uploads:
            continue
        rows = await reads.pool.fetch(_CLAIMS, [u["Key"] for u in uploads], [u["UploadId"] for u in uploads])
        claims = {(row["key"], row["upload_id"]): row for row in rows}
        for upload in uploads:
            row = claims[(upload["Key"], upload["UploadId"])]
            yield MultipartUpload(
                key=upload["Key"],
                upload_id=upload["UploadId"],
                initiated=upload["Initiated"],
                session_pending=row["session_pending"],
                document_pending_since=row["document_pending_since"],
            )


def _tally(progress: ScanProgress, _: MultipartUpload) -> None:
    progress.multipart_uploads += 1


def subject(key: str, upload_id: str) -> str:
    """One upload of a key, addressed as S3 does (a key may have several uploads in progress)."""
    return f"{key}?uploadId={upload_id}"


def classify(upload: MultipartUpload, limits: Limits) -> Finding | None:
    cutoff = limits.now - limits.upload_ttl - limits.grace
    if upload.initiated > cutoff or upload.session_pending:
        return None
    if upload.document_pending_since is not None and upload.document_pending_since > cutoff:
        return None
    return Finding(
        NAME,
        subject(upload.key, upload.upload_id),
        {
            "object_key": upload.key,
            "upload_id": upload.upload_id,
            "initiated": upload.initiated.isoformat(),
            "claimed_after": cutoff.isoformat(),
        },
    )


async def recheck(at: Recheck, finding: StoredFinding) -> Verdict:
    key, upload_id = finding.details["object_key"], finding.details["upload_id"]
    listed = await at.s3.list_multipart_uploads(Bucket=at.bucket, Prefix=key)
    if not any(u["Key"] == key and u["UploadId"] == upload_id for u in listed.get("Uploads", [])):
        return None, "multipart upload gone"
    claimed = await at.conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM upload.upload_sessions WHERE multipart_upload_id = $2 AND status = 'pending')"
        " OR EXISTS (SELECT 1 FROM upload.documents WHERE object_key = $1 AND status = 'pending' AND created_at > $3)",
        key,
        upload_id,
        datetime.fromisoformat(finding.details["claimed_after"]),
    )
    if claimed:
        return None, "a live upload claims it now"
    compensation = AbandonedMultipart(
        object_key=key,
        upload_id=upload_id,
        initiated=datetime.fromisoformat(finding.details["initiated"]),
        run_id=finding.run_id,
    )
    return compensation, "in progress past upload TTL plus grace with no live upload"


IN_PROGRESS_UPLOADS: Source[MultipartUpload] = Source("multipart_uploads", list_multipart_uploads, _tally)
CHECK = Check(NAME, IN_PROGRESS_UPLOADS, classify, AbandonedMultipart, recheck)
