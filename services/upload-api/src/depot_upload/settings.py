"""upload-api settings: the shared ``DEPOT_*`` ones plus this service's tunables."""

from __future__ import annotations

from pydantic import Field

from depot_common.settings import MIB, DepotSettings


class UploadSettings(DepotSettings):
    max_upload_bytes: int = Field(default=100 * MIB, gt=0)
    upload_ttl: int = Field(default=3600, gt=0, description="seconds a pending upload may live")
    part_size: int = Field(default=8 * MIB, ge=5 * MIB, description="S3 multipart part size")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, gt=0, lt=65536)
    relay_batch_size: int = Field(default=500, gt=0)
    relay_poll_interval: int = Field(default=1, gt=0, description="seconds between outbox polls")
    outbox_retention: int = Field(default=3600, ge=0, description="seconds published events are kept")
    documents_partitions: int = Field(default=6, gt=0)
