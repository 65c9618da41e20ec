"""A scan: the selected checks run over their sources, findings yielded as they are found.

``ScanProgress`` counts what was read (the CLI's progress line, the run's ``scanned``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from depot_reconciler.checks.base import Check, Finding, Limits, Reads, Source


@dataclass(slots=True)
class ScanProgress:
    """What a scan has read so far; ``on_change`` is called after every page or pair."""

    objects: int = 0
    documents: int = 0
    index_rows: int = 0
    outbox_rows: int = 0
    multipart_uploads: int = 0
    verified_documents: int = 0
    verified_bytes: int = 0
    on_change: Callable[[ScanProgress], None] | None = None

    def changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)

    def counts(self) -> dict[str, int]:
        return {
            "objects": self.objects,
            "documents": self.documents,
            "index_rows": self.index_rows,
            "outbox_rows": self.outbox_rows,
            "multipart_uploads": self.multipart_uploads,
            "verified_documents": self.verified_documents,
            "verified_bytes": self.verified_bytes,
        }


async def scan(
    checks: Sequence[Check[Any]], reads: Reads, *, limits: Limits, progress: ScanProgress
) -> AsyncIterator[Finding]:
    """Run ``checks`` over their sources and yield their findings as they are found.

    Each source is read once, in the order of the first check that needs it; each item is
    classified by every check of that source, in the order of ``checks``.
    """
    by_source: dict[Source[Any], list[Check[Any]]] = {}
    for check in checks:
        by_source.setdefault(check.source, []).append(check)
    for source, readers in by_source.items():
        async for item in source.open(reads):
            source.tally(progress, item)
            progress.changed()
            for check in readers:
                if (finding := check.classify(item, limits)) is not None:
                    yield finding
