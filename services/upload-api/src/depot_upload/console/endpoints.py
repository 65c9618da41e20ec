"""HTTP side of the web console: ``/`` (the page), ``/console/*`` (its files), ``/console/config.json``.

Every console response carries a Content-Security-Policy that allows scripts, styles and
connections from this origin only, plus the search and reconciler APIs and the S3 endpoint
the presigned URLs point at (``connect-src``), and WebAssembly compilation for hash-wasm
(``'wasm-unsafe-eval'``): no inline script or style, no framing, no forms posting away.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(__file__).parent / "static"
#: Where the presigned URLs point when ``DEPOT_S3_ENDPOINT`` is empty (AWS).
AWS_S3 = "https://*.amazonaws.com"


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url``."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class ConsoleConfig:
    """What the console learns from ``/console/config.json``, and what its CSP allows."""

    search_url: str
    reconciler_url: str
    s3_endpoint: str
    part_size: int
    max_upload_bytes: int

    def as_json(self) -> dict[str, str | int]:
        return {
            "search_url": self.search_url,
            "reconciler_url": self.reconciler_url,
            "part_size": self.part_size,
            "max_upload_bytes": self.max_upload_bytes,
        }

    def content_security_policy(self) -> str:
        connect = ["'self'", origin_of(self.s3_endpoint) if self.s3_endpoint else AWS_S3]
        connect += [origin_of(url) for url in (self.search_url, self.reconciler_url) if url]
        return "; ".join(
            [
                "default-src 'none'",
                "script-src 'self' 'wasm-unsafe-eval'",
                "style-src 'self'",
                "img-src 'self' data:",
                f"connect-src {' '.join(dict.fromkeys(connect))}",
                "base-uri 'none'",
                "form-action 'none'",
                "frame-ancestors 'none'",
            ]
        )

    def headers(self) -> dict[str, str]:
        return {
            "Content-Security-Policy": self.content_security_policy(),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        }


class _WithHeaders:
    """Adds fixed headers to every response of the wrapped ASGI app."""

    def __init__(self, app: ASGIApp, headers: dict[str, str]) -> None:
        self.app = app
        self.raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.raw]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def mount_console(app: FastAPI, config: ConsoleConfig) -> None:
    """Serve the console at ``/`` with its files under ``/console/`` (after every API route)."""
    headers = config.headers()

    @app.get("/", include_in_schema=False)
    async def console_page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=headers)

    @app.get("/console/config.json", tags=["console"], summary="Where the web console finds the other APIs.")
    async def console_config() -> JSONResponse:
        return JSONResponse(config.as_json(), headers=headers)

    app.mount("/console", _WithHeaders(StaticFiles(directory=STATIC), headers), name="console")
