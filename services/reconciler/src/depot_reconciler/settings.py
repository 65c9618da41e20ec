"""Reconciler settings: the shared ``DEPOT_*`` ones plus the reconcile tunables (docs/reconciler.md)."""

from __future__ import annotations

from pydantic import Field

from depot_common.settings import DepotSettings


class ReconcilerSettings(DepotSettings):
    reconcile_grace: int = Field(default=900, ge=0, description="seconds a new object may live without a document")
    upload_ttl: int = Field(default=3600, gt=0, description="seconds a pending upload may live (as upload-api)")
    reconcile_index_lag: int = Field(default=60, ge=0, description="seconds a change may take to reach the index")
    reconcile_outbox_allowance: int = Field(default=300, ge=0, description="seconds an event may stay unpublished")
    reconcile_max_fraction: float = Field(default=0.05, gt=0, le=1, description="safety stop share of the bucket")
    quarantine_retention: int = Field(default=7 * 24 * 3600, gt=0, description="seconds quarantined objects are kept")
    reconcile_interval: int = Field(default=3600, ge=0, description="seconds between scheduled runs (0: none)")
    reconcile_verify_bytes_per_s: int = Field(
        default=50 * 1024 * 1024, gt=0, description="bytes per second content verification reads at most"
    )
    reconcile_schedule_verify_sample: float = Field(
        default=0.0, ge=0, le=1, description="share of stored documents each scheduled run verifies (0: none)"
    )
    reconcile_schedule_apply: bool = Field(default=False, description="scheduled runs apply their plan")
    http_port: int = Field(default=8002, gt=0, lt=65536)
    compensations_partitions: int = Field(default=6, gt=0)
    page_size: int = Field(default=1000, gt=0, le=1000, description="rows or objects read per page while scanning")
