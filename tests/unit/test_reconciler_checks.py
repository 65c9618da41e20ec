"""The reconcile checks classify what the scan saw, over in-memory streams."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest

from depot_reconciler.checks import REGISTRY, ghost_index_entry, stuck_outbox, unindexed
from depot_reconciler.checks.base import Finding, Limits
from depot_reconciler.checks.ghost_index_entry import GhostCandidate
from depot_reconciler.checks.streams import OBJECTS_AND_DOCUMENTS, ObjectInfo, ScanOrderError, merge_by_key
from depot_reconciler.checks.streams import DocumentInfo as Doc
from depot_reconciler.checks.stuck_outbox import UnpublishedEvent
from depot_reconciler.checks.unindexed import UnindexedCandidate

T = TypeVar("T")
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
LIMITS = Limits(
    now=NOW,
    grace=timedelta(seconds=900),
    upload_ttl=timedelta(seconds=3600),
    index_lag=timedelta(seconds=60),
    outbox_allowance=timedelta(seconds=300),
)
OLD = NOW - timedelta(days=1)


async def stream(items: Iterable[T]) -> AsyncIterator[T]:
    for item in items:
        yield item


def obj(key: str, size: int = 10, at: datetime = OLD) -> ObjectInfo:
    return ObjectInfo(key=key, size=size, last_modified=at)


def doc(key: str, status: str = "stored", size: int | None = 10, at: datetime = OLD) -> Doc:
    return Doc(uuid.uuid4(), key, status, size, 1, created_at=at, updated_at=at)


def classify_pair(obj_: ObjectInfo | None, doc_: Doc | None, limits: Limits) -> list[Finding]:
    """The findings of every check of the merged S3 listing and documents for one key."""
    found = (check.classify((obj_, doc_), limits) for check in REGISTRY if check.source is OBJECTS_AND_DOCUMENTS)
    return [finding for finding in found if finding is not None]


def checks_of(obj_: ObjectInfo | None, doc_: Doc | None) -> list[str]:
    return [finding.check for finding in classify_pair(obj_, doc_, LIMITS)]


async def test_merge_pairs_equal_keys_and_keeps_unmatched_ones_in_key_order() -> None:
    """The merge yields every key once, in byte order, paired with its object and its document."""
    objects = [obj("documents/a"), obj("documents/c"), obj("documents/d")]
    documents = [doc("documents/b"), doc("documents/c"), doc("documents/e")]
    pairs = [
        (o.key if o else None, d.object_key if d else None)
        async for o, d in merge_by_key(stream(objects), stream(documents))
    ]
    assert pairs == [
        ("documents/a", None),
        (None, "documents/b"),
        ("documents/c", "documents/c"),
        ("documents/d", None),
        (None, "documents/e"),
    ]


async def test_merge_of_empty_streams_yields_nothing() -> None:
    """Two empty streams merge to nothing."""
    assert [pair async for pair in merge_by_key(stream([]), stream([]))] == []


async def test_merge_refuses_an_unsorted_stream() -> None:
    """A stream that goes backwards stops the merge instead of inventing findings."""
    with pytest.raises(ScanOrderError):
        _ = [pair async for pair in merge_by_key(stream([obj("documents/b"), obj("documents/a")]), stream([]))]


async def test_merge_orders_keys_by_code_point_like_s3() -> None:
    """Upper case sorts before lower case and '-' before digits, as in S3's UTF-8 byte order."""
    objects = [obj("documents/-"), obj("documents/0"), obj("documents/A"), obj("documents/a")]
    pairs = [o async for o, _ in merge_by_key(stream(objects), stream([]))]
    assert [o.key for o in pairs if o] == [o.key for o in objects]


def test_a_stored_document_with_its_object_is_consistent() -> None:
    """An object of the recorded size under a stored document is no finding."""
    assert checks_of(obj("documents/x"), doc("documents/x")) == []


