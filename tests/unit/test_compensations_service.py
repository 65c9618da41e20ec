"""The compensation worker's handlers over in-memory fakes: each re-checks, then changes state and outbox together."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from depot_common.errors import Unavailable
from depot_common.events import AbandonedMultipart, CloudEvent, ContentMismatch, MissingBlob, OrphanObject, StaleUpload
from depot_upload.compensations.service import Compensations, quarantine_key
from depot_upload.domain import Status, StoredBlob, object_key
from depot_upload.fakes import FakeBucket, FakeDatabase
from depot_upload.presigned.domain import SessionStatus
from depot_upload.presigned.fakes import SessionRow

RETENTION = 3600
TTL = 600
RUN = uuid.uuid4()


@dataclass
class World:
    db: FakeDatabase
    bucket: FakeBucket
    worker: Compensations

    async def document(self, status: Status, data: bytes | None = None, *, owner: str = "alice") -> uuid.UUID:
        """A committed document in ``status``; a stored one records ``data``'s size and SHA-256."""
        document_id = uuid.uuid4()
        async with self.db.uow() as uow:
            document = await uow.documents.insert_pending(
                document_id=document_id,
                owner_id=owner,
                filename="f",
                content_type="x/y",
                object_key=object_key(document_id),
            )
            if status is Status.STORED:
                assert data is not None
                await uow.documents.save(document.store(blob(data)).document)
            elif status is Status.FAILED:
                await uow.documents.save(document.fail("x").document)
            await uow.commit()
        return document_id

    def declare(self, document_id: uuid.UUID, data: bytes, *, expired: bool = True) -> None:
        """A presigned session declaring ``data`` for a pending document."""
        now = self.db.now()
        self.db.tables.sessions[document_id] = SessionRow(
            document_id=document_id,
            owner_id="alice",
            size_bytes=len(data),
            sha256=blob(data).sha256,
            part_size=5 * 1024 * 1024,
            multipart_upload_id=None,
            expires_at=now + timedelta(seconds=-1 if expired else TTL),
            created_at=now,
        )

    def status(self, document_id: uuid.UUID) -> tuple[Status, int]:
        document = self.db.tables.documents[document_id]
        return document.status, document.version

    def events(self) -> list[tuple[str, str | None]]:
        return [(kind, getattr(data, "reason", None)) for kind, data in self.db.events()]

    async def deliver(self, type_: str, data: BaseModel) -> None:
        _, handler = self.worker.handlers()[f"compensation.{type_}"]
        inbox: Any = None  # the consumer's inbox connection: the handlers open their own units of work
        await handler(
            inbox, CloudEvent[Any](source="depot/reconciler", type=f"compensation.{type_}", subject="s", data=data)
        )


def blob(data: bytes) -> StoredBlob:
    return StoredBlob(len(data), hashlib.sha256(data).hexdigest())


@pytest.fixture
def world() -> World:
    db = FakeDatabase()
    bucket = FakeBucket(clock=db.now)
    return World(db, bucket, Compensations(db.uow, bucket, quarantine_retention=RETENTION, upload_ttl=TTL))


def orphan(key: str) -> OrphanObject:
    return OrphanObject(object_key=key, size_bytes=3, last_modified="2026-01-01T00:00:00Z", run_id=RUN)


async def test_an_orphan_is_copied_to_quarantine_recorded_and_only_then_deleted(world: World) -> None:
    """orphan_object: the copy and its record exist, the original is gone; nothing is said on the documents topic."""
    key = object_key(uuid.uuid4())
    world.bucket.put(key, b"abc")
    await world.deliver("orphan_object", orphan(key))
    assert key not in world.bucket.objects
    assert world.bucket.objects[quarantine_key(key)].data == b"abc"
    assert world.db.tables.quarantine[quarantine_key(key)].object_key == key
    assert world.events() == []


async def test_an_orphan_whose_delete_fails_keeps_its_committed_quarantine_record(world: World) -> None:
    """The quarantine record commits before the original is deleted, so a failed delete loses no trace of it."""
    key = object_key(uuid.uuid4())
    world.bucket.put(key, b"abc")
    world.bucket.failing.add("delete")
    with pytest.raises(Unavailable):
        await world.deliver("orphan_object", orphan(key))
    assert quarantine_key(key) in world.db.tables.quarantine
    assert key in world.bucket.objects


async def test_an_object_a_live_document_claims_is_never_quarantined(world: World) -> None:
    """orphan_object re-checks: an object whose pending document appeared since the plan is left alone."""
    document_id = await world.document(Status.PENDING)
    world.bucket.put(object_key(document_id), b"abc")
    await world.deliver("orphan_object", orphan(object_key(document_id)))
    assert object_key(document_id) in world.bucket.objects
    assert world.db.tables.quarantine == {}


