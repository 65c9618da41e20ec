"""The one place that wires upload-api: settings → adapters → service → entry points."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator, Iterator, Mapping
from functools import partial
from importlib.resources import files
from typing import Any

import structlog
from fastapi import FastAPI

from depot_common.consumer import EventConsumer, running_consumer
from depot_common.db import Migrations, create_pool, keep_session, migrate
from depot_common.events import COMPENSATIONS_TOPIC, DOCUMENTS_TOPIC, Service, ignored_by
from depot_common.faults import CrashPoints
from depot_common.health import dependency_checks
from depot_common.lifecycle import background_task, every, run_until_signalled
from depot_common.ops import ops_endpoints
from depot_common.outbox import outbox_upgrade_ddl
from depot_common.relay_process import run_outbox_relay
from depot_common.resources import service_resources
from depot_common.s3 import allow_browser_uploads, ensure_bucket, object_store, s3_client
from depot_common.web import create_app
from depot_upload.compensations.service import Compensations
from depot_upload.compensations.storage import S3CompensationObjects
from depot_upload.console import ConsoleConfig, mount_console
from depot_upload.documents.endpoints import router as documents_router
from depot_upload.documents.repository import SCHEMA, PostgresDocuments
from depot_upload.documents.service import UploadService
from depot_upload.documents.storage import S3BlobStore
from depot_upload.events_stream.endpoints import router as events_router
from depot_upload.events_stream.feed import KafkaFeed
from depot_upload.events_stream.service import EventHub
from depot_upload.pipeline.endpoints import router as pipeline_router
from depot_upload.pipeline.offsets import KafkaOffsets
from depot_upload.pipeline.repository import PostgresOutboxes
from depot_upload.pipeline.service import PipelineHealth
from depot_upload.postgres import PostgresUnitOfWork
from depot_upload.presigned.completion import UploadCompletion
from depot_upload.presigned.endpoints import router as uploads_router
from depot_upload.presigned.repository import PostgresUploadSessions
from depot_upload.presigned.service import PresignedUploads
from depot_upload.presigned.storage import S3PresignStore
from depot_upload.settings import UploadSettings

log = structlog.get_logger(__name__)

MIGRATIONS = Migrations(files("depot_upload") / "migrations", {"0006_outbox_json.sql": outbox_upgrade_ddl(SCHEMA)})
#: Allocations between two collections of the youngest generation (CPython's default: 700).
YOUNG_COLLECTION_THRESHOLD = 10_000
#: The topics the compensation worker reads; it executes upload-api's types of them and skips the rest.
COMPENSATION_TOPICS = (COMPENSATIONS_TOPIC,)


def build_app(settings: UploadSettings) -> FastAPI:
    """The upload API as an ASGI app; its resources live for the app's lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Mapping[str, Any]]:
        # the API's queries leave no session state: releasing a connection sends no reset query
        resources = service_resources(
            app, settings, schema=SCHEMA, migrations=MIGRATIONS, pool_size=20, reset=keep_session
        )
        async with resources as (pool, s3):
            await ensure_bucket(s3, settings.s3_bucket)
            if settings.s3_cors_origins:
                await allow_browser_uploads(s3, settings.s3_bucket, settings.s3_cors_origins)
            documents = PostgresDocuments(pool)
            uow = partial(PostgresUnitOfWork, pool)
            crash_points = CrashPoints(settings.crash_at)
            app.state.service = UploadService(
                documents=documents,
                uow=uow,
                blobs=S3BlobStore(
                    s3,
                    object_store(settings),
                    bucket=settings.s3_bucket,
                    part_size=settings.part_size,
                    crash_points=crash_points,
                ),
                max_upload_bytes=settings.max_upload_bytes,
                download_url_ttl=settings.download_url_ttl,
                crash_points=crash_points,
            )
            app.state.batch_max_files = settings.batch_max_files
            sessions = PostgresUploadSessions(pool)
            presign_store = S3PresignStore(s3, bucket=settings.s3_bucket)
            app.state.presigned = PresignedUploads(
                sessions=sessions,
                store=presign_store,
                documents=documents,
                uow=uow,
                max_upload_bytes=settings.max_upload_bytes,
                part_size=settings.part_size,
                ttl_seconds=settings.upload_ttl,
                crash_points=crash_points,
            )
            app.state.completion = UploadCompletion(
                sessions=sessions, store=presign_store, documents=documents, uow=uow, crash_points=crash_points
            )
            app.state.pipeline = PipelineHealth(
                PostgresOutboxes(pool), KafkaOffsets(settings.kafka_servers), consumers=settings.pipeline_pairs
            )
            app.state.event_hub = hub = EventHub(capacity=settings.events_client_buffer)
            app.state.events_heartbeat_interval = settings.events_heartbeat_interval
            feed = KafkaFeed(hub, settings.kafka_servers, partitions=settings.documents_partitions)
            log.info("upload_api.started")
            purge = partial(documents.purge_idempotency_keys, settings.idempotency_retention)
            async with (
                background_task(every(300, purge, name="idempotency.purge")),
                background_task(feed.run()),
            ):
                with long_lived_start_up():
                    yield {}

    app = create_app(
        title="Depot upload API",
        description="Upload, read and delete documents. Bytes go to S3, metadata to PostgreSQL.",
        lifespan=lifespan,
        readiness=dependency_checks(settings),
        allowed_origins=settings.allowed_origins,
    )
    app.include_router(documents_router)
    app.include_router(uploads_router)
    app.include_router(events_router)
    app.include_router(pipeline_router)
    mount_console(
        app,
        ConsoleConfig(
            search_url=settings.public_search_url,
            reconciler_url=settings.public_reconciler_url,
            s3_endpoint=settings.s3_endpoint,
            part_size=settings.part_size,
            max_upload_bytes=settings.max_upload_bytes,
        ),
    )
    return app


