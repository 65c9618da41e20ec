"""upload-api's compensation worker repairs what the reconciler planned, re-checking when it acts."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from pydantic import BaseModel

from depot_common.events import CloudEvent, ContentMismatch, MissingBlob, OrphanObject, RawCloudEvent, StaleUpload
from depot_common.lifecycle import background_task
from depot_reconciler import cli
from depot_reconciler.bootstrap import run_relay
from depot_reconciler.settings import ReconcilerSettings
from depot_upload.bootstrap import compensation_consumer
from depot_upload.compensations.service import Compensations
from depot_upload.compensations.storage import S3CompensationObjects
from depot_upload.postgres import PostgresUnitOfWork
from depot_upload.settings import UploadSettings
from tests.conftest import patched_environ
from tests.integration.test_reconciler_plan import DAY, World, reconcile_world

RETENTION = 3600
CHECKS = ("orphan_object", "missing_blob", "stale_upload")


@pytest.fixture
async def world(postgres_admin_url: str, make_settings: Callable[..., Any]) -> AsyncIterator[World]:
    async with reconcile_world(postgres_admin_url, make_settings) as created:
        yield created


def worker(world: World) -> Compensations:
    return Compensations(
        partial(PostgresUnitOfWork, world.pool),
        S3CompensationObjects(world.s3, bucket=world.bucket),
        quarantine_retention=RETENTION,
        upload_ttl=3600,
    )


async def deliver(world: World, type_: str, data: BaseModel) -> None:
    """Apply one compensation as the EventConsumer does: inbox row and handler in one transaction."""
    event = CloudEvent[Any](source="depot/reconciler", type=type_, subject="s", data=data)
    _, handler = worker(world).handlers()[type_]
    async with world.pool.acquire() as conn, conn.transaction():
        await conn.execute("INSERT INTO upload.processed_events (event_id) VALUES ($1)", event.id)
        await handler(conn, event)


async def body_of(world: World, key: str) -> bytes | None:
    try:
        response = await world.s3.get_object(Bucket=world.bucket, Key=key)
    except world.s3.exceptions.NoSuchKey:
        return None
    async with response["Body"] as body:
        data: bytes = await body.read()
        return data


async def status_version(world: World, document_id: uuid.UUID) -> tuple[str, int]:
    row = await world.pool.fetchrow("SELECT status, version FROM upload.documents WHERE id = $1", document_id)
    assert row is not None
    return row["status"], row["version"]


async def outbox(world: World) -> list[tuple[str, dict[str, Any]]]:
    rows = await world.pool.fetch("SELECT value FROM upload.outbox ORDER BY id")
    events = [RawCloudEvent.model_validate(row["value"]) for row in rows]
    return [(event.type, event.data) for event in events]


async def real_document(world: World, status: str, body: bytes, *, age: int = DAY) -> uuid.UUID:
    """A document whose recorded size and SHA-256 are those of ``body`` (no object written)."""
    document_id = await world.document(status, size=len(body) if status == "stored" else None, age=age)
    sha = hashlib.sha256(body).hexdigest() if status == "stored" else None
    await world.pool.execute("UPDATE upload.documents SET sha256 = $2 WHERE id = $1", document_id, sha)
    return document_id


async def presigned_session(
    world: World, document_id: uuid.UUID, body: bytes, *, multipart_upload_id: str | None = None
) -> None:
    """A presigned session declaring ``body``, expired an hour ago."""
    await world.pool.execute(
        "INSERT INTO upload.upload_sessions (document_id, owner_id, size_bytes, sha256, part_size,"
        " multipart_upload_id, expires_at) VALUES ($1, 'alice', $2, $3, 5242880, $4, now() - interval '1 hour')",
        document_id,
        len(body),
        hashlib.sha256(body).hexdigest(),
        multipart_upload_id,
    )


def orphan(key: str, size: int = 10) -> OrphanObject:
    return OrphanObject(object_key=key, size_bytes=size, last_modified=datetime.now(UTC), run_id=uuid.uuid4())


async def test_orphan_object_is_copied_to_quarantine_then_deleted(world: World) -> None:
    """An object without a live document moves to quarantine/<key> with its bytes, and the move is recorded."""
    key = f"documents/{uuid.uuid4()}"
    await world.put_object(key, b"orphan bytes")
    await deliver(world, "compensation.orphan_object", orphan(key))
    assert await body_of(world, key) is None
    assert await body_of(world, f"quarantine/{key}") == b"orphan bytes"
    row = await world.pool.fetchrow("SELECT object_key, size_bytes, purge_after FROM upload.quarantine")
    assert row is not None
    assert (row["object_key"], row["size_bytes"]) == (key, 12)
    assert row["purge_after"] > datetime.now(UTC) + timedelta(seconds=RETENTION - 60)


async def test_orphan_object_claimed_by_a_live_document_since_the_plan_is_left_alone(world: World) -> None:
    """An object a pending document claims by the time the compensation runs is neither copied nor deleted."""
    document_id = await world.document("pending", size=None, age=0)
    key = f"documents/{document_id}"
    await world.put_object(key, b"in flight")
    await deliver(world, "compensation.orphan_object", orphan(key))
    assert await body_of(world, key) == b"in flight"
    assert await body_of(world, f"quarantine/{key}") is None
    assert await world.pool.fetchval("SELECT count(*) FROM upload.quarantine") == 0


async def test_missing_blob_marks_the_document_failed_with_its_event(world: World) -> None:
    """A stored document whose object is absent or of the wrong size becomes failed (version+1) with document.failed."""
    absent = await real_document(world, "stored", b"9876543210")
    resized = await real_document(world, "stored", b"0123456789")
    await world.put_object(f"documents/{resized}", b"0123")
    for document_id in (absent, resized):
        data = MissingBlob(document_id=document_id, object_key=f"documents/{document_id}", run_id=uuid.uuid4())
        await deliver(world, "compensation.missing_blob", data)
        assert await status_version(world, document_id) == ("failed", 2)
    assert await outbox(world) == [
        ("document.failed", {"document_id": str(absent), "owner_id": "alice", "reason": "blob_lost"}),
        ("document.failed", {"document_id": str(resized), "owner_id": "alice", "reason": "blob_lost"}),
    ]
    assert await body_of(world, f"documents/{resized}") is None
    assert await body_of(world, f"quarantine/documents/{resized}") == b"0123"


async def test_missing_blob_that_reappeared_or_was_deleted_since_the_plan_is_skipped(world: World) -> None:
    """A document whose object is back at its size, or that its owner deleted, is left as it is."""
    restored = await real_document(world, "stored", b"0123456789")
    await world.put_object(f"documents/{restored}", b"0123456789")
    deleted = await world.document("deleted", version=2)
    for document_id in (restored, deleted):
        data = MissingBlob(document_id=document_id, object_key=f"documents/{document_id}", run_id=uuid.uuid4())
        await deliver(world, "compensation.missing_blob", data)
    assert await status_version(world, restored) == ("stored", 1)
    assert await status_version(world, deleted) == ("deleted", 2)
    assert await body_of(world, f"documents/{restored}") == b"0123456789"
    assert await outbox(world) == []


async def test_content_mismatch_quarantines_the_object_and_fails_the_document_once(world: World) -> None:
    """Bytes replaced behind Depot's back (same size): the object moves to quarantine/, the document becomes
    failed (content_mismatch) with document.failed in one commit; a redelivery, an intact document: no change."""
    recorded, tampered = b"the recorded bytes", b"the tampered bytes"
    document_id = await real_document(world, "stored", recorded)
    key = f"documents/{document_id}"
    await world.put_object(key, tampered)
    intact = await real_document(world, "stored", b"intact bytes")
    await world.put_object(f"documents/{intact}", b"intact bytes")
    for target in (document_id, document_id, intact):
        data = ContentMismatch(
            document_id=target,
            object_key=f"documents/{target}",
            expected_sha256=hashlib.sha256(recorded).hexdigest(),
            actual_sha256=hashlib.sha256(tampered).hexdigest(),
            run_id=uuid.uuid4(),
        )
        await deliver(world, "compensation.content_mismatch", data)
    assert await status_version(world, document_id) == ("failed", 2)
    assert await outbox(world) == [
        ("document.failed", {"document_id": str(document_id), "owner_id": "alice", "reason": "content_mismatch"})
    ]
    assert await body_of(world, key) is None
    assert await body_of(world, f"quarantine/{key}") == tampered
    assert await world.pool.fetchval("SELECT object_key FROM upload.quarantine") == key
    assert await status_version(world, intact) == ("stored", 1)
    assert await body_of(world, f"documents/{intact}") == b"intact bytes"


async def test_stale_presigned_upload_whose_bytes_match_is_finalized(world: World) -> None:
    """An expired presigned upload whose object matches the declared size and SHA-256 becomes stored."""
    body = secrets.token_bytes(100)
    document_id = await world.document("pending", size=None)
    await presigned_session(world, document_id, body)
    await world.put_object(f"documents/{document_id}", body)
    await deliver(world, "compensation.stale_upload", StaleUpload(document_id=document_id, run_id=uuid.uuid4()))
    row = await world.pool.fetchrow(
        "SELECT status, size_bytes, sha256 FROM upload.documents WHERE id = $1", document_id
    )
    assert row is not None
    assert dict(row) == {"status": "stored", "size_bytes": 100, "sha256": hashlib.sha256(body).hexdigest()}
    [(event_type, data)] = await outbox(world)
    assert (event_type, data["document_id"], data["version"]) == ("document.stored", str(document_id), 2)
    session = await world.pool.fetchval("SELECT status FROM upload.upload_sessions WHERE document_id = $1", document_id)
    assert session == "completed"
    assert await body_of(world, f"documents/{document_id}") == body


async def test_stale_uploads_without_verifiable_bytes_fail_and_lose_their_bytes(world: World) -> None:
    """A sync upload (nothing declared) and a mismatching multipart upload fail (upload_expired); bytes and parts go."""
    sync = await world.document("pending", size=None)
    await world.put_object(f"documents/{sync}", b"partial")
    presigned = await world.document("pending", size=None)
    key = f"documents/{presigned}"
    multipart = await world.s3.create_multipart_upload(Bucket=world.bucket, Key=key)
    await presigned_session(world, presigned, b"declared bytes", multipart_upload_id=multipart["UploadId"])
    await world.put_object(key, b"other bytes")
    for document_id in (sync, presigned):
        await deliver(world, "compensation.stale_upload", StaleUpload(document_id=document_id, run_id=uuid.uuid4()))
        assert await status_version(world, document_id) == ("failed", 2)
        assert await body_of(world, f"documents/{document_id}") is None
    assert [data["reason"] for _, data in await outbox(world)] == ["upload_expired", "upload_expired"]
    uploads = await world.s3.list_multipart_uploads(Bucket=world.bucket)
    assert uploads.get("Uploads", []) == []


async def test_stale_upload_completed_or_still_in_time_is_skipped(world: World) -> None:
    """An upload completed since the plan, or not yet past its TTL, keeps its row and its bytes."""
    completed = await world.document("stored")
    await world.put_object(f"documents/{completed}")
    young = await world.document("pending", size=None, age=60)
    await world.put_object(f"documents/{young}")
    for document_id in (completed, young):
        await deliver(world, "compensation.stale_upload", StaleUpload(document_id=document_id, run_id=uuid.uuid4()))
        assert await body_of(world, f"documents/{document_id}") == b"0123456789"
    assert await status_version(world, completed) == ("stored", 1)
    assert await status_version(world, young) == ("pending", 1)
    assert await outbox(world) == []


async def test_quarantine_is_purged_only_after_the_retention(world: World) -> None:
    """A quarantined object survives a purge within the retention and is deleted (and stamped) after it."""
    key = f"documents/{uuid.uuid4()}"
    await world.put_object(key)
    await deliver(world, "compensation.orphan_object", orphan(key))
    assert await worker(world).purge_quarantine() == 0
    assert await body_of(world, f"quarantine/{key}") == b"0123456789"
    later = datetime.now(UTC) + timedelta(seconds=RETENTION + 60)
    assert await worker(world).purge_quarantine(now=later) == 1
    assert await body_of(world, f"quarantine/{key}") is None
    assert await world.pool.fetchval("SELECT purged_at IS NOT NULL FROM upload.quarantine") is True


def test_reconciler_cli_has_run_and_relay() -> None:
    """``depot-reconciler`` parses both ``run --apply`` and ``relay``."""
    parser = cli.build_parser()
    assert parser.parse_args(["relay"]).command == "relay"
    args = parser.parse_args(["run", "--apply", "--check", "orphan_object"])
    assert (args.command, args.apply, args.check) == ("run", True, ["orphan_object"])


async def run_cli(env: dict[str, str], *argv: str) -> int:
    with patched_environ(env):
        return await asyncio.to_thread(cli.main, ["run", *argv])


async def wait_drained(world: World, expected: int) -> None:
    """Wait until the worker's inbox holds ``expected`` events."""
    for _ in range(400):
        if await world.pool.fetchval("SELECT count(*) FROM upload.processed_events") >= expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the compensations were not processed")


