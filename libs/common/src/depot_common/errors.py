"""One error hierarchy for every Depot service.

Each error carries the HTTP status it renders as, a stable machine-readable ``code``
and whether retrying the same operation may succeed (``retriable``), so HTTP handlers
and Kafka consumers make the same decision from the same class. The one handler in
:mod:`depot_common.web` renders every one of them as the JSON body of docs/api.md ("Errors"); nothing maps
errors to HTTP by hand. The tree, with the modules that define the service-specific
errors (``status, code``; retriable marked)::

    DepotError (500, internal_error)
    ├── BadRequest (400, bad_request)
    │   ├── InvalidFilename (400, invalid_filename)
    │   └── depot_common.cursor.InvalidCursor (400, invalid_cursor)
    ├── Unauthorized (401, unauthorized)
    ├── Forbidden (403, forbidden)
    ├── NotFound (404, not_found)
    │   ├── depot_reconciler.apply.RunNotFound (404, not_found)
    │   └── depot_common.dlq.MessageNotFound (404, dlq_message_not_found) — also a DlqError
    ├── Conflict (409, conflict)
    │   ├── Duplicate (409, duplicate)
    │   ├── depot_upload.documents.ports.IdempotencyKeyTaken (409, idempotency_key_taken, retriable)
    │   ├── depot_reconciler.plan.RunInProgress (409, run_in_progress, retriable)
    │   ├── depot_reconciler.apply.RunNotPlanned (409, not_planned | already_applied)
    │   └── depot_reconciler.apply.SafetyStop (409, safety_stop)
    ├── Gone (410, gone)
    ├── PayloadTooLarge (413, payload_too_large)
    ├── Unprocessable (422, unprocessable)
    │   └── depot_reconciler.checks.UnknownCheck (422, unknown_check)
    ├── ConfigurationError (500, configuration_error)
    ├── depot_upload.documents.service.ContentMismatch (500, content_mismatch) — a download's bytes differ
    ├── depot_common.dlq.DlqError (500, dlq_error) — a ``depot dlq`` command failed (exit 2)
    │   └── MessageNotFound (above; exit 1)
    └── Unavailable (503, unavailable, retriable) — a dependency (PostgreSQL, S3, Kafka) failed
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
        """The error body of docs/api.md: ``{"error", "message", ...extra}``."""
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
    """A dependency is down or unreachable (docs/api.md): answer 503 with ``Retry-After``; a consumer pauses and
    waits it out without spending the message's retries (docs/events.md)."""

    code = "dependency_unavailable"

    def __init__(self, dependency: Dependency, message: str | None = None, *, retry_after: int = 5) -> None:
        super().__init__(message or f"{dependency} is unavailable; retry later", dependency=dependency)
        self.dependency = dependency
        self.headers["Retry-After"] = str(retry_after)
