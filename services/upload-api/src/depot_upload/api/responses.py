"""What every upload-api route shares in its OpenAPI entry: the error body and its statuses."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorOut(BaseModel):
    error: str
    message: str


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of an authenticated route that can fail with ``codes`` (401 always)."""
    return {code: {"model": ErrorOut} for code in (401, *codes)}
