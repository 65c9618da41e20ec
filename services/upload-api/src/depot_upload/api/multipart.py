"""Streaming ``multipart/form-data`` reader: parts and their bytes as they arrive.

Starlette's form parser spools whole files before the handler runs; this reader hands
each file part to the handler as an async stream of chunks, so an upload flows to S3
while it is received and memory stays bounded by one network chunk.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

from depot_common.errors import BadRequest, Unprocessable

MAX_FIELD_BYTES = 64 * 1024


@dataclass
class PartInfo:
    name: str
    filename: str | None
    content_type: str | None
    headers: dict[str, str] = field(default_factory=dict)


def boundary_of(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/form-data`` content type, or a 422."""
    media_type, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise Unprocessable("expected a multipart/form-data body with a 'file' part", code="missing_file")
    return boundary


class MultipartReader:
    """Pull-style reader over a push parser: ``next_part()`` then ``chunks()``."""

    def __init__(self, body: AsyncIterator[bytes], boundary: bytes) -> None:
        self._body = body
        self._events: deque[tuple[str, object]] = deque()
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, str] = {}
        self._ended = False
        self._in_part = False
        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._on_part_begin,
                "on_part_data": self._on_part_data,
                "on_part_end": lambda: self._events.append(("end", None)),
                "on_header_field": lambda d, s, e: self._header_field.extend(d[s:e]),
                "on_header_value": lambda d, s, e: self._header_value.extend(d[s:e]),
                "on_header_end": self._on_header_end,
                "on_headers_finished": lambda: self._events.append(("headers", dict(self._headers))),
                "on_end": self._on_end,
            },
        )

    def _on_part_begin(self) -> None:
        self._headers = {}

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._events.append(("data", bytes(data[start:end])))

    def _on_header_end(self) -> None:
        self._headers[self._header_field.decode("latin-1").lower()] = self._header_value.decode("latin-1")
        self._header_field.clear()
        self._header_value.clear()

    def _on_end(self) -> None:
        self._ended = True

    async def _next_event(self) -> tuple[str, object] | None:
        while not self._events:
            if self._ended:
                return None
            try:
                chunk = await anext(self._body)
            except StopAsyncIteration:
                raise BadRequest(
                    "multipart body ended before its closing boundary", code="malformed_multipart"
                ) from None
            if not chunk:
                continue
            try:
                self._parser.write(chunk)
            except Exception as error:  # python-multipart raises its own parse errors
                raise BadRequest(f"malformed multipart body: {error}", code="malformed_multipart") from None
        return self._events.popleft()

    async def next_part(self) -> PartInfo | None:
        """The next part's headers (skipping what is left of the current part), or ``None``."""
        while self._in_part:
            await self._skip_part()
        event = await self._next_event()
        while event is not None and event[0] != "headers":
            event = await self._next_event()
        if event is None:
            return None
        headers = event[1]
        assert isinstance(headers, dict)
        _, options = parse_options_header(headers.get("content-disposition", ""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        self._in_part = True
        return PartInfo(
            name=name,
            filename=filename.decode("utf-8", "replace") if filename is not None else None,
            content_type=headers.get("content-type"),
            headers=headers,
        )

    async def chunks(self) -> AsyncIterator[bytes]:
        """The current part's bytes, as they arrive."""
        while self._in_part:
            event = await self._next_event()
            if event is None or event[0] == "end":
                self._in_part = False
                return
            if event[0] == "data":
                data = event[1]
                assert isinstance(data, bytes)
                yield data

    async def read_field(self) -> str:
        """The current part as a small text value (at most 64 KiB)."""
        value = bytearray()
        async for chunk in self.chunks():
            value += chunk
            if len(value) > MAX_FIELD_BYTES:
                raise BadRequest("form field too large", code="field_too_large")
        return value.decode("utf-8", "replace")

    async def _skip_part(self) -> None:
        async for _ in self.chunks():
            pass
