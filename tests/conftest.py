"""Fixtures that give every test real servers over the network.

Each server comes from, in order: an environment variable (``DEPOT_DATABASE_URL``,
``DEPOT_KAFKA_BOOTSTRAP``, ``DEPOT_S3_ENDPOINT``); a local process we start (PostgreSQL on
127.0.0.1:5432 or a private cluster, tansu, moto); or, where a Docker engine is reachable
and no local binary is, a testcontainers container. Every test session works in its own
PostgreSQL database and its own S3 bucket, and stops every process it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from pydantic_settings import BaseSettings

from depot_common.auth import mint_token
from depot_common.lifecycle import background_task
from depot_devstack import servers

S = TypeVar("S", bound=BaseSettings)


def _docker_reachable() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def postgres_admin_url(stack_dir: Path) -> Iterator[str]:
    """A PostgreSQL server on which the session may create databases."""
    given = os.environ.get("DEPOT_DATABASE_URL")
    if given:
        yield given
        return
    if servers.port_open("127.0.0.1", 5432):
        yield servers.LOCAL_POSTGRES
        return
    if _docker_reachable():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    process, url = servers.start_private_postgres(stack_dir / "pgdata", stack_dir)
    try:
        yield url
    finally:
        process.stop()


@pytest.fixture(scope="session")
def database_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh database for this test session, dropped at the end."""
    name = f"depot_test_{secrets.token_hex(4)}"
    url = servers.recreate_database(postgres_admin_url, name)
    yield url
    servers.drop_database(postgres_admin_url, name)


@pytest.fixture(scope="session")
def kafka_bootstrap(stack_dir: Path) -> Iterator[str]:
    """A Kafka-protocol broker."""
    given = os.environ.get("DEPOT_KAFKA_BOOTSTRAP")
    if given:
        yield given
        return
    try:
        process, bootstrap = servers.start_tansu(stack_dir)
    except servers.StackError:
        if not _docker_reachable():
            raise
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as container:
            yield container.get_bootstrap_server()
        return
    try:
        yield bootstrap
    finally:
        process.stop()


@pytest.fixture(scope="session")
def s3_endpoint(stack_dir: Path) -> Iterator[str]:
    """An S3-protocol endpoint."""
    given = os.environ.get("DEPOT_S3_ENDPOINT")
    if given:
        yield given
        return
    process, endpoint = servers.start_moto(stack_dir)
    try:
        yield endpoint
    finally:
        process.stop()


@pytest.fixture(scope="session")
def stack_env(database_url: str, kafka_bootstrap: str, s3_endpoint: str) -> dict[str, str]:
    """The environment a Depot service of this test session runs with."""
    return {
        "DEPOT_DATABASE_URL": database_url,
        "DEPOT_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "DEPOT_S3_ENDPOINT": s3_endpoint,
        "DEPOT_S3_BUCKET": f"depot-test-{secrets.token_hex(4)}",
        "DEPOT_S3_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "depot-test"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "depot-test-secret"),
        "DEPOT_JWT_SECRET": secrets.token_urlsafe(32),
        "DEPOT_LOG_FORMAT": "console",
    }


@contextlib.contextmanager
def patched_environ(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def make_settings(stack_env: dict[str, str]) -> Callable[..., Any]:
    """Build a settings class from the stack environment plus ``DEPOT_*`` overrides."""

    def build(cls: type[S], **overrides: Any) -> S:
        extra = {f"DEPOT_{key.upper()}": str(value) for key, value in overrides.items()}
        with patched_environ({**stack_env, **extra}):
            return cls()

    return build


@pytest.fixture(scope="session")
def token(stack_env: dict[str, str]) -> Callable[..., str]:
    """Mint a bearer token for an owner."""

    def mint(owner: str, *, admin: bool = False, ttl: int = 3600) -> str:
        return mint_token(stack_env["DEPOT_JWT_SECRET"], owner, admin=admin, ttl=ttl)

    return mint


@pytest.fixture(scope="session")
def auth(token: Callable[..., str]) -> Callable[..., dict[str, str]]:
    """``Authorization`` headers for an owner."""

    def headers(owner: str, *, admin: bool = False) -> dict[str, str]:
        return {"Authorization": f"Bearer {token(owner, admin=admin)}"}

    return headers


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Run an ASGI app with uvicorn on a free loopback port; yield its base URL."""
    port = servers.free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server stopped during start-up")
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


background = background_task


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client
