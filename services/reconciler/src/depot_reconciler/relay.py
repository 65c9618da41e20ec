"""``depot-reconciler relay``: publish ``reconcile.outbox`` (the compensations) to Kafka."""

from __future__ import annotations

from depot_common import kafka
from depot_common.db import create_pool, migrate
from depot_common.events import COMPENSATIONS_TOPIC
from depot_common.lifecycle import run_until_signalled
from depot_common.ops import ops_endpoints
from depot_common.outbox import OutboxRelay
from depot_reconciler.bootstrap import MIGRATIONS, SCHEMA
from depot_reconciler.settings import ReconcilerSettings


async def run_relay(settings: ReconcilerSettings) -> None:
    """Publish the ``reconcile`` outbox to ``depot.compensations.v1`` until SIGINT/SIGTERM."""
    pool = await create_pool(settings.database_url, max_size=2)
    try:
        await migrate(pool, SCHEMA, MIGRATIONS)
    finally:
        await pool.close()
    await kafka.ensure_topics(settings.kafka_servers, {COMPENSATIONS_TOPIC: settings.compensations_partitions})
    producer = kafka.make_producer(settings.kafka_servers, linger_ms=0)  # the relay sends whole batches itself
    await producer.start()
    relay = OutboxRelay(
        dsn=settings.database_url,
        schema=SCHEMA,
        producer=producer,
        batch_size=settings.relay_batch_size,
        poll_interval=settings.relay_poll_interval,
        retention_seconds=settings.outbox_retention,
    )
    try:
        async with ops_endpoints(
            settings, port=settings.ops_port, host=settings.http_host, title="Depot reconcile outbox relay"
        ):
            await run_until_signalled(relay.run())
    finally:
        await producer.stop()
