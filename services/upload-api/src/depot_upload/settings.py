"""upload-api settings: the shared ``DEPOT_*`` ones plus this service's tunables."""

from __future__ import annotations

from pydantic import Field

from depot_common.settings import MIB, DepotSettings
from depot_upload.faults import CrashPoint


class UploadSettings(DepotSettings):
    max_upload_bytes: int = Field(default=100 * MIB, gt=0)
    upload_ttl: int = Field(
        default=3600, gt=0, le=7 * 24 * 3600, description="seconds a pending upload (and its presigned URLs) may live"
    )
    part_size: int = Field(default=8 * MIB, ge=5 * MIB, description="S3 multipart part size")
    http_port: int = Field(default=8000, gt=0, lt=65536)
    documents_partitions: int = Field(default=6, gt=0)
    download_url_ttl: int = Field(default=300, gt=0, description="seconds a presigned download URL lives")
    batch_max_files: int = Field(default=100, gt=0, description="files accepted by one batch upload")
    idempotency_retention: int = Field(default=86400, gt=0, description="seconds Idempotency-Key records are kept")
    quarantine_retention: int = Field(
        default=7 * 24 * 3600, gt=0, description="seconds quarantined orphan objects are kept before the purge"
    )
    quarantine_purge_interval: int = Field(default=3600, gt=0, description="seconds between quarantine purges")
    compensations_group: str = "depot-upload-compensations"
    consumer_session_timeout: int = Field(
        default=6, gt=0, description="seconds before the broker considers a silent consumer dead"
    )
    crash_at: CrashPoint | None = Field(default=None, description="fault injection for tests only")
