"""Routes ``GET /v1/search`` and ``GET /v1/index/entries``: translate HTTP into repository queries, nothing more."""

from __future__ import annotations

import uuid
from datetime import datetime
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


class IndexedOut(BaseModel):
    document_id: uuid.UUID
    version: int = Field(description="the document version the index holds")
    indexed_at: datetime
    extraction_failure: str | None = Field(
        description="why no text could be extracted (document.index_failed's reason): the document is findable by"
        " filename only; null when its text is indexed"
    )


class IndexedPage(BaseModel):
    items: list[IndexedOut] = Field(description="the asked-for documents that are in the index, by document_id")


@router.get(
    "/index/entries",
    response_model=IndexedPage,
    summary="Which of the caller's documents are in the search index (the web console's indexed stage).",
)
async def index_entries(
    principal: CurrentPrincipal,
    pool: PoolDep,
    document_id: Annotated[
        list[uuid.UUID],
        Query(min_length=1, max_length=MAX_LIMIT, description="documents to look up (repeat the parameter)"),
    ],
) -> IndexedPage:
    """Documents not listed are not (or no longer) indexed, or are not the caller's."""
    entries = await repository.indexed_entries(pool, owner_id=principal.owner_id, document_ids=document_id)
    return IndexedPage(
        items=[
            IndexedOut(
                document_id=e.document_id,
                version=e.version,
                indexed_at=e.indexed_at,
                extraction_failure=e.extraction_failure,
            )
            for e in entries
        ]
    )
