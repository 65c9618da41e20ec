"""One error tree under DepotError: each error carries its status, code and retry policy, and one handler renders it."""

from __future__ import annotations

import importlib
import pkgutil
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import depot_common
import depot_indexer
import depot_reconciler
import depot_upload
from depot_common import errors
from depot_common.dlq import DlqError, MessageNotFound
from depot_common.errors import DepotError
from depot_common.web import create_app
from depot_reconciler.apply import RunNotFound, RunNotPlanned, SafetyStop
from depot_reconciler.checks import UnknownCheck
from depot_reconciler.plan import RunInProgress
from depot_upload.documents.ports import IdempotencyKeyTaken

#: (error, HTTP status, code, retriable, extra body fields)
CASES: list[tuple[DepotError, int, str, bool, dict[str, Any]]] = [
    (RunInProgress("another reconcile run is in progress"), 409, "run_in_progress", True, {}),
    (
        SafetyStop("too much", actionable=9, population=10, max_fraction=0.05),
        409,
        "safety_stop",
        False,
        {"actionable": 9, "population": 10, "max_fraction": 0.05},
    ),
    (RunNotPlanned("run is applied", run_status="applied"), 409, "already_applied", False, {"status": "applied"}),
    (RunNotPlanned("run is failed", run_status="failed"), 409, "not_planned", False, {"status": "failed"}),
    (RunNotFound("no reconcile run"), 404, "not_found", False, {}),
    (UnknownCheck("unknown checks: nope"), 422, "unknown_check", False, {}),
    (IdempotencyKeyTaken("taken"), 409, "idempotency_key_taken", True, {}),
    (DlqError("cannot reach Kafka"), 500, "dlq_error", False, {}),
    (MessageNotFound("no message at offset 7"), 404, "dlq_message_not_found", False, {}),
]


def _app(error: DepotError) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        yield {}

    app = create_app(title="t", description="t", lifespan=lifespan, readiness=lambda _: {}, allowed_origins=[])

    @app.get("/boom")
    async def boom() -> None:
        raise error

    return app


@pytest.mark.parametrize("case", CASES, ids=lambda case: type(case[0]).__name__ + ":" + case[2])
async def test_the_one_handler_renders_each_error_with_its_status_and_code(
    case: tuple[DepotError, int, str, bool, dict[str, Any]],
) -> None:
    """Raised from a route, the error becomes its status and docs/api.md's body (code, fields), by the one handler."""
    error, status, code, retriable, extra = case
    assert isinstance(error, DepotError)
    assert (error.status, error.code, error.retriable) == (status, code, retriable)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app(error)), base_url="http://t") as client:
        response = await client.get("/boom")
    assert response.status_code == status
    assert response.json() == {"error": code, "message": error.message, **extra}


def test_a_missing_dlq_message_is_both_a_dlq_error_and_a_not_found() -> None:
    """MessageNotFound is caught by ``except DlqError`` and renders as the common NotFound, shadowing nothing."""
    assert issubclass(MessageNotFound, DlqError)
    assert issubclass(MessageNotFound, errors.NotFound)
    assert MessageNotFound is not errors.NotFound


def _import_all(package: Any) -> None:
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)


def _subclasses(cls: type[DepotError]) -> set[type[DepotError]]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_the_tree_in_the_errors_docstring_names_every_depot_error() -> None:
    """Every DepotError subclass defined in Depot's packages appears in the tree drawn in errors.py's docstring."""
    for package in (depot_common, depot_upload, depot_indexer, depot_reconciler):
        _import_all(package)
    doc = errors.__doc__ or ""
    ours = {cls for cls in _subclasses(DepotError) if cls.__module__.startswith("depot_")}
    assert len(ours) >= len(CASES)
    assert sorted(cls.__name__ for cls in ours if f"{cls.__name__} (" not in doc) == []
