"""Hand-made multipart bodies, so tests control every byte of a part's headers."""

from __future__ import annotations

import secrets


def multipart(
    parts: list[tuple[str, str | None, bytes]], *, content_type: str = "text/plain"
) -> tuple[bytes, dict[str, str]]:
    """A ``multipart/form-data`` body of ``(field, filename, data)`` parts, and its headers."""
    boundary = secrets.token_hex(12)
    body = bytearray()
    for field, filename, data in parts:
        disposition = f'form-data; name="{field}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        body += f"Content-Type: {content_type}\r\n\r\n".encode()
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return bytes(body), {"Content-Type": f"multipart/form-data; boundary={boundary}"}
