"""Resume (``PresignedUploads.resume``) and download verification (``verified``) over in-memory fakes."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncGenerator
from datetime import UTC, datetime

import pytest

from depot_common.errors import Gone
from depot_upload.documents.service import ContentMismatch, verified
from depot_upload.domain import Document, Status
from depot_upload.fakes import FakeBucket, FakeDatabase
from depot_upload.presigned.service import PresignedUploads

MIB = 1024 * 1024


@pytest.fixture
def db() -> FakeDatabase:
    return FakeDatabase()


@pytest.fixture
def bucket(db: FakeDatabase) -> FakeBucket:
    return FakeBucket(clock=db.now)


@pytest.fixture
def presigned(db: FakeDatabase, bucket: FakeBucket) -> PresignedUploads:
    return PresignedUploads(
        sessions=db.sessions(),
        store=bucket,
        documents=db.documents(),
        uow=db.uow,
        max_upload_bytes=100 * MIB,
        part_size=5 * MIB,
        ttl_seconds=3600,
    )


async def start(presigned: PresignedUploads, data: bytes) -> uuid.UUID:
    ticket = await presigned.start(
        owner_id="alice",
        filename="f.bin",
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type=None,
    )
    return ticket.session.id


async def test_a_part_held_with_the_wrong_size_is_offered_again(
    presigned: PresignedUploads, bucket: FakeBucket, db: FakeDatabase
) -> None:
    """Parts S3 holds at their size are received; one of the wrong size gets a fresh URL like the missing ones."""
    data = os.urandom(12 * MIB)
    upload_id = await start(presigned, data)
    multipart_id = db.tables.sessions[upload_id].multipart_upload_id
    assert multipart_id is not None
    bucket.upload_part(multipart_id, 1, data[: 5 * MIB])
    bucket.upload_part(multipart_id, 2, data[5 * MIB : 6 * MIB])  # a short part 2
    progress = await presigned.resume(owner_id="alice", upload_id=upload_id)
    assert [(part.part_number, part.size) for part in progress.received] == [(1, 5 * MIB)]
    assert [part.part_number for part in progress.parts] == [2, 3]
    assert not progress.completed


async def test_a_multipart_upload_aborted_behind_depots_back_is_gone(
    presigned: PresignedUploads, bucket: FakeBucket, db: FakeDatabase
) -> None:
    """When S3 no longer knows a pending upload's multipart upload, resume is 410 upload_failed, not dead URLs."""
    upload_id = await start(presigned, os.urandom(6 * MIB))
    multipart_id = db.tables.sessions[upload_id].multipart_upload_id
    assert multipart_id is not None
    del bucket.multipart[multipart_id]
    with pytest.raises(Gone) as raised:
        await presigned.resume(owner_id="alice", upload_id=upload_id)
    assert raised.value.code == "upload_failed"


def document(data: bytes) -> Document:
    now = datetime.now(UTC)
    return Document(
        id=uuid.uuid4(),
        owner_id="alice",
        filename="f.bin",
        content_type="application/octet-stream",
        object_key="documents/x",
        status=Status.STORED,
        version=2,
        created_at=now,
        updated_at=now,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


async def chunks(data: bytes, size: int = 1000) -> AsyncGenerator[bytes, None]:
    for start_at in range(0, len(data), size):
        yield data[start_at : start_at + size]


async def test_verified_stream_passes_the_recorded_bytes_whole() -> None:
    """Bytes that match the record pass through unchanged, every chunk."""
    data = os.urandom(4500)
    assert b"".join([chunk async for chunk in verified(document(data), chunks(data))]) == data


@pytest.mark.parametrize("stored", ["same size, other bytes", "one byte longer", "one byte shorter"])
async def test_verified_stream_withholds_the_last_chunk_of_other_bytes(stored: str) -> None:
    """Other bytes raise ContentMismatch before the last chunk, or any byte past the size, is passed on."""
    recorded = os.urandom(4500)
    actual = {
        "same size, other bytes": recorded[:-1] + bytes([recorded[-1] ^ 1]),
        "one byte longer": recorded + b"x",
        "one byte shorter": recorded[:-1],
    }[stored]
    passed = bytearray()

    async def read_all() -> None:
        async for chunk in verified(document(recorded), chunks(actual)):
            passed.extend(chunk)

    with pytest.raises(ContentMismatch):
        await read_all()
    assert len(passed) < len(recorded)
    assert recorded.startswith(bytes(passed))
