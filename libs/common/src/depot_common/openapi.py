"""OpenAPI entries that tell the truth: every status an operation can answer, with its body and headers.

Two halves, so an endpoint added later is documented without anyone remembering to:

- ``raises(*errors)`` turns the ``DepotError`` classes an operation raises on purpose into
  its ``responses=`` mapping (the error body of docs/api.md, one entry per status, the codes
  listed in the description);
- ``complete_openapi(app)`` adds what follows from how an operation is built, to every
  operation: 401 when it takes a bearer token, 403 when it needs the admin role
  (``AdminBearer``), 404 when its path has an id, 400 ``invalid_json`` when it takes a JSON
  body, 422 when it takes parameters or a body, and 503
  ``dependency_unavailable`` with ``Retry-After`` on every ``/v1`` operation (each one
  touches PostgreSQL, S3 or Kafka).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict

from depot_common import errors
from depot_common.errors import DepotError

Responses = dict[int | str, dict[str, Any]]

_REF = "#/components/schemas/ErrorOut"
_RETRY_AFTER = {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
_WWW_AUTHENTICATE = {"description": "`Bearer`", "schema": {"type": "string"}}


class ErrorOut(BaseModel):
    """The error body of every Depot API (docs/api.md): a stable code, a human message, and details per code."""

    model_config = ConfigDict(extra="allow")

    error: str
    message: str


def _codes(error: type[DepotError]) -> list[str]:
    return [error.code]


def raises(*raised: type[DepotError], **codes: Iterable[str]) -> Responses:
    """The ``responses=`` of an operation that raises ``raised`` (codes by status name may be added).

    ``raises(errors.NotFound, errors.Conflict, conflict=["not_uploaded"])`` documents 404 and
    409 with the ``ErrorOut`` body; the descriptions name the codes a client can see.
    """
    by_status: dict[int, list[str]] = {}
    for error in raised:
        by_status.setdefault(error.status, []).extend(_codes(error))
    for name, extra in codes.items():
        status = getattr(errors, "".join(part.capitalize() for part in name.split("_"))).status
        by_status.setdefault(status, []).extend(extra)
    return {status: _error_entry(names) for status, names in sorted(by_status.items())}


def _error_entry(codes: Iterable[str], headers: dict[str, Any] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "model": ErrorOut,
        "description": "Error: " + ", ".join(f"`{code}`" for code in dict.fromkeys(codes)),
    }
    if headers:
        entry["headers"] = headers
    return entry


ADMIN_SCHEME = "AdminBearer"


def _implied(path: str, operation: dict[str, Any]) -> Responses:
    """The statuses an operation can answer because of how it is built, whatever its handler does."""
    schemes = {name for requirement in operation.get("security", []) for name in requirement}
    body = operation.get("requestBody", {}).get("content", {})
    implied: Responses = {}
    if schemes:
        implied[401] = _error_entry(["missing_token", "invalid_token"], {"WWW-Authenticate": _WWW_AUTHENTICATE})
    if ADMIN_SCHEME in schemes:
        implied[403] = _error_entry(["forbidden"])
    if any(parameter.get("in") == "path" for parameter in operation.get("parameters", [])):
        implied[404] = _error_entry(["not_found"])
    if "application/json" in body:
        implied[400] = _error_entry(["invalid_json"])
    if operation.get("parameters") or body:
        implied[422] = _error_entry(["validation_error"])
    if path.startswith("/v1/"):
        implied[503] = _error_entry(["dependency_unavailable"], {"Retry-After": _RETRY_AFTER})
    return implied


def _merge(entry: dict[str, Any], implied: dict[str, Any]) -> dict[str, Any]:
    """``entry`` (what the route declared) completed with ``implied``, as OpenAPI JSON."""
    description = implied["description"]
    if entry and entry.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref") == _REF:
        description = entry["description"]  # declared with ``raises``: it names the codes already
    merged = {**entry, "description": description, "content": {"application/json": {"schema": {"$ref": _REF}}}}
    if "headers" in implied:
        merged["headers"] = {**entry.get("headers", {}), **implied["headers"]}
    return merged


def complete_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` document, on every operation, the statuses its construction implies.

    Read from the generated document itself (security requirements, path parameters,
    request bodies, the ``/v1`` prefix), so routes added later are covered with no list to keep.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = generate()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for path, operations in document.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                for status, entry in _implied(path, operation).items():
                    responses[str(status)] = _merge(responses.get(str(status), {}), _as_json(entry))
        schemas["ErrorOut"] = ErrorOut.model_json_schema()
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _as_json(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if key != "model"}
