"""One cursor codec for the three paged APIs: positions round-trip, anything else is the 400 invalid_cursor."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from depot_common.cursor import MAX_LENGTH, CursorCodec, InvalidCursor
from depot_indexer.domain import SEARCH_CURSOR, Cursor
from depot_reconciler.endpoints import RUNS_CURSOR
from depot_upload.documents.endpoints import PAGE_CURSOR
from depot_upload.domain import PageCursor

AT = datetime(2026, 3, 14, 10, 2, 11, 204000, tzinfo=UTC)
ID = uuid.UUID("0b6f3c1e-5a7d-4c2b-9e1f-2d8a6b4c7e90")
#: Each API's codec with a position it issues.
CODECS: dict[str, tuple[CursorCodec[Any], Any]] = {
    "documents": (PAGE_CURSOR, PageCursor(created_at=AT, id=ID)),
    "search": (SEARCH_CURSOR, Cursor(score=0.25, document_id=ID)),
    "runs": (RUNS_CURSOR, (AT, ID)),
}


def token(fields: Any) -> str:
    """A token as a client could forge it: any JSON, encoded the way cursors are."""
    return base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")


def tampered(codec: CursorCodec[Any], position: Any, **changes: Any) -> str:
    """A token the codec issued for ``position``, with fields edited or removed (``None`` removes)."""
    fields = codec.dump(position)
    for name, value in changes.items():
        if value is None:
            del fields[name]
        else:
            fields[name] = value
    return token(fields)


@pytest.mark.parametrize("api", CODECS)
def test_a_position_round_trips_through_its_opaque_token(api: str) -> None:
    """What a page hands out as next_cursor decodes back to the same position, and is URL-safe without padding."""
    codec, position = CODECS[api]
    issued = codec.encode(position)
    assert codec.decode(issued) == position
    assert set(issued) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


GARBAGE = [
    "garbage",  # not base64 of JSON
    "!!",  # not base64
    "",  # nothing
    "eyJ0IjogMX0",  # {"t": 1}: a field missing, another of the wrong type
    token([1, 2]),  # JSON, not an object
    token("text"),
    token({}),
    "A" * (MAX_LENGTH + 1),  # longer than any cursor
    base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(),  # not UTF-8
]


@pytest.mark.parametrize("api", CODECS)
@pytest.mark.parametrize("value", GARBAGE, ids=range(len(GARBAGE)))
def test_a_garbage_cursor_is_invalid_cursor(api: str, value: str) -> None:
    """A token no API issued is InvalidCursor: 400 invalid_cursor, never a 500."""
    codec, _ = CODECS[api]
    with pytest.raises(InvalidCursor) as caught:
        codec.decode(value)
    assert (caught.value.status, caught.value.code) == (400, "invalid_cursor")


TAMPERED: dict[str, list[dict[str, Any]]] = {
    "documents": [{"i": 5}, {"i": "not-a-uuid"}, {"t": "2026-03-14T10:02:11"}, {"t": 17}, {"i": None}],
    "search": [{"s": "high"}, {"s": True}, {"s": float("inf")}, {"d": 5}, {"d": "x"}, {"s": None}],
    "runs": [{"i": 5}, {"t": "yesterday"}, {"t": "2026-03-14"}, {"t": None}],
}


@pytest.mark.parametrize(("api", "changes"), [(api, c) for api, cases in TAMPERED.items() for c in cases])
def test_an_edited_cursor_is_invalid_cursor(api: str, changes: dict[str, Any]) -> None:
    """An issued cursor with a field edited to another type, a bad value or a naive time, or removed, is 400."""
    codec, position = CODECS[api]
    with pytest.raises(InvalidCursor):
        codec.decode(tampered(codec, position, **changes))


def test_a_cursor_issued_before_the_shared_codec_still_decodes() -> None:
    """Tokens the APIs issued before (JSON with spaces after separators) still decode: clients' cursors stay valid."""
    old = base64.urlsafe_b64encode(json.dumps({"t": AT.isoformat(), "i": str(ID)}).encode()).decode().rstrip("=")
    assert PAGE_CURSOR.decode(old) == PageCursor(created_at=AT, id=ID)
    assert RUNS_CURSOR.decode(old) == (AT, ID)
