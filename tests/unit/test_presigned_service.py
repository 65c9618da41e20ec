"""Presigned uploads' start, complete and abort over in-memory fakes: races between them and other uploads."""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass

import pytest

from depot_common.errors import Conflict, Duplicate, Gone, Unavailable, Unprocessable
from depot_upload.domain import Status, StoredBlob, object_key
from depot_upload.fakes import FakeBucket, FakeDatabase
from depot_upload.presigned.completion import UploadCompletion, fail_upload, store_upload
from depot_upload.presigned.domain import FailureReason, SessionStatus
from depot_upload.presigned.fakes import FakeUploadSessions
from depot_upload.presigned.service import PresignedUploads

MIB = 1024 * 1024
TTL = 3600


@dataclass
class World:
    db: FakeDatabase
    bucket: FakeBucket
    presigned: PresignedUploads
    completion: UploadCompletion

    async def start(self, data: bytes, owner: str = "alice") -> uuid.UUID:
        ticket = await self.presigned.start(
            owner_id=owner, filename="f.bin", size_bytes=len(data), sha256=sha256(data), content_type=None
        )
        return ticket.session.id

    def status(self, upload_id: uuid.UUID) -> tuple[Status, SessionStatus, str | None]:
        session = self.db.tables.sessions[upload_id]
        return self.db.tables.documents[upload_id].status, session.status, session.failure_reason

    def events(self) -> list[tuple[str, str | None]]:
        """``(type, reason)`` of each committed outbox event."""
        return [(kind, getattr(data, "reason", None)) for kind, data in self.db.events()]


@pytest.fixture
def world() -> World:
    db = FakeDatabase()
    bucket = FakeBucket(clock=db.now)
    presigned = PresignedUploads(
        sessions=db.sessions(),
        store=bucket,
        documents=db.documents(),
        uow=db.uow,
        max_upload_bytes=100 * MIB,
        part_size=5 * MIB,
        ttl_seconds=TTL,
    )
    completion = UploadCompletion(sessions=db.sessions(), store=bucket, documents=db.documents(), uow=db.uow)
    return World(db, bucket, presigned, completion)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_complete_stores_the_document_its_event_and_the_session_together(world: World) -> None:
    """A verified upload becomes stored with one document.stored event and a completed session."""
    data = os.urandom(1000)
    upload_id = await world.start(data)
    world.bucket.put(object_key(upload_id), data)
    document = await world.completion.complete(owner_id="alice", upload_id=upload_id, parts=[])
    assert (document.status, document.version, document.sha256) == (Status.STORED, 2, sha256(data))
    assert world.status(upload_id) == (Status.STORED, SessionStatus.COMPLETED, None)
    assert world.events() == [("document.stored", None)]