@contextlib.contextmanager
def long_lived_start_up() -> Iterator[None]:
    """What start-up allocated (modules, pydantic's schemas, botocore's models) lives as long as the process:
    frozen out of the collector's sight, so a full collection no longer walks it; and the youngest generation,
    whose collections walk the requests in flight, collected every :data:`YOUNG_COLLECTION_THRESHOLD`
    allocations (docs/architecture.md, "Where the other ~1 ms went"). Undone on exit (an app served in-process)."""
    threshold = gc.get_threshold()
    gc.collect()  # start-up's garbage is not frozen with it
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


async def run_relay(settings: UploadSettings) -> None:
    """Publish the ``upload`` outbox to ``depot.documents.v1`` until SIGINT/SIGTERM."""
    await run_outbox_relay(
        settings,
        schema=SCHEMA,
        migrations=MIGRATIONS,
        topic=DOCUMENTS_TOPIC,
        partitions=settings.documents_partitions,
        title="Depot outbox relay",
    )


@contextlib.asynccontextmanager
async def compensation_consumer(settings: UploadSettings) -> AsyncIterator[tuple[EventConsumer, Compensations]]:
    """The started consumer of upload-api's compensations (and the handlers, for the purge); stopped on exit."""
    # per partition in flight: the consumer's inbox connection and the handler's unit of work
    pool = await create_pool(settings.database_url, max_size=2 * settings.documents_partitions + 2)
    try:
        await migrate(pool, SCHEMA, MIGRATIONS)
        async with s3_client(settings) as s3:
            compensations = Compensations(
                partial(PostgresUnitOfWork, pool),
                S3CompensationObjects(s3, bucket=settings.s3_bucket),
                quarantine_retention=settings.quarantine_retention,
                upload_ttl=settings.upload_ttl,
                crash_points=CrashPoints(settings.crash_at),
            )
            async with running_consumer(
                bootstrap=settings.kafka_servers,
                topics=dict.fromkeys(COMPENSATION_TOPICS, settings.documents_partitions),
                group=settings.compensations_group,
                session_timeout=settings.consumer_session_timeout,
                pool=pool,
                schema=SCHEMA,
                handlers=compensations.handlers(),
                ignored_types=ignored_by(Service.UPLOAD_API, COMPENSATION_TOPICS),
                replica_id=settings.replica_id,
            ) as events:
                yield events, compensations
    finally:
        await pool.close()


async def run_compensations(settings: UploadSettings) -> None:
    """Execute upload-api's compensations and purge the quarantine until SIGINT/SIGTERM."""
    ops = ops_endpoints(
        settings, port=settings.ops_port, host=settings.http_host, title="Depot compensation worker", worker=True
    )
    async with ops as readiness, compensation_consumer(settings) as (events, compensations):
        readiness.attach(events)
        purge = every(settings.quarantine_purge_interval, compensations.purge_quarantine, name="quarantine.purge")
        async with background_task(purge):
            log.info("compensations.started", group=settings.compensations_group)
            await run_until_signalled(events.run(), on_signal=events.stop)
