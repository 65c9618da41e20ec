"""The document life cycle: each transition moves the state, bumps the version and returns its event."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from depot_common.events import DocumentDeleted, DocumentFailed, DocumentStored
from depot_upload.domain import Document, IllegalTransition, Status, StoredBlob, object_key

BLOB = StoredBlob(size_bytes=5, sha256="ab" * 32)


def document(status: Status, version: int = 1) -> Document:
    document_id = uuid.uuid4()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return Document(
        id=document_id,
        owner_id="alice",
        filename="a.txt",
        content_type="text/plain",
        object_key=object_key(document_id),
        status=status,
        version=version,
        created_at=now,
        updated_at=now,
    )


def test_store_moves_pending_to_stored_and_announces_it_at_the_new_version() -> None:
    """store(blob) records the measured size and SHA-256, bumps the version and returns document.stored for it."""
    pending = document(Status.PENDING)
    stored, event = pending.store(BLOB)
    assert (stored.status, stored.version, stored.size_bytes, stored.sha256) == (Status.STORED, 2, 5, BLOB.sha256)
    assert event == DocumentStored(
        document_id=pending.id,
        owner_id="alice",
        filename="a.txt",
        content_type="text/plain",
        size_bytes=5,
        sha256=BLOB.sha256,
        object_key=pending.object_key,
        version=2,
    )
    assert pending.status is Status.PENDING  # transitions return a new document, never mutate


@pytest.mark.parametrize("start", [Status.PENDING, Status.STORED])
def test_fail_moves_a_pending_or_stored_document_to_failed_with_its_reason(start: Status) -> None:
    """fail(reason) works from pending (abandoned upload) and stored (lost bytes) and returns document.failed."""
    before = document(start, version=3)
    failed, event = before.fail("blob_lost")
    assert (failed.status, failed.version) == (Status.FAILED, 4)
    assert event == DocumentFailed(document_id=before.id, owner_id="alice", reason="blob_lost")


@pytest.mark.parametrize("start", [Status.PENDING, Status.STORED, Status.FAILED])
def test_delete_moves_any_undeleted_document_to_deleted(start: Status) -> None:
    """delete() returns document.deleted carrying the new version, which the indexer orders by."""
    before = document(start, version=2)
    deleted, event = before.delete()
    assert (deleted.status, deleted.version) == (Status.DELETED, 3)
    assert event == DocumentDeleted(document_id=before.id, owner_id="alice", version=3)


@pytest.mark.parametrize(
    ("start", "transition"),
    [
        (Status.STORED, "store"),
        (Status.FAILED, "store"),
        (Status.DELETED, "store"),
        (Status.FAILED, "fail"),
        (Status.DELETED, "fail"),
        (Status.DELETED, "delete"),
    ],
)
def test_a_transition_from_a_state_it_does_not_start_from_is_refused(start: Status, transition: str) -> None:
    """Storing twice, failing a failed or deleted document, or deleting twice raises IllegalTransition."""
    before = document(start)
    attempt = {"store": lambda: before.store(BLOB), "fail": lambda: before.fail("x"), "delete": before.delete}
    with pytest.raises(IllegalTransition):
        attempt[transition]()
