"""What every upload-api route shares in its OpenAPI entry: the error body and its statuses."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorOut(BaseModel):
    error: str
    message: str


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of an authenticated route that can fail with ``codes`` (401 always, and 503
    ``dependency_unavailable`` always: every route needs PostgreSQL)."""
    return {code: {"model": ErrorOut} for code in sorted({401, 503, *codes})}
