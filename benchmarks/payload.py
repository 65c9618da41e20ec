"""Payloads: distinct bytes for every upload, as one buffer or streamed in chunks.

Every payload starts with its number and a per-phase tag, so no two uploads of a run
have the same SHA-256 (the API answers a repeated file of an owner with 409). Streamed
payloads repeat one random block, so a 1 GiB body never exists in memory.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
_HEADER = 24  # 8-byte number + 16-byte tag


@dataclass(frozen=True)
class Payloads:
    """Distinct payloads of ``size`` bytes: ``payloads.data(n)`` is the ``n``-th."""

    size: int
    tag: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    _block: bytes = b""

    def __post_init__(self) -> None:
        if self.size < _HEADER:
            raise ValueError(f"payloads are at least {_HEADER} bytes")
        object.__setattr__(self, "_block", os.urandom(self.size - _HEADER))

    def data(self, number: int) -> bytes:
        return number.to_bytes(8, "big") + self.tag + self._block


@dataclass(frozen=True)
class MultipartEnvelope:
    """The bytes around one ``file`` part of a ``multipart/form-data`` body."""

    filename: str = "bench.bin"
    content_type: str = "application/octet-stream"
    boundary: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def head(self) -> bytes:
        return (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{self.filename}"\r\n'
            f"Content-Type: {self.content_type}\r\n\r\n"
        ).encode()

    @property
    def tail(self) -> bytes:
        return f"\r\n--{self.boundary}--\r\n".encode()

    def headers(self, size: int) -> dict[str, str]:
        """Request headers for a body whose file part holds ``size`` bytes."""
        return {
            "Content-Type": f"multipart/form-data; boundary={self.boundary}",
            "Content-Length": str(len(self.head) + size + len(self.tail)),
        }

    def body(self, data: bytes) -> bytes:
        return b"".join((self.head, data, self.tail))


async def stream_bytes(size: int, *, chunk_size: int = MIB) -> AsyncIterator[bytes]:
    """``size`` distinct bytes in ``chunk_size`` chunks; only one chunk is ever held."""
    first = secrets.token_bytes(16) + os.urandom(chunk_size - 16)
    block = os.urandom(chunk_size)
    sent = 0
    while sent < size:
        piece = first if sent == 0 else block
        piece = piece[: size - sent] if size - sent < chunk_size else piece
        sent += len(piece)
        yield piece


async def stream_multipart(envelope: MultipartEnvelope, size: int, *, chunk_size: int = MIB) -> AsyncIterator[bytes]:
    """A ``multipart/form-data`` body with one ``size``-byte file part, as a stream."""
    yield envelope.head
    async for chunk in stream_bytes(size, chunk_size=chunk_size):
        yield chunk
    yield envelope.tail
