"""The outbox relay as a process: what each service's ``relay`` command (upload, indexer, reconciler) runs.

librdkafka (:mod:`depot_common.relay_producer`) is loaded when the command runs, not when a service's
wiring imports this module: the HTTP servers and consumers never load it (~14 MiB of RSS each).
"""

from __future__ import annotations

from depot_common import kafka
from depot_common.db import MigrationSource, create_pool, migrate
from depot_common.faults import CrashPoints
from depot_common.lifecycle import run_until_signalled
from depot_common.ops import ops_endpoints
from depot_common.outbox import OutboxRelay
from depot_common.settings import DepotSettings


async def run_outbox_relay(
    settings: DepotSettings,
    *,
    schema: str,
    migrations: MigrationSource,
    topic: str,
    partitions: int,
    title: str,
) -> None:
    """Migrate ``schema``, make sure ``topic`` exists, and publish the outbox until SIGINT/SIGTERM."""
    pool = await create_pool(settings.database_url, max_size=2)
    try:
        await migrate(pool, schema, migrations)
    finally:
        await pool.close()
    await kafka.ensure_topics(settings.kafka_servers, {topic: partitions})
    from depot_common.relay_producer import make_relay_producer

    producer = make_relay_producer(settings.kafka_servers)
    await producer.start()
    relay = OutboxRelay(
        dsn=settings.database_url,
        schema=schema,
        producer=producer,
        batch_size=settings.relay_batch_size,
        poll_interval=settings.relay_poll_interval,
        crash_points=CrashPoints(settings.crash_at),
    )
    try:
        async with ops_endpoints(settings, port=settings.ops_port, host=settings.http_host, title=title):
            await run_until_signalled(relay.run())
    finally:
        await producer.stop()
