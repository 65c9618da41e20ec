"""Telling a dependency outage from a fault: the one mapping of the drivers' exceptions to
:class:`~depot_common.errors.DependencyUnavailable`.

An outage is PostgreSQL refusing or dropping connections, shutting down or starting up; S3
answering 5xx, timing out or unreachable; the broker unreachable or timing out. Anything
else (a constraint violation, a 4xx from S3, a bug) is not an outage: it is the request's
or the message's fault. HTTP services answer an outage with 503 ``dependency_unavailable``
and ``Retry-After``; consumers pause and wait it out (docs/api.md, docs/events.md).
"""

from __future__ import annotations

import re
import sys
from types import TracebackType

import aiohttp
import asyncpg
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from obstore.exceptions import BaseError as ObstoreError
from obstore.exceptions import GenericError as ObstoreGenericError

from depot_common.errors import Dependency, DependencyUnavailable, DepotError

#: The exception classes a driver raises, outage or not: HTTP services route them through
#: :func:`dependency_unavailable` (503) before treating them as bugs (500).
DRIVER_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    HTTPClientError,
    BotoConnectionError,
    ClientError,
    KafkaError,
    aiohttp.ClientError,
    ObstoreError,
)

_POSTGRES_OUTAGES: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # 08xxx: the connection failed or was lost mid-operation
    asyncpg.AdminShutdownError,  # 57P01: shutting down
    asyncpg.CrashShutdownError,  # 57P02: another backend crashed
    asyncpg.CannotConnectNowError,  # 57P03: starting up, in recovery
    asyncpg.InsufficientResourcesError,  # 53xxx: too many connections, disk full, out of memory
)
#: What asyncpg says when a connection died under a caller: PostgreSQL crashed or restarted between two
#: statements, so the pool detached the connection ("released back to the pool") or closed it.
_LOST_CONNECTION_MESSAGES = ("connection is closed", "connection has been released back to the pool")
_S3_OUTAGE_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503"})
#: obstore (the upload API's single PUT) raises one ``GenericError`` for every failure that has no class of its
#: own; only its text says what happened: ``kind: Connect`` (refused, unreachable), ``Request`` (reset while
#: sending), ``Timeout``, ``Interrupted`` (closed mid-answer), or the answer's ``status: 5xx`` after the retries.
_OBSTORE_OUTAGE = re.compile(r"\bkind: (?:Connect|Request|Timeout|Interrupted)\b|\bstatus: 5\d\d\b")
_DRIVER_MODULES: tuple[tuple[str, Dependency], ...] = (
    ("asyncpg", "postgresql"),
    ("aiobotocore", "s3"),
    ("botocore", "s3"),
    ("aiohttp", "s3"),
    ("aiokafka", "kafka"),
    ("confluent_kafka", "kafka"),
)


def dependency_unavailable(error: BaseException) -> DependencyUnavailable | None:
    """``error`` as a :class:`DependencyUnavailable` when it (or what caused it) says a dependency is down;
    ``None`` when it is any other failure."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = _classify(current)
        if found is not None:
            return found
        current = current.__cause__ or current.__context__
    return None


def _classify(error: BaseException) -> DependencyUnavailable | None:
    if isinstance(error, DependencyUnavailable):
        return error
    if isinstance(error, DepotError):
        return None  # a decision of ours; a wrapped outage is found through its cause
    dependency = _dependency_of(error)
    if dependency is None:
        return None
    outage = DependencyUnavailable(dependency)
    outage.__cause__ = error
    return outage


def _dependency_of(error: BaseException) -> Dependency | None:
    if isinstance(error, _POSTGRES_OUTAGES):
        return "postgresql"
    if isinstance(error, asyncpg.PostgresError):
        return None
    if isinstance(error, asyncpg.InterfaceError):
        return "postgresql" if any(text in str(error) for text in _LOST_CONNECTION_MESSAGES) else None
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = str(error.response.get("Error", {}).get("Code", ""))
        return "s3" if status >= 500 or code in _S3_OUTAGE_CODES else None
    if isinstance(
        error, HTTPClientError | BotoConnectionError | aiohttp.ClientConnectionError | aiohttp.ClientPayloadError
    ):
        return "s3"  # connection refused/closed, connect or read timeout
    if isinstance(error, ObstoreGenericError):
        return "s3" if _OBSTORE_OUTAGE.search(str(error)) else None
    if isinstance(error, KafkaConnectionError | KafkaTimeoutError):
        return "kafka"
    if isinstance(error, KafkaError):
        return "kafka" if error.retriable else None
    if "confluent_kafka" in sys.modules:  # an error of librdkafka's exists only where it was loaded (relays)
        from depot_common import relay_producer

        if (dependency := relay_producer.dependency_of(error)) is not None:
            return dependency
    if isinstance(error, OSError):  # refused, reset, timed out: whose socket was it?
        return _driver_in(error.__traceback__)
    return None


def _driver_in(traceback: TracebackType | None) -> Dependency | None:
    """The dependency whose driver the traceback went through (innermost first)."""
    modules: list[str] = []
    while traceback is not None:
        modules.append(str(traceback.tb_frame.f_globals.get("__name__", "")))
        traceback = traceback.tb_next
    for module in reversed(modules):
        for prefix, dependency in _DRIVER_MODULES:
            if module == prefix or module.startswith(prefix + "."):
                return dependency
    return None
