"""docs/invariants.md's invariants, measured over one database and bucket, as figures a test (or a soak) asserts on.

``measure_invariants`` reads the world as it is (it repairs nothing) and returns an
:class:`InvariantReport`: counts of what it looked at and one line per violation, numbered
like docs/invariants.md. Invariant 6 runs a dry reconcile (a plan is persisted, nothing is applied);
invariant 7 is measured from S3's list of in-progress multipart uploads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from depot_reconciler.plan import make_plan, run_lock
from depot_reconciler.settings import ReconcilerSettings

PREFIX = "documents/"


@dataclass
class InvariantReport:
    """What was measured; ``violations`` is empty when every measured invariant holds."""

    stored: int = 0
    objects: int = 0
    pending: int = 0
    index_entries: int = 0
    acknowledged: int = 0
    multipart_in_progress: int = 0
    second_run_findings: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def by_invariant(self) -> dict[int, int]:
        """Violations counted per invariant number."""
        counts: dict[int, int] = {}
        for line in self.violations:
            number = int(line.split(":", 1)[0])
            counts[number] = counts.get(number, 0) + 1
        return counts


async def _objects(s3: Any, bucket: str) -> dict[str, int]:
    sizes: dict[str, int] = {}
    paginator = s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=PREFIX):
        sizes.update({item["Key"]: int(item["Size"]) for item in page.get("Contents", [])})
    return sizes


async def _sha256(s3: Any, bucket: str, key: str) -> str:
    response = await s3.get_object(Bucket=bucket, Key=key)
    digest = hashlib.sha256()
    body = response["Body"]
    try:
        async for chunk in body.iter_chunks(1024 * 1024):
            digest.update(chunk)
    finally:
        body.close()
    return digest.hexdigest()


async def measure_invariants(
    pool: asyncpg.Pool,
    s3: Any,
    settings: ReconcilerSettings,
    *,
    acknowledged: Mapping[str, str] | None = None,
    invariants: frozenset[int] = frozenset({1, 2, 3, 4, 5, 6, 7}),
) -> InvariantReport:
    """Measure the ``invariants`` (docs/invariants.md) over ``settings``' database and bucket.

    ``acknowledged`` maps each document id a client received a 201/200 for (and did not
    delete) to the SHA-256 it was acknowledged with (invariant 5).
    """
    report = InvariantReport()
    bucket = settings.s3_bucket
    overdue = settings.upload_ttl + settings.reconcile_grace
    documents = await pool.fetch("SELECT id, object_key, size_bytes, sha256, status, version FROM upload.documents")
    stored = {str(row["id"]): row for row in documents if row["status"] == "stored"}
    objects = await _objects(s3, bucket)
    report.stored, report.objects = len(stored), len(objects)
    report.pending = sum(1 for row in documents if row["status"] == "pending")

    if 1 in invariants:
        for document_id, row in stored.items():
            size = objects.get(row["object_key"])
            if size is None:
                report.violations.append(f"1: stored {document_id} has no object")
            elif size != row["size_bytes"]:
                report.violations.append(f"1: stored {document_id} has {size} bytes, not {row['size_bytes']}")
            elif await _sha256(s3, bucket, row["object_key"]) != row["sha256"]:
                report.violations.append(f"1: stored {document_id}'s bytes do not hash to its sha256")
    if 2 in invariants:
        owned = {row["object_key"] for row in stored.values()}
        unowned = sorted(key for key in objects if key not in owned)
        report.violations += [f"2: object {key} belongs to no stored document" for key in unowned]
    if 3 in invariants:
        late = await pool.fetch(
            "SELECT id FROM upload.documents WHERE status = 'pending'"
            " AND created_at < now() - make_interval(secs => $1)",
            float(overdue),
        )
        report.violations += [f"3: {row['id']} is pending past TTL + grace" for row in late]
    if 4 in invariants:
        entries = await pool.fetch("SELECT document_id, version FROM search.index_entries WHERE status = 'indexed'")
        report.index_entries = len(entries)
        searchable = {str(row["document_id"]): row["version"] for row in entries}
        for document_id, row in stored.items():
            if searchable.get(document_id) != row["version"]:
                found = searchable.get(document_id)
                report.violations.append(f"4: stored {document_id} v{row['version']} is searchable at {found}")
        report.violations += [f"4: {doc} is searchable but not stored" for doc in searchable if doc not in stored]
    if 5 in invariants:
        report.acknowledged = len(acknowledged or {})
        for document_id, sha256 in (acknowledged or {}).items():
            row = stored.get(document_id)
            if row is None or row["sha256"] != sha256:
                report.violations.append(f"5: acknowledged {document_id} is lost")
    if 7 in invariants:
        listed = await s3.list_multipart_uploads(Bucket=bucket, Prefix=PREFIX)
        uploads = listed.get("Uploads", [])
        report.multipart_in_progress = len(uploads)
        live = {
            row["multipart_upload_id"]
            for row in await pool.fetch(
                "SELECT multipart_upload_id FROM upload.upload_sessions s"
                " JOIN upload.documents d ON d.id = s.document_id"
                " WHERE s.status = 'pending' AND d.status = 'pending' AND s.multipart_upload_id IS NOT NULL"
            )
        }
        cutoff = datetime.now(UTC) - timedelta(seconds=overdue)
        report.violations += [
            f"7: multipart upload {upload['Key']} ({upload['UploadId']}) is abandoned"
            for upload in uploads
            if upload["Initiated"] < cutoff and upload["UploadId"] not in live
        ]
    if 6 in invariants:
        async with run_lock(pool) as conn:
            plan = await make_plan(conn, pool, s3, settings)
        report.second_run_findings = {name: n for name, n in plan.findings.items() if n}
        report.violations += [f"6: a dry run finds {n} {name}" for name, n in report.second_run_findings.items()]
    return report