async def test_missing_blob_fails_the_document_with_its_event(world: World) -> None:
    """A stored document whose object is absent becomes failed (version + 1) with document.failed blob_lost."""
    document_id = await world.document(Status.STORED, b"lost")
    await world.deliver(
        "missing_blob", MissingBlob(document_id=document_id, object_key=object_key(document_id), run_id=RUN)
    )
    assert world.status(document_id) == (Status.FAILED, 3)
    assert world.events() == [("document.failed", "blob_lost")]


async def test_missing_blob_of_the_wrong_size_is_quarantined_after_the_failure_commits(world: World) -> None:
    """A wrong-size object is copied to quarantine and deleted; the document fails with its event."""
    document_id = await world.document(Status.STORED, b"0123456789")
    key = object_key(document_id)
    world.bucket.put(key, b"short")
    await world.deliver("missing_blob", MissingBlob(document_id=document_id, object_key=key, run_id=RUN))
    assert world.status(document_id) == (Status.FAILED, 3)
    assert key not in world.bucket.objects
    assert world.bucket.objects[quarantine_key(key)].data == b"short"
    assert quarantine_key(key) in world.db.tables.quarantine


async def test_missing_blob_that_cannot_be_quarantined_changes_nothing(world: World) -> None:
    """When the quarantine copy fails, the failed state and its event are rolled back together."""
    document_id = await world.document(Status.STORED, b"0123456789")
    world.bucket.put(object_key(document_id), b"short")
    world.bucket.failing.add("copy")
    with pytest.raises(Unavailable):
        await world.deliver(
            "missing_blob", MissingBlob(document_id=document_id, object_key=object_key(document_id), run_id=RUN)
        )
    assert world.status(document_id) == (Status.STORED, 2)
    assert world.events() == []
    assert object_key(document_id) in world.bucket.objects


async def test_missing_blob_whose_object_is_back_is_skipped(world: World) -> None:
    """An object of the recorded size reappeared since the plan: the document stays stored, no event."""
    document_id = await world.document(Status.STORED, b"0123456789")
    world.bucket.put(object_key(document_id), b"9876543210")
    await world.deliver(
        "missing_blob", MissingBlob(document_id=document_id, object_key=object_key(document_id), run_id=RUN)
    )
    assert world.status(document_id) == (Status.STORED, 2)
    assert world.events() == []


def mismatch(document_id: uuid.UUID) -> ContentMismatch:
    return ContentMismatch(
        document_id=document_id,
        object_key=object_key(document_id),
        expected_sha256=blob(b"0123456789").sha256,
        actual_sha256=blob(b"tampered!!").sha256,
        run_id=RUN,
    )


async def test_content_mismatch_fails_the_document_and_quarantines_its_object_once(world: World) -> None:
    """Bytes that still differ: failed (content_mismatch) with its event, object moved to quarantine; a redelivery
    of the same event changes nothing more."""
    document_id = await world.document(Status.STORED, b"0123456789")
    key = object_key(document_id)
    world.bucket.put(key, b"tampered!!")
    await world.deliver("content_mismatch", mismatch(document_id))
    assert world.status(document_id) == (Status.FAILED, 3)
    assert world.events() == [("document.failed", "content_mismatch")]
    assert key not in world.bucket.objects
    assert world.bucket.objects[quarantine_key(key)].data == b"tampered!!"
    assert world.db.tables.quarantine[quarantine_key(key)].run_id == RUN
    await world.deliver("content_mismatch", mismatch(document_id))
    assert world.status(document_id) == (Status.FAILED, 3)
    assert len(world.events()) == 1


async def test_content_mismatch_whose_bytes_match_again_or_are_gone_is_skipped(world: World) -> None:
    """Re-hashed when it acts: bytes restored since the plan, or an object gone (missing_blob's), leave it stored."""
    restored = await world.document(Status.STORED, b"0123456789")
    world.bucket.put(object_key(restored), b"0123456789")
    gone = await world.document(Status.STORED, b"0123456789", owner="bob")
    for document_id in (restored, gone):
        await world.deliver("content_mismatch", mismatch(document_id))
        assert world.status(document_id) == (Status.STORED, 2)
    assert world.events() == []
    assert world.bucket.objects[object_key(restored)].data == b"0123456789"
    assert world.db.tables.quarantine == {}


async def test_content_mismatch_that_cannot_be_quarantined_changes_nothing(world: World) -> None:
    """When the quarantine copy fails, the failed state and its event roll back together; the object stays."""
    document_id = await world.document(Status.STORED, b"0123456789")
    world.bucket.put(object_key(document_id), b"tampered!!")
    world.bucket.failing.add("copy")
    with pytest.raises(Unavailable):
        await world.deliver("content_mismatch", mismatch(document_id))
    assert world.status(document_id) == (Status.STORED, 2)
    assert world.events() == []
    assert object_key(document_id) in world.bucket.objects


async def test_a_stale_upload_whose_bytes_match_is_finalized(world: World) -> None:
    """stale_upload: the declared bytes are there: the document is stored with its event, the session completed."""
    data = b"the declared bytes"
    document_id = await world.document(Status.PENDING)
    world.declare(document_id, data)
    world.bucket.put(object_key(document_id), data)
    await world.deliver("stale_upload", StaleUpload(document_id=document_id, run_id=RUN))
    assert world.status(document_id) == (Status.STORED, 2)
    assert world.db.tables.sessions[document_id].status is SessionStatus.COMPLETED
    assert world.events() == [("document.stored", None)]
    assert object_key(document_id) in world.bucket.objects


