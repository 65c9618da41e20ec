"""Telling a dependency outage from a fault: the one mapping of driver exceptions (depot_common.outages)."""

from __future__ import annotations

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, RequestTimedOutError, TopicAuthorizationFailedError
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from confluent_kafka import KafkaError as LibrdkafkaError
from confluent_kafka import KafkaException

from depot_common.errors import BadRequest, DependencyUnavailable, Unavailable
from depot_common.outages import dependency_unavailable
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