async def test_a_failure_inside_the_unit_of_work_leaves_neither_state_nor_event(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When marking the session completed fails, the stored state and its event are rolled back with it."""
    data = os.urandom(1000)
    upload_id = await world.start(data)
    world.bucket.put(object_key(upload_id), data)

    async def down(self: FakeUploadSessions, upload_id: uuid.UUID) -> None:
        raise Unavailable("PostgreSQL went away")

    monkeypatch.setattr(FakeUploadSessions, "mark_completed", down)
    with pytest.raises(Unavailable):
        await world.completion.complete(owner_id="alice", upload_id=upload_id, parts=[])
    assert world.status(upload_id) == (Status.PENDING, SessionStatus.PENDING, None)
    assert world.events() == []


async def test_complete_racing_an_abort_is_gone_and_frees_the_bytes(world: World) -> None:
    """An abort committed while complete verified the bytes wins: 410 upload_aborted, one failed event, no object."""
    data = os.urandom(1000)
    upload_id = await world.start(data)
    world.bucket.put(object_key(upload_id), data)

    async def concurrent_abort() -> None:  # the abort's transaction commits; its S3 clean-up has not run yet
        async with world.db.uow() as uow:
            assert await fail_upload(uow, upload_id, FailureReason.ABORTED)
            await uow.commit()

    world.bucket.before["measure"] = concurrent_abort
    with pytest.raises(Gone) as raised:
        await world.completion.complete(owner_id="alice", upload_id=upload_id, parts=[])
    assert raised.value.code == "upload_aborted"
    assert world.status(upload_id) == (Status.FAILED, SessionStatus.FAILED, "aborted")
    assert world.events() == [("document.failed", "upload_aborted")]
    assert object_key(upload_id) not in world.bucket.objects


async def test_complete_racing_another_complete_returns_the_document_and_keeps_its_bytes(world: World) -> None:
    """When a concurrent complete stored the upload first, complete returns that document and deletes nothing."""
    data = os.urandom(1000)
    upload_id = await world.start(data)
    world.bucket.put(object_key(upload_id), data)

    async def concurrent_complete() -> None:
        async with world.db.uow() as uow:
            assert await store_upload(uow, upload_id, StoredBlob(len(data), sha256(data))) is not None
            await uow.commit()

    world.bucket.before["measure"] = concurrent_complete
    document = await world.completion.complete(owner_id="alice", upload_id=upload_id, parts=[])
    assert document.status is Status.STORED
    assert world.bucket.objects[object_key(upload_id)].data == data
    assert ("delete", object_key(upload_id)) not in world.bucket.calls
    assert world.events() == [("document.stored", None)]


async def test_complete_racing_the_same_content_stored_elsewhere_is_a_duplicate(world: World) -> None:
    """Content the owner stored meanwhile makes complete 409 duplicate; this upload fails and its bytes go."""
    data = os.urandom(1000)
    upload_id = await world.start(data)
    world.bucket.put(object_key(upload_id), data)
    other = uuid.uuid4()

    async def same_content_stored_meanwhile() -> None:
        async with world.db.uow() as uow:
            pending = await uow.documents.insert_pending(
                document_id=other, owner_id="alice", filename="g.bin", content_type="x/y", object_key=object_key(other)
            )
            await uow.apply(pending.store(StoredBlob(len(data), sha256(data))))
            await uow.commit()

    world.bucket.before["measure"] = same_content_stored_meanwhile
    with pytest.raises(Duplicate) as raised:
        await world.completion.complete(owner_id="alice", upload_id=upload_id, parts=[])
    assert raised.value.extra["existing_id"] == str(other)
    assert world.status(upload_id) == (Status.FAILED, SessionStatus.FAILED, "duplicate")
    assert world.events() == [("document.stored", None), ("document.failed", "upload_duplicate")]
    assert object_key(upload_id) not in world.bucket.objects


async def test_a_start_that_lost_the_race_returns_the_winner_and_aborts_its_own_multipart(world: World) -> None:
    """Two concurrent starts of the same content share one upload; the loser's S3 multipart upload is aborted."""
    data_size = 12 * MIB
    declared = {"owner_id": "alice", "filename": "big.bin", "size_bytes": data_size, "sha256": "c" * 64}
    winner: list[uuid.UUID] = []

    async def concurrent_start() -> None:
        ticket = await world.presigned.start(**declared, content_type=None)
        winner.append(ticket.session.id)

    world.bucket.before["create_multipart"] = concurrent_start
    ticket = await world.presigned.start(**declared, content_type=None)
    assert not ticket.created
    assert [ticket.session.id] == winner
    assert len(ticket.parts) == 3
    assert list(world.bucket.multipart) == [world.db.tables.sessions[winner[0]].multipart_upload_id]
    assert len(world.db.tables.documents) == 1


async def test_an_expired_upload_is_failed_once_and_gone(world: World) -> None:
    """Completing past the TTL is 410 upload_expired with one document.failed; completing again stays 410."""
    data = os.urandom(1000)
    upload_id = await world.start(data)
    world.bucket.put(object_key(upload_id), data)
    world.db.advance(TTL + 1)
    for _ in range(2):
        with pytest.raises(Gone) as raised:
            await world.completion.complete(owner_id="alice", upload_id=upload_id, parts=[])
        assert raised.value.code == "upload_expired"
    assert world.events() == [("document.failed", "upload_expired")]
    assert object_key(upload_id) not in world.bucket.objects


async def test_bytes_other_than_declared_fail_the_upload_and_are_removed(world: World) -> None:
    """Same size, other bytes: 422 checksum_mismatch, the upload failed with its event, the object deleted."""
    data = os.urandom(1000)
    upload_id = await world.start(data)
    world.bucket.put(object_key(upload_id), os.urandom(1000))
    with pytest.raises(Unprocessable) as raised:
        await world.completion.complete(owner_id="alice", upload_id=upload_id, parts=[])
    assert raised.value.code == "checksum_mismatch"
    assert world.status(upload_id) == (Status.FAILED, SessionStatus.FAILED, "checksum_mismatch")
    assert world.events() == [("document.failed", "upload_checksum_mismatch")]
    assert object_key(upload_id) not in world.bucket.objects


async def test_aborting_a_completed_upload_is_refused_and_keeps_the_document(world: World) -> None:
    """DELETE of a completed upload is 409 upload_completed; the stored document and its bytes stay."""
    data = os.urandom(1000)
    upload_id = await world.start(data)
    world.bucket.put(object_key(upload_id), data)
    await world.completion.complete(owner_id="alice", upload_id=upload_id, parts=[])
    with pytest.raises(Conflict) as raised:
        await world.completion.abort(owner_id="alice", upload_id=upload_id)
    assert raised.value.code == "upload_completed"
    assert world.status(upload_id)[0] is Status.STORED
    assert object_key(upload_id) in world.bucket.objects