async def test_a_stale_upload_of_content_stored_meanwhile_fails_as_duplicate_and_frees_its_bytes(world: World) -> None:
    """stale_upload: when the owner stored the same content meanwhile, this upload fails (upload_duplicate)."""
    data = b"the declared bytes"
    kept = await world.document(Status.STORED, data)
    world.bucket.put(object_key(kept), data)
    document_id = await world.document(Status.PENDING)
    world.declare(document_id, data)
    world.bucket.put(object_key(document_id), data)
    await world.deliver("stale_upload", StaleUpload(document_id=document_id, run_id=RUN))
    assert world.status(document_id) == (Status.FAILED, 2)
    assert world.events() == [("document.failed", "upload_duplicate")]
    assert object_key(document_id) not in world.bucket.objects
    assert object_key(kept) in world.bucket.objects


async def test_a_stale_synchronous_upload_is_failed_and_its_bytes_deleted(world: World) -> None:
    """stale_upload without a declaration (a synchronous upload past the TTL): failed upload_expired, bytes deleted."""
    document_id = await world.document(Status.PENDING)
    world.bucket.put(object_key(document_id), b"never acknowledged")
    world.db.advance(TTL + 1)
    await world.deliver("stale_upload", StaleUpload(document_id=document_id, run_id=RUN))
    assert world.status(document_id) == (Status.FAILED, 2)
    assert world.events() == [("document.failed", "upload_expired")]
    assert object_key(document_id) not in world.bucket.objects


async def test_a_stale_upload_within_its_ttl_or_completed_is_left_alone(world: World) -> None:
    """stale_upload re-checks: an upload still in time, or stored since the plan, is not touched."""
    in_time = await world.document(Status.PENDING)
    world.bucket.put(object_key(in_time), b"x")
    stored = await world.document(Status.STORED, b"y")
    world.bucket.put(object_key(stored), b"y")
    for document_id in (in_time, stored):
        await world.deliver("stale_upload", StaleUpload(document_id=document_id, run_id=RUN))
    assert (world.status(in_time)[0], world.status(stored)[0]) == (Status.PENDING, Status.STORED)
    assert world.events() == []
    assert {object_key(in_time), object_key(stored)} <= world.bucket.objects.keys()


async def test_the_purge_deletes_only_quarantined_objects_past_the_retention(world: World) -> None:
    """purge_quarantine deletes what is older than the retention and marks it purged; younger copies stay."""
    old, young = quarantine_key("documents/old"), quarantine_key("documents/young")
    world.bucket.put(old, b"o")
    world.db.advance(RETENTION + 10)
    world.bucket.put(young, b"y")
    for key in (old, young):
        async with world.db.uow() as uow:
            await uow.compensations.record_quarantine(
                key=key, quarantined=key, size_bytes=1, retention_s=RETENTION, run_id=RUN
            )
            await uow.commit()
    assert await world.worker.purge_quarantine(now=world.db.now()) == 1
    assert old not in world.bucket.objects
    assert young in world.bucket.objects
    assert world.db.tables.quarantine[old].purged_at is not None
    assert world.db.tables.quarantine[young].purged_at is None


def abandoned(key: str, upload_id: str) -> AbandonedMultipart:
    return AbandonedMultipart(
        object_key=key, upload_id=upload_id, initiated=datetime(2026, 1, 1, tzinfo=UTC), run_id=RUN
    )


async def test_an_abandoned_multipart_upload_is_aborted_unless_a_live_upload_claims_it(world: World) -> None:
    """Unclaimed parts are aborted; a pending session's or an in-flight pending document's upload is left alone."""
    nobody = await world.bucket.create_multipart(f"documents/{uuid.uuid4()}", content_type="x/y")
    presigned = await world.document(Status.PENDING)
    world.declare(presigned, b"declared", expired=False)
    claimed = await world.bucket.create_multipart(object_key(presigned), content_type="x/y")
    world.db.tables.sessions[presigned] = replace(world.db.tables.sessions[presigned], multipart_upload_id=claimed)
    streaming = await world.document(Status.PENDING)
    in_flight = await world.bucket.create_multipart(object_key(streaming), content_type="x/y")
    for key, upload_id in [(object_key(presigned), claimed), (object_key(streaming), in_flight)]:
        await world.deliver("abandoned_multipart", abandoned(key, upload_id))
    assert set(world.bucket.multipart) == {nobody, claimed, in_flight}
    nobody_key = world.bucket.multipart[nobody][0]
    await world.deliver("abandoned_multipart", abandoned(nobody_key, nobody))
    assert set(world.bucket.multipart) == {claimed, in_flight}
    assert ("abort_multipart", nobody_key) in world.bucket.calls
