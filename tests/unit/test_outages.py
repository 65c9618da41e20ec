"""Telling a dependency outage from a fault: the one mapping of driver exceptions (depot_common.outages)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import asyncpg
import obstore
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, RequestTimedOutError, TopicAuthorizationFailedError
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from confluent_kafka import KafkaError as LibrdkafkaError
from confluent_kafka import KafkaException

from depot_common.errors import BadRequest, DependencyUnavailable, Unavailable
from depot_common.outages import dependency_unavailable
from depot_common.s3 import object_store
from depot_common.settings import DepotSettings
from depot_devstack import servers


def s3_error(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


def wrapped(cause: BaseException) -> Unavailable:
    try:
        raise Unavailable("S3 GetObject failed") from cause
    except Unavailable as error:
        return error


@pytest.mark.parametrize(
    ("error", "dependency"),
    [
        (asyncpg.CannotConnectNowError("the database system is starting up"), "postgresql"),
        (asyncpg.AdminShutdownError("terminating connection due to administrator command"), "postgresql"),
        (asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"), "postgresql"),
        (asyncpg.TooManyConnectionsError("sorry, too many clients already"), "postgresql"),
        (asyncpg.InterfaceError("connection is closed"), "postgresql"),
        (s3_error(503, "SlowDown"), "s3"),
        (s3_error(500, "InternalError"), "s3"),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), "s3"),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), "s3"),
        (wrapped(s3_error(503, "ServiceUnavailable")), "s3"),
        (KafkaConnectionError("no broker"), "kafka"),
        (KafkaTimeoutError(), "kafka"),
        (RequestTimedOutError(), "kafka"),
        (KafkaException(LibrdkafkaError(LibrdkafkaError._MSG_TIMED_OUT)), "kafka"),  # the relay's producer
        (KafkaException(LibrdkafkaError(LibrdkafkaError._ALL_BROKERS_DOWN)), "kafka"),
        (KafkaException(LibrdkafkaError(LibrdkafkaError._TRANSPORT)), "kafka"),
        (DependencyUnavailable("s3"), "s3"),
    ],
)
def test_outages_name_their_dependency(error: BaseException, dependency: str) -> None:
    """A driver's 'down, refused, starting up, timed out, 5xx' becomes DependencyUnavailable naming the dependency."""
    outage = dependency_unavailable(error)
    assert outage is not None
    assert outage.dependency == dependency
    assert outage.status == 503
    assert outage.code == "dependency_unavailable"
    assert outage.retriable
    assert outage.headers["Retry-After"].isdigit()
    assert outage.to_dict()["dependency"] == dependency


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.UniqueViolationError("duplicate key value violates unique constraint"),
        asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        s3_error(404, "NoSuchKey"),
        s3_error(403, "AccessDenied"),
        wrapped(s3_error(400, "InvalidArgument")),
        TopicAuthorizationFailedError(),
        KafkaException(LibrdkafkaError(LibrdkafkaError.TOPIC_AUTHORIZATION_FAILED)),
        KafkaException(LibrdkafkaError(LibrdkafkaError.MSG_SIZE_TOO_LARGE)),
        BadRequest("never acceptable"),
        Unavailable("always down"),
        ValueError("a bug"),
        FileNotFoundError(2, "No such file or directory"),
    ],
)
def test_faults_are_not_outages(error: BaseException) -> None:
    """Constraint violations, 4xx answers, our own decisions and bugs are faults, never outages."""
    assert dependency_unavailable(error) is None


async def test_a_refused_postgresql_connection_is_a_postgresql_outage() -> None:
    """A real ConnectionRefusedError from asyncpg (an OSError) is attributed to PostgreSQL by where it came from."""
    port = servers.free_port()
    with pytest.raises(ConnectionRefusedError) as caught:
        await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", timeout=5)
    outage = dependency_unavailable(caught.value)
    assert outage is not None
    assert outage.dependency == "postgresql"


def test_an_oserror_outside_any_driver_is_a_fault() -> None:
    """An OSError raised by our own code (not inside a driver) is not an outage."""
    with pytest.raises(FileNotFoundError) as caught:
        open("/nonexistent/depot")  # noqa: SIM115
    assert dependency_unavailable(caught.value) is None


# --- obstore (the upload API's single-object PUT): real errors from local servers ----------------


def store_at(endpoint: str, *, timeout: int = 1) -> obstore.store.S3Store:
    settings = DepotSettings(
        database_url="postgresql://127.0.0.1/unused",
        kafka_bootstrap="127.0.0.1:9092",
        s3_bucket="outages",
        s3_endpoint=endpoint,
        s3_timeout=timeout,
        jwt_secret="unused-unused-unused-unused-unused",  # type: ignore[arg-type]
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
    )
    return object_store(settings)


@contextlib.asynccontextmanager
async def s3_answering(status_line: bytes | None) -> AsyncIterator[tuple[str, list[int]]]:
    """A local server that answers every request with ``status_line`` (``None``: reads it and never answers);
    yields its endpoint and the count of requests it got."""
    requests: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
            0,
        )
        await reader.readexactly(length)
        requests.append(length)
        if status_line is None:
            await asyncio.sleep(30)
        else:
            writer.write(b"HTTP/1.1 " + status_line + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", requests
    finally:
        server.close()


async def failed_put(endpoint: str) -> tuple[BaseException, float]:
    started = time.monotonic()
    with pytest.raises(obstore.exceptions.BaseError) as caught:
        await obstore.put_async(store_at(endpoint), "documents/x", b"x" * 1024, mode="create", use_multipart=False)
    return caught.value, time.monotonic() - started


async def test_obstore_refused_connection_is_an_s3_outage_after_3_attempts_not_minutes() -> None:
    """A closed port: obstore's GenericError (kind: Connect) is an S3 outage, raised after 2 retries, at once."""
    error, elapsed = await failed_put(f"http://127.0.0.1:{servers.free_port()}")
    outage = dependency_unavailable(wrapped(error))
    assert outage is not None, error
    assert outage.dependency == "s3"
    assert "retries: 2" in str(error)
    assert elapsed < 5


async def test_obstore_timeout_is_an_s3_outage_within_the_configured_timeout() -> None:
    """A server that takes the request and never answers (moto under SIGSTOP): a timeout after ``s3_timeout``
    (1 s here), an S3 outage; the PUT is not sent again (a timeout of an unsafe request is not retried)."""
    async with s3_answering(None) as (endpoint, requests):
        error, elapsed = await failed_put(endpoint)
    outage = dependency_unavailable(error)
    assert outage is not None, error
    assert outage.dependency == "s3"
    assert 0.9 < elapsed < 3, elapsed
    assert requests == [1024]


async def test_obstore_5xx_is_an_s3_outage_after_3_attempts() -> None:
    """503 on every attempt: an S3 outage once the retries are spent (3 requests in all)."""
    async with s3_answering(b"503 Service Unavailable") as (endpoint, requests):
        error, _ = await failed_put(endpoint)
    outage = dependency_unavailable(wrapped(error))
    assert outage is not None, error
    assert outage.dependency == "s3"
    assert len(requests) == 3


async def test_obstore_4xx_is_a_fault_not_an_outage() -> None:
    """403 (wrong keys, a policy) is not an outage: never a 503 dependency_unavailable."""
    async with s3_answering(b"403 Forbidden") as (endpoint, requests):
        error, _ = await failed_put(endpoint)
    assert dependency_unavailable(wrapped(error)) is None, error
    assert len(requests) == 1
