"""The one place that wires the indexer: settings → adapters → handlers → entry points."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from importlib.resources import files
from typing import Any

import structlog
from fastapi import FastAPI

from depot_common.consumer import EventConsumer, running_consumer
from depot_common.db import Migrations, create_pool, keep_session, migrate
from depot_common.events import COMPENSATIONS_TOPIC, DOCUMENTS_TOPIC, INDEX_TOPIC, Service, ignored_by
from depot_common.health import dependency_checks
from depot_common.lifecycle import run_until_signalled
from depot_common.ops import ops_endpoints
from depot_common.outbox import outbox_ddl, outbox_upgrade_ddl
from depot_common.relay_process import run_outbox_relay
from depot_common.resources import service_resources
from depot_common.s3 import object_store
from depot_common.web import create_app
from depot_indexer.documents_source import UploadDocumentsView
from depot_indexer.endpoints import router
from depot_indexer.handlers import build_handlers
from depot_indexer.repository import SCHEMA
from depot_indexer.settings import IndexerSettings
from depot_indexer.storage import S3BlobReader

__all__ = ["CONSUMED_TOPICS", "MIGRATIONS", "build_app", "indexer_consumer", "run_consumer", "run_relay"]

log = structlog.get_logger(__name__)

#: Schema ``search``: the package's SQL files, and the outbox table ``depot_common.outbox`` defines.
MIGRATIONS = Migrations(
    files("depot_indexer") / "migrations",
    {"0002_outbox.sql": outbox_ddl(SCHEMA), "0004_outbox_json.sql": outbox_upgrade_ddl(SCHEMA)},
)
#: The topics the indexer's consumer reads; it executes its types of them and skips the rest.
CONSUMED_TOPICS = (DOCUMENTS_TOPIC, COMPENSATIONS_TOPIC)


def build_app(settings: IndexerSettings) -> FastAPI:
    """The search API as an ASGI app; its resources live for the app's lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Mapping[str, Any]]:
        async with service_resources(app, settings, schema=SCHEMA, migrations=MIGRATIONS, pool_size=10):
            log.info("indexer_api.started")
            yield {}

    app = create_app(
        title="Depot search",
        description="Full-text search over your documents, kept in step with uploads by events.",
        lifespan=lifespan,
        readiness=dependency_checks(settings),
        allowed_origins=settings.allowed_origins,
    )
    app.include_router(router)
    return app


@contextlib.asynccontextmanager
async def indexer_consumer(settings: IndexerSettings) -> AsyncIterator[EventConsumer]:
    """The indexer's started consumer of the documents and compensations topics; stopped on exit."""
    # migrations lock per transaction, handlers leave no session state: releasing sends no reset query
    pool = await create_pool(settings.database_url, max_size=settings.documents_partitions + 2, reset=keep_session)
    try:
        await migrate(pool, SCHEMA, MIGRATIONS)
        handlers = build_handlers(
            S3BlobReader(object_store(settings)),
            UploadDocumentsView(),
            max_object_bytes=settings.index_max_object_bytes,
            max_text_chars=settings.index_max_text_chars,
        )
        async with running_consumer(
            bootstrap=settings.kafka_servers,
            topics=dict.fromkeys(CONSUMED_TOPICS, settings.documents_partitions),
            group=settings.consumer_group,
            session_timeout=settings.consumer_session_timeout,
            pool=pool,
            schema=SCHEMA,
            handlers=handlers,
            ignored_types=ignored_by(Service.INDEXER, CONSUMED_TOPICS),
            replica_id=settings.replica_id,
        ) as events:
            yield events
    finally:
        await pool.close()


async def run_consumer(settings: IndexerSettings) -> None:
    """Index ``depot.documents.v1`` until SIGINT/SIGTERM (graceful: finish, commit, exit)."""
    ops = ops_endpoints(
        settings, port=settings.ops_port, host=settings.http_host, title="Depot indexer consumer", worker=True
    )
    async with ops as readiness, indexer_consumer(settings) as events:
        readiness.attach(events)
        log.info("indexer_consumer.started", group=settings.consumer_group)
        await run_until_signalled(events.run(), on_signal=events.stop)


async def run_relay(settings: IndexerSettings) -> None:
    """Publish the ``search`` outbox (``document.indexed|index_failed``) to ``depot.index.v1`` until SIGINT/SIGTERM."""
    await run_outbox_relay(
        settings,
        schema=SCHEMA,
        migrations=MIGRATIONS,
        topic=INDEX_TOPIC,
        partitions=settings.documents_partitions,
        title="Depot indexer outbox relay",
    )
