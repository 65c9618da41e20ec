"""Route ``GET /v1/search``: translate HTTP into a repository query, nothing more."""

from __future__ import annotations

import uuid
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from depot_common.cursor import InvalidCursor
from depot_common.openapi import raises
from depot_common.web import CurrentPrincipal
from depot_indexer import repository
from depot_indexer.domain import DEFAULT_LIMIT, MAX_LIMIT, Cursor

router = APIRouter(prefix="/v1", tags=["search"])


class HitOut(BaseModel):
    document_id: uuid.UUID
    filename: str
    snippet: str = Field(description="matching text; matches wrapped in <b>…</b>, the rest HTML-escaped")
    score: float


class SearchOut(BaseModel):
    hits: list[HitOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


def get_pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]


@router.get(
    "/search",
    response_model=SearchOut,
    responses=raises(InvalidCursor),
    summary="Full-text search over the caller's documents, best match first.",
)
async def search(
    principal: CurrentPrincipal,
    pool: PoolDep,
    q: Annotated[str, Query(max_length=1000, pattern=r"\S", description="web-search syntax (not blank)")],
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> SearchOut:
    """Words, "quoted phrases", `or` and `-excluded` words; filenames match too."""
    position = Cursor.decode(cursor) if cursor else None
    page = await repository.search(pool, owner_id=principal.owner_id, query=q, limit=limit, cursor=position)
    return SearchOut(
        hits=[
            HitOut(document_id=h.document_id, filename=h.filename, snippet=h.snippet, score=h.score) for h in page.hits
        ],
        next_cursor=page.next_cursor.encode() if page.next_cursor else None,
    )