def test_an_old_object_without_document_is_an_orphan() -> None:
    """An object older than the grace with no document is an orphan_object."""
    assert checks_of(obj("documents/x"), None) == ["orphan_object"]


def test_an_object_younger_than_the_grace_is_not_an_orphan() -> None:
    """An object written within the grace period may belong to an upload in flight."""
    assert checks_of(obj("documents/x", at=NOW - timedelta(seconds=899)), None) == []


@pytest.mark.parametrize("status", ["failed", "deleted"])
def test_an_object_of_a_dead_document_is_an_orphan(status: str) -> None:
    """An object whose document is failed or deleted belongs to no live document."""
    assert checks_of(obj("documents/x"), doc("documents/x", status=status)) == ["orphan_object"]


def test_an_object_of_a_recent_pending_upload_is_consistent() -> None:
    """A pending upload within its TTL may already have written its object."""
    assert checks_of(obj("documents/x"), doc("documents/x", status="pending", at=NOW)) == []


def test_a_stored_document_without_object_is_a_missing_blob() -> None:
    """A stored document whose object is absent is a missing_blob."""
    findings = classify_pair(None, doc("documents/x"), LIMITS)
    assert [(f.check, f.details["actual_size"]) for f in findings] == [("missing_blob", None)]


def test_a_stored_document_whose_object_has_another_size_is_a_missing_blob() -> None:
    """A stored document whose object has a different size is a missing_blob."""
    findings = classify_pair(obj("documents/x", size=9), doc("documents/x", size=10), LIMITS)
    assert [(f.check, f.details["actual_size"], f.details["expected_size"]) for f in findings] == [
        ("missing_blob", 9, 10)
    ]


def test_a_pending_upload_past_ttl_and_grace_is_stale() -> None:
    """A pending document older than its upload TTL plus the grace is a stale_upload."""
    at = NOW - timedelta(seconds=3600 + 900)
    assert checks_of(None, doc("documents/x", status="pending", at=at)) == ["stale_upload"]
    assert checks_of(None, doc("documents/x", status="pending", at=at + timedelta(seconds=1))) == []


def test_an_unindexed_document_waits_for_the_index_lag() -> None:
    """A stored document missing from the index is a finding only once the lag allowance passed."""
    recent = UnindexedCandidate(uuid.uuid4(), 2, NOW - timedelta(seconds=59), None, None)
    late = UnindexedCandidate(uuid.uuid4(), 2, NOW - timedelta(seconds=60), "indexed", 1)
    assert unindexed.classify(recent, LIMITS) is None
    finding = unindexed.classify(late, LIMITS)
    assert finding is not None
    assert (finding.check, finding.details["entry_version"]) == ("unindexed", 1)


def test_a_ghost_entry_waits_for_the_index_lag_after_the_document_changed() -> None:
    """An indexed entry of a deleted document is a ghost once the lag allowance passed since the delete."""
    document_id = uuid.uuid4()
    recent = GhostCandidate(document_id, 1, OLD, "deleted", NOW - timedelta(seconds=10))
    late = GhostCandidate(document_id, 1, OLD, None, None)
    assert ghost_index_entry.classify(recent, LIMITS) is None
    finding = ghost_index_entry.classify(late, LIMITS)
    assert finding is not None
    assert (finding.check, finding.subject) == ("ghost_index_entry", str(document_id))


def test_an_event_unpublished_past_the_allowance_is_stuck() -> None:
    """An outbox event unpublished longer than the allowance is a stuck_outbox finding."""
    recent = UnpublishedEvent(uuid.uuid4(), "t", "k", NOW - timedelta(seconds=299))
    late = UnpublishedEvent(uuid.uuid4(), "t", "k", NOW - timedelta(seconds=301))
    assert stuck_outbox.classify(recent, LIMITS) is None
    finding = stuck_outbox.classify(late, LIMITS)
    assert finding is not None
    assert (finding.check, finding.details["age_seconds"]) == ("stuck_outbox", 301)
