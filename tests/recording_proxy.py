"""An HTTP reverse proxy in front of S3 that records every request it forwards, so a test can replay them.

Point a service's ``DEPOT_S3_ENDPOINT`` at it: the service's own S3 calls and the presigned
URLs it hands out (which then name the proxy's host) both pass through, and each request
is kept exactly as sent: method, URL, headers and body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

#: Connection-level headers the proxy does not pass on (httpx and uvicorn set their own).
_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "expect", "keep-alive"}
#: The response's Content-Length is passed on: a HEAD answer names the object's size.
_RESPONSE_HOP_BY_HOP = _HOP_BY_HOP - {"content-length"}


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes
    status: int

    def header_map(self) -> dict[str, str]:
        """The end-to-end headers, ready to send again."""
        return {name: value for name, value in self.headers if name.lower() not in _HOP_BY_HOP}

    @property
    def changes_state(self) -> bool:
        return self.method not in ("GET", "HEAD")


class RecordingProxy:
    """An ASGI app forwarding every request to ``target`` and appending it to ``requests``."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self._client = httpx.AsyncClient(timeout=60)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self._client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["raw_path"].decode()
        query = scope["query_string"].decode()
        target = f"{path}?{query}" if query else path
        headers = [(name.decode(), value.decode()) for name, value in scope["headers"]]
        forwarded = {name: value for name, value in headers if name.lower() not in _HOP_BY_HOP}
        response = await self._client.request(
            scope["method"], self.target + target, headers=forwarded, content=bytes(body)
        )
        self.requests.append(
            RecordedRequest(scope["method"], self.base_url + target, headers, bytes(body), response.status_code)
        )
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [
                    (name.encode(), value.encode())
                    for name, value in response.headers.items()
                    if name.lower() not in _RESPONSE_HOP_BY_HOP
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.content})
