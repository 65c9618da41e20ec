"""The HTTP skeleton every Depot service shares.

``create_app`` returns a FastAPI app with: the error body of docs/api.md for every error, an
``X-Request-ID`` echoed or generated and bound to every log line, the W3C trace context,
CORS, request metrics, and ``/healthz``, ``/readyz`` and ``/metrics``. ``CurrentPrincipal``
and ``AdminPrincipal`` are the bearer-token dependencies.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from depot_common import tracing
from depot_common.auth import Principal, TokenVerifier
from depot_common.errors import DependencyUnavailable, DepotError, Forbidden, Unauthorized
from depot_common.openapi import ADMIN_SCHEME, complete_openapi
from depot_common.outages import DRIVER_ERRORS, dependency_unavailable

log = structlog.get_logger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

REQUESTS = Counter("depot_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("depot_http_request_duration_seconds", "HTTP request latency", ["method", "route"])

ReadinessCheck = Callable[[], Awaitable[bool]]


class RequestContextMiddleware:
    """Binds request id and trace context for the request, and records its metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        incoming = headers.get(REQUEST_ID_HEADER.lower(), "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (REQUEST_ID_HEADER.encode(), request_id.encode()),
                    (b"traceparent", (tracing.current_traceparent() or "").encode()),
                ]
            await send(message)

        started = time.perf_counter()
        with (
            tracing.request_trace(headers.get("traceparent")),
            structlog.contextvars.bound_contextvars(request_id=request_id),
        ):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - started
                route = getattr(scope.get("route"), "path", "unmatched")
                REQUESTS.labels(scope["method"], route, str(status)).inc()
                LATENCY.labels(scope["method"], route).observe(elapsed)
                log.info(
                    "http.request",
                    method=scope["method"],
                    route=route,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )


def error_response(error: DepotError, request: Request) -> JSONResponse:
    headers = dict(error.headers)
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error.to_dict(), status_code=error.status, headers=headers)


async def _depot_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, DepotError)
    if error.status >= 500:
        outage = dependency_unavailable(error)  # an adapter's Unavailable may wrap a dependency that is down
        if outage is not None:
            return _outage_response(outage, request)
        log.error("http.error", code=error.code, error=error.message)
    return error_response(error, request)


async def _driver_error(request: Request, error: Exception) -> JSONResponse:
    """A driver's exception: 503 ``dependency_unavailable`` when its dependency is down, a bug (500) otherwise."""
    outage = dependency_unavailable(error)
    if outage is None:
        return await _unexpected_error(request, error)
    return _outage_response(outage, request)


def _outage_response(outage: DependencyUnavailable, request: Request) -> JSONResponse:
    cause = outage.__cause__ or outage
    log.warning("http.dependency_unavailable", dependency=outage.dependency, error=repr(cause))
    return error_response(outage, request)


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    if any(item.get("type") == "json_invalid" for item in error.errors()):
        return JSONResponse({"error": "invalid_json", "message": "the request body is not valid JSON"}, status_code=400)
    details = [{"loc": list(item.get("loc", ())), "msg": item.get("msg", "")} for item in error.errors()]
    message = "; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in details)
    return JSONResponse({"error": "validation_error", "message": message, "details": details}, status_code=422)


# the only 400 FastAPI raises itself: a request body it could not parse
_HTTP_ERROR_CODES = {400: "invalid_json", 404: "not_found", 405: "method_not_allowed"}


def allowed_methods(app: Any, scope: Scope) -> list[str]:
    """Every method some route of ``app`` answers at the request's path (several routes may share a path)."""
    methods: set[str] = set()
    for route in app.routes:
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches({**scope, "method": next(iter(route_methods))})[0] == Match.FULL:
            methods |= route_methods
    return sorted(methods)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    code = _HTTP_ERROR_CODES.get(error.status_code, "http_error")
    headers = dict(getattr(error, "headers", None) or {})
    if error.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request.app, request.scope))
    message = "the request body is not valid JSON" if code == "invalid_json" else str(error.detail)
    return JSONResponse({"error": code, "message": message}, status_code=error.status_code, headers=headers)


#: nginx's "client closed request": what the request log and metrics record when nobody is left to answer
CLIENT_CLOSED_REQUEST = 499


async def _client_disconnected(request: Request, error: Exception) -> Response:
    """The client went away before its request body was read (a timeout, a cancelled upload): not a server
    error. What the request had started is undone by the code that was reading the body."""
    log.info("http.client_disconnected")
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    log.error("http.unhandled_error", exc_info=error)
    request_id = request.scope.get("state", {}).get("request_id", "")
    return JSONResponse(
        {"error": "internal_error", "message": "internal error", "request_id": request_id},
        status_code=500,
        headers={REQUEST_ID_HEADER: request_id},
    )


def create_app(
    *,
    title: str,
    description: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Mapping[str, Any]]],
    readiness: Callable[[Request], Mapping[str, ReadinessCheck]],
    allowed_origins: list[str],
) -> FastAPI:
    """A FastAPI app with Depot's error format, request context, CORS and health routes."""
    app = FastAPI(title=title, description=description, lifespan=lifespan, version="0.1.0")
    app.add_exception_handler(DepotError, _depot_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for driver_error in DRIVER_ERRORS:
        app.add_exception_handler(driver_error, _driver_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnected)
    app.add_exception_handler(Exception, _unexpected_error)
    if allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=allowed_origins,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", REQUEST_ID_HEADER],
            expose_headers=["Location", REQUEST_ID_HEADER],
        )
    app.add_middleware(RequestContextMiddleware)
    tracing.instrument_app(app)

    @app.get("/healthz", tags=["ops"], summary="The process is alive.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["ops"],
        summary="Every dependency is reachable.",
        responses={503: {"description": "A dependency is unreachable (same body, `status: unavailable`)."}},
    )
    async def readyz(request: Request) -> JSONResponse:
        async def run(name: str, check: ReadinessCheck) -> bool:
            try:
                return await check()
            except Exception as error:  # a failing dependency is a "not ready", not a 500
                log.warning("readyz.check_failed", dependency=name, error=repr(error))
                return False

        checks = readiness(request)
        outcomes = await asyncio.gather(*(run(name, check) for name, check in checks.items()))
        results = dict(zip(checks, outcomes, strict=True))
        ready = all(results.values())
        return JSONResponse(
            {"status": "ready" if ready else "unavailable", "checks": results},
            status_code=200 if ready else 503,
        )

    @app.get(
        "/metrics",
        tags=["ops"],
        summary="Prometheus metrics.",
        response_class=PlainTextResponse,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    complete_openapi(app)
    return app


_bearer = HTTPBearer(auto_error=False)


async def current_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """The caller of a ``/v1`` endpoint, from ``Authorization: Bearer <JWT>`` (401 otherwise)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token", code="missing_token")
    verifier: TokenVerifier = request.app.state.token_verifier
    principal = await verifier.verify(credentials.credentials)
    structlog.contextvars.bind_contextvars(owner_id=principal.owner_id)
    return principal


_admin_bearer = HTTPBearer(
    auto_error=False, scheme_name=ADMIN_SCHEME, description="A bearer token whose roles include `admin`."
)


async def admin_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)]
) -> Principal:
    """The caller, who must hold the ``admin`` role (401 without a valid token, 403 without the role)."""
    principal = await current_principal(request, credentials)
    if not principal.is_admin:
        raise Forbidden("admin role required")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
AdminPrincipal = Annotated[Principal, Depends(admin_principal)]
