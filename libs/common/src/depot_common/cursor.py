"""Opaque page cursors for keyset pagination, one codec for every Depot API.

A cursor is the position after the last item of a page, as a small JSON object encoded
as unpadded URL-safe base64, so clients treat it as an opaque token. Each API declares
its position's fields once (``dump`` and ``load``); anything that does not decode back
to a position — garbage, truncated or edited tokens, wrong field types — is a 400
``invalid_cursor`` (:class:`InvalidCursor`), never a 500.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from depot_common.errors import BadRequest

P = TypeVar("P")

#: Longest token any codec accepts (the APIs' query parameters allow no more).
MAX_LENGTH = 512


class InvalidCursor(BadRequest):
    """The cursor is not one this API returned (400)."""

    code = "invalid_cursor"


@dataclass(frozen=True)
class CursorCodec(Generic[P]):
    """Encodes a page position ``P`` as an opaque token and decodes it back.

    ``dump`` gives the position's JSON fields; ``load`` rebuilds the position from them and
    raises ``ValueError``, ``TypeError``, ``KeyError`` or ``AttributeError`` when they are wrong.
    """

    dump: Callable[[P], dict[str, Any]]
    load: Callable[[dict[str, Any]], P]

    def encode(self, position: P) -> str:
        raw = json.dumps(self.dump(position), separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def decode(self, token: str) -> P:
        """The position ``token`` encodes; :class:`InvalidCursor` for anything this codec did not issue."""
        try:
            if len(token) > MAX_LENGTH:
                raise ValueError("cursor too long")
            fields = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            if not isinstance(fields, dict):
                raise TypeError("a cursor is a JSON object")
            return self.load(fields)
        except (ValueError, TypeError, KeyError, AttributeError):  # binascii, Unicode and JSON errors are ValueErrors
            raise InvalidCursor("cursor is not one this API returned") from None


def timestamp_field(value: Any) -> datetime:
    """A cursor field holding an ISO 8601 timestamp with its UTC offset (``ValueError`` otherwise)."""
    if not isinstance(value, str):
        raise TypeError("a timestamp field is a string")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("a timestamp field carries its UTC offset")
    return parsed


def uuid_field(value: Any) -> uuid.UUID:
    """A cursor field holding a UUID (``ValueError`` or ``TypeError`` otherwise)."""
    if not isinstance(value, str):
        raise TypeError("a UUID field is a string")
    return uuid.UUID(value)
