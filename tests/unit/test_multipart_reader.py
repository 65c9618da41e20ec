"""The streaming multipart reader yields the exact bytes of each part, however the body is chunked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depot_common.errors import BadRequest, Unprocessable
from depot_upload.api.multipart import MultipartReader, boundary_of
from tests.multipart import multipart


async def chunked(body: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    position = 0
    for size in sizes:
        yield body[position : position + size]
        position += size
    if position < len(body):
        yield body[position:]


async def read_all(body: bytes, content_type: str, sizes: list[int]) -> list[tuple[str, str | None, bytes]]:
    reader = MultipartReader(chunked(body, sizes), boundary_of(content_type))
    parts = []
    while (part := await reader.next_part()) is not None:
        data = b"".join([chunk async for chunk in reader.chunks()])
        parts.append((part.name, part.filename, data))
    return parts


@settings(max_examples=200, deadline=None)
@given(
    files=st.lists(
        st.tuples(st.sampled_from(["file", "files", "x"]), st.binary(max_size=3000)), min_size=1, max_size=4
    ),
    sizes=st.lists(st.integers(min_value=1, max_value=700), max_size=60),
)
def test_parts_survive_any_chunking(files: list[tuple[str, bytes]], sizes: list[int]) -> None:
    """Whatever the chunk boundaries, every part comes back with its name, filename and exact bytes."""
    parts = [(name, f"f{i}.bin", data) for i, (name, data) in enumerate(files)]
    body, headers = multipart(parts)
    assert asyncio.run(read_all(body, headers["Content-Type"], sizes)) == parts


def test_utf8_filenames_are_decoded() -> None:
    """A UTF-8 filename in Content-Disposition comes back as the same text."""
    body, headers = multipart([("file", "résumé.pdf", b"x")])
    assert asyncio.run(read_all(body, headers["Content-Type"], [7])) == [("file", "résumé.pdf", b"x")]


def test_a_body_cut_short_is_a_bad_request() -> None:
    """A body that ends before its closing boundary raises 400 malformed_multipart."""
    body, headers = multipart([("file", "a.txt", b"hello world")])
    with pytest.raises(BadRequest) as raised:
        asyncio.run(read_all(body[:-20], headers["Content-Type"], [5]))
    assert raised.value.code == "malformed_multipart"


@pytest.mark.parametrize("content_type", [None, "application/json", "multipart/form-data", "text/plain; boundary=x"])
def test_non_multipart_content_types_are_422(content_type: str | None) -> None:
    """Without multipart/form-data and a boundary there is no file part: 422 missing_file."""
    with pytest.raises(Unprocessable) as raised:
        boundary_of(content_type)
    assert raised.value.code == "missing_file"
