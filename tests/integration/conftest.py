"""Services of Depot running in the test process, against the session's real servers."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import asyncpg
import pytest

from depot_common.consumer import EventConsumer
from depot_common.db import create_pool, migrate
from depot_common.outbox import OutboxRelay
from depot_common.relay_producer import make_relay_producer
from depot_common.s3 import s3_client
from depot_devstack import servers
from depot_indexer.bootstrap import MIGRATIONS as SEARCH_MIGRATIONS
from depot_indexer.bootstrap import build_app as build_search_app
from depot_indexer.bootstrap import indexer_consumer
from depot_indexer.repository import SCHEMA as SEARCH_SCHEMA
from depot_indexer.settings import IndexerSettings
from depot_upload.bootstrap import build_app
from depot_upload.settings import UploadSettings
from tests.conftest import background, serve

MIB = 1024 * 1024


@pytest.fixture(scope="session")
def upload_settings(make_settings: Callable[..., Any]) -> UploadSettings:
    settings: UploadSettings = make_settings(UploadSettings, max_upload_bytes=12 * MIB, part_size=5 * MIB)
    return settings


@pytest.fixture(scope="session")
async def upload_api(upload_settings: UploadSettings) -> AsyncIterator[str]:
    """Base URL of a running upload API."""
    async with serve(build_app(upload_settings)) as url:
        yield url


@pytest.fixture(scope="session")
async def pg_pool(upload_api: str, database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the session database (after the upload API migrated it)."""
    pool = await create_pool(database_url, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def s3(upload_settings: UploadSettings) -> AsyncIterator[Any]:
    async with s3_client(upload_settings) as client:
        yield client


@pytest.fixture(scope="session")
async def relay(upload_api: str, upload_settings: UploadSettings) -> AsyncIterator[OutboxRelay]:
    """The upload outbox relay, publishing for the whole session."""
    producer = make_relay_producer(upload_settings.kafka_servers)
    await producer.start()
    outbox_relay = OutboxRelay(dsn=upload_settings.database_url, schema="upload", producer=producer, poll_interval=0.2)
    async with background(outbox_relay.run()):
        yield outbox_relay
    await producer.stop()


@pytest.fixture(scope="session")
def indexer_settings(make_settings: Callable[..., Any]) -> IndexerSettings:
    settings: IndexerSettings = make_settings(IndexerSettings, consumer_session_timeout=2)
    return settings


@pytest.fixture(scope="session")
async def indexer(relay: OutboxRelay, indexer_settings: IndexerSettings) -> AsyncIterator[EventConsumer]:
    """The indexer consuming depot.documents.v1 for the whole session (with the relay running)."""
    async with indexer_consumer(indexer_settings) as events, background(events.run()):
        yield events


@pytest.fixture(scope="session")
async def index_relay(indexer: EventConsumer, indexer_settings: IndexerSettings) -> AsyncIterator[OutboxRelay]:
    """The indexer's outbox relay (schema ``search`` → depot.index.v1), publishing for the whole session."""
    producer = make_relay_producer(indexer_settings.kafka_servers)
    await producer.start()
    outbox_relay = OutboxRelay(
        dsn=indexer_settings.database_url, schema=SEARCH_SCHEMA, producer=producer, poll_interval=0.2
    )
    async with background(outbox_relay.run()):
        yield outbox_relay
    await producer.stop()


@pytest.fixture(scope="session")
async def search_api(indexer_settings: IndexerSettings, upload_api: str) -> AsyncIterator[str]:
    """Base URL of a running search API."""
    async with serve(build_search_app(indexer_settings)) as url:
        yield url


@pytest.fixture(scope="module")
def index_database_url(postgres_admin_url: str) -> Iterator[str]:
    """A database of the test module's own, dropped at the end."""
    name = f"depot_idx_{secrets.token_hex(4)}"
    yield servers.recreate_database(postgres_admin_url, name)
    servers.drop_database(postgres_admin_url, name)


@pytest.fixture(scope="module")
async def index_pool(index_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the module's own database, with the search schema migrated."""
    db = await create_pool(index_database_url, max_size=4)
    try:
        await migrate(db, SEARCH_SCHEMA, SEARCH_MIGRATIONS)
        yield db
    finally:
        await db.close()
