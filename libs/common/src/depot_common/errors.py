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
        └── DependencyUnavailable (503, dependency_unavailable) — it is down: wait it out

``depot_common.outages.dependency_unavailable`` maps the drivers' own exceptions (asyncpg,
botocore, aiokafka, OSError) to :class:`DependencyUnavailable`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

#: What a :class:`DependencyUnavailable` names.
Dependency = Literal["postgresql", "s3", "kafka"]


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


class DependencyUnavailable(Unavailable):
    """A dependency is down or unreachable (SPEC §4): answer 503 with ``Retry-After``; a consumer pauses and
    waits it out without spending the message's retries (SPEC §5)."""

    code = "dependency_unavailable"

    def __init__(self, dependency: Dependency, message: str | None = None, *, retry_after: int = 5) -> None:
        super().__init__(message or f"{dependency} is unavailable; retry later", dependency=dependency)
        self.dependency = dependency
        self.headers["Retry-After"] = str(retry_after)
