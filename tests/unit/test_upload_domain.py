"""Rules on user input: filenames, content types, idempotency keys."""

from __future__ import annotations

import pytest

from depot_common.errors import BadRequest, InvalidFilename
from depot_upload.domain import normalize_content_type, validate_filename, validate_idempotency_key


@pytest.mark.parametrize("name", ["report.pdf", "résumé 2026.docx", "a b c", ".bashrc", "x" * 255, "日本語.txt"])
def test_ordinary_names_are_kept_as_given(name: str) -> None:
    """Names without separators, '..' or control characters pass unchanged."""
    assert validate_filename(name) == name


@pytest.mark.parametrize("name", [None, "", "  ", "a/b", "a\\b", "..", "a..b", "x\x00", "x\x1f", "x\x7f", "é" * 200])
def test_unsafe_names_are_refused(name: str | None) -> None:
    """Empty, separator, '..', control characters and over-long names raise InvalidFilename (400)."""
    with pytest.raises(InvalidFilename) as raised:
        validate_filename(name)
    assert raised.value.status == 400


@pytest.mark.parametrize(
    ("declared", "filename", "expected"),
    [
        ("text/plain; charset=utf-8", "a.bin", "text/plain"),
        ("TEXT/HTML", "a", "text/html"),
        (None, "a.pdf", "application/pdf"),
        ("application/octet-stream", "notes.md", "text/markdown"),
        ("not a type", "a.unknownext", "application/octet-stream"),
        ("text/plain\r\nX-Evil: 1", "a", "application/octet-stream"),
    ],
)
def test_content_types_are_normalized(declared: str | None, filename: str, expected: str) -> None:
    """Declared types are reduced to a safe type/subtype, else guessed from the name."""
    assert normalize_content_type(declared, filename) == expected


@pytest.mark.parametrize("key", ["", "has space", "tab\tkey", "é", "x" * 256])
def test_bad_idempotency_keys_are_refused(key: str) -> None:
    """Keys must be 1 to 255 printable ASCII characters without spaces."""
    with pytest.raises(BadRequest):
        validate_idempotency_key(key)
