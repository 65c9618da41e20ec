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


async def test_starts_racing_on_one_session_record_one_multipart_upload_and_abort_the_other(world: World) -> None:
    """A start that finds the session its twin just committed (multipart not yet recorded) creates an S3 upload too:
    the first to record its id wins, the other's upload is aborted, and both get the same upload and URLs."""
    data_size = 12 * MIB
    declared = {"owner_id": "alice", "filename": "big.bin", "size_bytes": data_size, "sha256": "c" * 64}
    twins: list[tuple[uuid.UUID, bool, str]] = []

    async def concurrent_start() -> None:
        ticket = await world.presigned.start(**declared, content_type=None)
        twins.append((ticket.session.id, ticket.created, ticket.parts[0].url))

    world.bucket.before["create_multipart"] = concurrent_start  # runs once the session row is committed
    ticket = await world.presigned.start(**declared, content_type=None)
    [(twin_id, twin_created, twin_url)] = twins
    assert (ticket.created, twin_created) == (True, False)
    assert ticket.session.id == twin_id
    recorded = world.db.tables.sessions[twin_id].multipart_upload_id
    assert ticket.session.multipart_upload_id == recorded
    assert list(world.bucket.multipart) == [recorded]  # the loser's upload was aborted
    assert len(ticket.parts) == 3
    assert ticket.parts[0].url == twin_url
    assert len(world.db.tables.documents) == 1


async def test_a_start_records_its_session_before_s3_creates_the_multipart_upload(world: World) -> None:
    """No S3 multipart upload exists without a row: when CreateMultipartUpload is called, the pending document and
    its session are already committed (a crash there leaves what the reconciler repairs)."""
    seen: list[tuple[int, int]] = []

    async def at_create() -> None:
        seen.append((len(world.db.tables.documents), len(world.db.tables.sessions)))

    world.bucket.before["create_multipart"] = at_create
    ticket = await world.presigned.start(
        owner_id="alice", filename="big.bin", size_bytes=12 * MIB, sha256="d" * 64, content_type=None
    )
    assert seen == [(1, 1)]
    assert world.db.tables.sessions[ticket.session.id].multipart_upload_id in world.bucket.multipart


async def test_resume_of_a_session_whose_start_crashed_before_s3_creates_the_multipart_upload(world: World) -> None:
    """A session committed without its multipart upload (the API died before CreateMultipartUpload) gets one on
    resume: the client can carry on instead of starting over."""
    data_size = 12 * MIB
    world.bucket.before["create_multipart"] = crash  # the start dies between the row and S3
    with pytest.raises(Crashed):
        await world.presigned.start(
            owner_id="alice", filename="big.bin", size_bytes=data_size, sha256="e" * 64, content_type=None
        )
    [upload_id] = world.db.tables.sessions
    assert world.db.tables.sessions[upload_id].multipart_upload_id is None
    assert world.bucket.multipart == {}
    progress = await world.presigned.resume(owner_id="alice", upload_id=upload_id)
    assert (progress.completed, len(progress.parts)) == (False, 3)
    assert list(world.bucket.multipart) == [world.db.tables.sessions[upload_id].multipart_upload_id]


class Crashed(BaseException):
    """The process died here (nothing after it runs)."""


async def crash() -> None:
    raise Crashed


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
