"""The documents use cases over in-memory fakes: upload, idempotency races and delete in units of work."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from depot_common.errors import Duplicate, NotFound, Unavailable, Unprocessable
from depot_upload.documents.service import UploadService
from depot_upload.domain import Status, object_key
from depot_upload.fakes import FakeBucket, FakeDatabase


@dataclass
class World:
    db: FakeDatabase
    bucket: FakeBucket
    service: UploadService

    async def upload(self, data: bytes, *, owner: str = "alice", key: str | None = None) -> uuid.UUID:
        result = await self.service.upload(
            owner_id=owner, filename="a.txt", content_type="text/plain", chunks=chunks(data), idempotency_key=key
        )
        return result.document.id

    def events(self) -> list[str]:
        return [kind for kind, _ in self.db.events()]


@pytest.fixture
def world() -> World:
    db = FakeDatabase()
    bucket = FakeBucket(clock=db.now)
    service = UploadService(documents=db.documents(), uow=db.uow, blobs=bucket, max_upload_bytes=1024)
    return World(db, bucket, service)


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_an_upload_commits_the_stored_document_its_event_and_its_key_together(world: World) -> None:
    """A stored upload leaves the document stored at version 2, one document.stored event and the key's record."""
    document_id = await world.upload(b"hello", key="k1")
    document = world.db.tables.documents[document_id]
    assert (document.status, document.version, document.sha256) == (
        Status.STORED,
        2,
        hashlib.sha256(b"hello").hexdigest(),
    )
    assert world.events() == ["document.stored"]
    assert world.db.tables.idempotency[("alice", "k1")][1].id == document_id


async def test_content_the_owner_already_stored_is_a_duplicate_and_leaves_nothing_behind(world: World) -> None:
    """The second upload of the same bytes is 409 duplicate naming the first; its row and its object are removed."""
    first = await world.upload(b"same")
    with pytest.raises(Duplicate) as raised:
        await world.upload(b"same")
    assert raised.value.extra["existing_id"] == str(first)
    assert list(world.db.tables.documents) == [first]
    assert list(world.bucket.objects) == [object_key(first)]
    assert world.events() == ["document.stored"]


async def test_a_key_taken_meanwhile_for_other_content_rolls_back_this_store(world: World) -> None:
    """When a concurrent request records the same Idempotency-Key first, this upload's stored state and event roll
    back with the refused key: 422 idempotency_key_reused, no trace of it left."""
    other: list[uuid.UUID] = []

    async def concurrent_request() -> None:
        other.append(await world.upload(b"other content", key="k"))

    world.bucket.before["put_stream"] = concurrent_request
    with pytest.raises(Unprocessable) as raised:
        await world.upload(b"this content", key="k")
    assert raised.value.code == "idempotency_key_reused"
    assert list(world.db.tables.documents) == other
    assert world.events() == ["document.stored"]
    assert list(world.bucket.objects) == [object_key(other[0])]


async def test_a_key_taken_meanwhile_for_the_same_content_replays_that_response(world: World) -> None:
    """Two concurrent requests with one key and the same bytes: the later one replays the first's document."""
    other: list[uuid.UUID] = []

    async def concurrent_request() -> None:
        other.append(await world.upload(b"same bytes", key="k"))

    world.bucket.before["put_stream"] = concurrent_request
    result = await world.service.upload(
        owner_id="alice", filename="a.txt", content_type=None, chunks=chunks(b"same bytes"), idempotency_key="k"
    )
    assert result.replayed
    assert [result.document.id] == other
    assert world.events() == ["document.stored"]


async def test_delete_commits_the_deleted_state_and_event_before_the_bytes_go(world: World) -> None:
    """A delete whose S3 delete fails has committed deleted + document.deleted (the reconciler removes the orphan)."""
    document_id = await world.upload(b"bye")
    world.bucket.failing.add("delete")
    with pytest.raises(Unavailable):
        await world.service.delete(owner_id="alice", document_id=document_id)
    document = world.db.tables.documents[document_id]
    assert (document.status, document.version) == (Status.DELETED, 3)
    assert world.events() == ["document.stored", "document.deleted"]
    assert object_key(document_id) in world.bucket.objects


async def test_another_owners_document_cannot_be_deleted(world: World) -> None:
    """delete of a document owned by someone else is 404 and changes nothing."""
    document_id = await world.upload(b"mine")
    with pytest.raises(NotFound):
        await world.service.delete(owner_id="mallory", document_id=document_id)
    assert world.db.tables.documents[document_id].status is Status.STORED
    assert world.events() == ["document.stored"]
