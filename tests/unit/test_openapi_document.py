"""The OpenAPI helper of depot_common: statuses implied by how an operation is built, and the answers behind them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import BaseModel

from depot_common.errors import Conflict, NotFound
from depot_common.openapi import raises
from depot_common.web import AdminPrincipal, CurrentPrincipal, create_app


class Body(BaseModel):
    name: str


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[Mapping[str, Any]]:
    yield {}


def _app() -> FastAPI:
    app = create_app(title="t", description="d", lifespan=_lifespan, readiness=lambda _: {}, allowed_origins=[])

    @app.get("/v1/things/{thing_id}", responses=raises(NotFound))
    async def get_thing(thing_id: str, _: CurrentPrincipal) -> dict[str, str]:
        return {"id": thing_id}

    @app.delete("/v1/things/{thing_id}", status_code=204)
    async def delete_thing(thing_id: str, _: CurrentPrincipal) -> None:
        return None

    @app.post("/v1/admin/things", responses=raises(Conflict, conflict=["thing_exists"]))
    async def create_thing(body: Body, _: AdminPrincipal) -> dict[str, str]:
        return {"name": body.name}

    return app


def test_every_operation_documents_the_statuses_its_construction_implies() -> None:
    """401 with a token, 403 with the admin role, 404 with a path id, 400/422 with a JSON body, 503 under /v1."""
    paths = _app().openapi()["paths"]
    read = paths["/v1/things/{thing_id}"]["get"]["responses"]
    create = paths["/v1/admin/things"]["post"]["responses"]
    assert set(read) == {"200", "401", "404", "422", "503"}
    assert set(create) == {"200", "400", "401", "403", "409", "422", "503"}
    for responses in (read, create):
        for status, entry in responses.items():
            if status != "200":
                assert entry["content"] == {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
    assert "Retry-After" in read["503"]["headers"]
    assert "WWW-Authenticate" in read["401"]["headers"]
    assert "`thing_exists`" in create["409"]["description"]
    assert "`invalid_json`" in create["400"]["description"]
    assert set(paths["/metrics"]["get"]["responses"]["200"]["content"]) <= {
        "text/plain",
        "text/plain; version=1.0.0; charset=utf-8",
    }


async def test_405_lists_every_method_of_the_resource() -> None:
    """An unsupported method on a path served by two routes answers 405 with both methods in `Allow`."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://t") as client:
        response = await client.options("/v1/things/1")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert {method.strip() for method in response.headers["allow"].split(",")} == {"GET", "DELETE"}


async def test_a_body_that_is_not_json_is_400_invalid_json() -> None:
    """A JSON operation given bytes that do not parse answers the documented 400 `invalid_json`, not a 422."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://t") as client:
        response = await client.post(
            "/v1/admin/things", content=b"{not json", headers={"Content-Type": "application/json"}
        )
    assert (response.status_code, response.json()["error"]) == (400, "invalid_json")
