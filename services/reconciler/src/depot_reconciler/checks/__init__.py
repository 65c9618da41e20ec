"""The reconcile checks (docs/reconciler.md): one module each, and their registry.

Each module declares one :class:`~depot_reconciler.checks.base.Check`: what it streams,
how it classifies an item of that stream, how ``apply`` re-checks a planned finding, and
which compensation it emits (executed by the owner of the data, as registered in
``depot_common.events``). Adding a check is one module here, its entry in :data:`CHECKS`,
and the owner's executor of its compensation.

=================== ===========================================  ================================
check               streams                                      compensation (executor)
=================== ===========================================  ================================
orphan_object       S3 listing merged with the documents         orphan_object (upload-api)
missing_blob        S3 listing merged with the documents         missing_blob (upload-api)
stale_upload        S3 listing merged with the documents         stale_upload (upload-api)
unindexed           stored documents ⟕ index entries             reindex (indexer)
ghost_index_entry   index entries ⟕ documents                    ghost_index_entry (indexer)
stuck_outbox        unpublished rows of upload.outbox            reported only
abandoned_multipart S3 multipart uploads ⟕ sessions, documents   abandoned_multipart (upload-api)
content_mismatch    a sample of the stored documents, read back  content_mismatch (upload-api)
=================== ===========================================  ================================

``content_mismatch`` reads every byte it verifies, so it runs only when asked
(``on_request``): named, or with content verification requested (:func:`select`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from depot_common.errors import Unprocessable
from depot_reconciler.checks import (
    abandoned_multipart,
    content_mismatch,
    ghost_index_entry,
    missing_blob,
    orphan_object,
    stale_upload,
    stuck_outbox,
    unindexed,
)
from depot_reconciler.checks.base import Check, Finding, Limits

#: Every check, in canonical order (the order of a run's findings and of its reports).
REGISTRY: tuple[Check[Any], ...] = (
    orphan_object.CHECK,
    missing_blob.CHECK,
    stale_upload.CHECK,
    unindexed.CHECK,
    ghost_index_entry.CHECK,
    stuck_outbox.CHECK,
    abandoned_multipart.CHECK,
    content_mismatch.CHECK,
)
BY_NAME: Mapping[str, Check[Any]] = {check.name: check for check in REGISTRY}
#: The check names, in canonical order.
CHECKS: tuple[str, ...] = tuple(BY_NAME)
#: The checks whose findings ``apply`` acts on (the others are reported only).
ACTING: tuple[str, ...] = tuple(check.name for check in REGISTRY if check.acts)


class UnknownCheck(Unprocessable):
    """A requested check does not exist (422 ``unknown_check``)."""

    code = "unknown_check"


def select(requested: Collection[str] | None, *, verify: bool = False) -> tuple[Check[Any], ...]:
    """The checks to run, in canonical order; ``UnknownCheck`` for an unknown one.

    The named ones, or when none are named every check but those that run on request;
    with ``verify`` (content verification requested) the on-request checks too.
    """
    unknown = set(requested or ()) - set(BY_NAME)
    if unknown:
        raise UnknownCheck(f"unknown checks: {', '.join(sorted(unknown))}")
    return tuple(
        check
        for check in REGISTRY
        if (check.name in requested if requested else not check.on_request) or (verify and check.on_request)
    )


__all__ = ["ACTING", "BY_NAME", "CHECKS", "REGISTRY", "Check", "Finding", "Limits", "UnknownCheck", "select"]