async def assert_invariants(world: World, settings: ReconcilerSettings) -> None:
    """Invariants 1-3 of docs/invariants.md over the world's rows and bucket."""
    objects = S3CompensationObjects(world.s3, bucket=world.bucket)
    stored = await world.pool.fetch(
        "SELECT object_key, size_bytes, sha256 FROM upload.documents WHERE status = 'stored'"
    )
    for row in stored:
        blob = await objects.measure(row["object_key"])
        assert blob is not None
        assert (blob.size_bytes, blob.sha256) == (row["size_bytes"], row["sha256"])
    listing = await world.s3.list_objects_v2(Bucket=world.bucket, Prefix="documents/")
    assert {item["Key"] for item in listing.get("Contents", [])} == {row["object_key"] for row in stored}
    overdue = await world.pool.fetchval(
        "SELECT count(*) FROM upload.documents WHERE status = 'pending'"
        " AND created_at < now() - make_interval(secs => $1)",
        float(settings.upload_ttl + settings.reconcile_grace),
    )
    assert overdue == 0


async def test_reconcile_apply_relay_and_worker_restore_the_invariants(
    world: World, stack_env: dict[str, str], make_settings: Callable[..., Any]
) -> None:
    """One inconsistency of each upload-owned class is found, compensated end to end, and gone on a second run."""
    good = secrets.token_bytes(64)
    consistent = await real_document(world, "stored", good)
    await world.put_object(f"documents/{consistent}", good)
    await world.put_object(f"documents/{uuid.uuid4()}")  # orphan_object
    await real_document(world, "stored", b"lost bytes")  # missing_blob: absent
    resized = await real_document(world, "stored", b"0123456789")  # missing_blob: wrong size
    await world.put_object(f"documents/{resized}", b"012")
    sync = await world.document("pending", size=None, age=2 * DAY)  # stale_upload: sync, partial bytes
    await world.put_object(f"documents/{sync}", b"part")
    presigned = await world.document("pending", size=None, age=2 * DAY)  # stale_upload: bytes match
    body = secrets.token_bytes(200)
    await presigned_session(world, presigned, body)
    await world.put_object(f"documents/{presigned}", body)

    group = f"depot-upload-compensations-{secrets.token_hex(4)}"
    env = {
        **stack_env,
        "DEPOT_DATABASE_URL": world.database_url,
        "DEPOT_S3_BUCKET": world.bucket,
        "DEPOT_RECONCILE_GRACE": "0",
    }
    checks = [arg for check in CHECKS for arg in ("--check", check)]
    assert await run_cli(env, *checks) == cli.EXIT_FINDINGS
    assert await run_cli(env, "--apply", "--force", *checks) == cli.EXIT_FINDINGS
    emitted = await world.pool.fetchval("SELECT count(*) FROM reconcile.outbox")
    assert emitted == 5

    reconciler_settings = world.settings(reconcile_grace=0, relay_poll_interval=1)
    upload_settings: UploadSettings = make_settings(
        UploadSettings,
        database_url=world.database_url,
        s3_bucket=world.bucket,
        compensations_group=group,
        consumer_session_timeout=2,
    )
    async with (
        background_task(run_relay(reconciler_settings)),
        compensation_consumer(upload_settings) as (events, _),
        background_task(events.run()),
    ):
        await wait_drained(world, emitted)

    assert await run_cli(env, *checks) == cli.EXIT_CONSISTENT
    assert await status_version(world, presigned) == ("stored", 2)
    assert await status_version(world, sync) == ("failed", 2)
    assert await status_version(world, resized) == ("failed", 2)
    await assert_invariants(world, reconciler_settings)
