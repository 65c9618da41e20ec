"""``depot-reconciler relay``: publish ``reconcile.outbox`` (the compensations) to Kafka."""

from __future__ import annotations

from depot_common.events import COMPENSATIONS_TOPIC
from depot_common.relay_process import run_outbox_relay
from depot_reconciler.bootstrap import MIGRATIONS, SCHEMA
from depot_reconciler.settings import ReconcilerSettings


async def run_relay(settings: ReconcilerSettings) -> None:
    """Publish the ``reconcile`` outbox to ``depot.compensations.v1`` until SIGINT/SIGTERM."""
    await run_outbox_relay(
        settings,
        schema=SCHEMA,
        migrations=MIGRATIONS,
        topic=COMPENSATIONS_TOPIC,
        partitions=settings.compensations_partitions,
        title="Depot reconcile outbox relay",
    )
