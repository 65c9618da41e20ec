"""One error hierarchy for every Depot service.

Each error carries the HTTP status it renders as, a stable machine-readable ``code``
and whether retrying the same operation may succeed (``retriable``), so HTTP handlers
and Kafka consumers make the same decision from the same class::

    DepotError
    ├── BadRequest (400)
    │   └── InvalidFilename (400, invalid_filename)
    ├── Unauthorized (401)
    ├── Forbidden (403)
    ├── NotFound (404)
    ├── Conflict (409)
    │   └── Duplicate (409, duplicate)
    ├── Gone (410)
    ├── PayloadTooLarge (413)
    ├── Unprocessable (422)
    ├── ConfigurationError (500, never retriable)
    └── Unavailable (503, retriable) — a dependency (PostgreSQL, S3, Kafka) failed
"""

from __future__ import annotations

from typing import Any, ClassVar


class DepotError(Exception):
    """Base of every error Depot raises on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    retriable: ClassVar[bool] = False

    def __init__(self, message: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]
        self.extra = extra
        self.headers: dict[str, str] = {}

    def to_dict(self) -> dict[str, Any]:
        """The JSON body SPEC §4 prescribes: ``{"error", "message", ...extra}``."""
        return {"error": self.code, "message": self.message, **self.extra}


class BadRequest(DepotError):
    status = 400
    code = "bad_request"


class InvalidFilename(BadRequest):
    code = "invalid_filename"


class Unauthorized(DepotError):
    status = 401
    code = "unauthorized"


class Forbidden(DepotError):
    status = 403
    code = "forbidden"


class NotFound(DepotError):
    status = 404
    code = "not_found"


class Conflict(DepotError):
    status = 409
    code = "conflict"


class Duplicate(Conflict):
    code = "duplicate"


class Gone(DepotError):
    status = 410
    code = "gone"


class PayloadTooLarge(DepotError):
    status = 413
    code = "payload_too_large"


class Unprocessable(DepotError):
    status = 422
    code = "unprocessable"


class ConfigurationError(DepotError):
    code = "configuration_error"


class Unavailable(DepotError):
    status = 503
    code = "unavailable"
    retriable = True
