"""The adapter the indexer's handlers need, as a small Protocol."""

from __future__ import annotations

from typing import Protocol


class BlobNotFound(Exception):
    """The object does not exist (any more)."""


class BlobReader(Protocol):
    async def read(self, key: str, max_bytes: int) -> bytes:
        """The first ``max_bytes`` bytes of object ``key``; raises :class:`BlobNotFound`."""
        ...
