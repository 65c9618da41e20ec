"""upload-api settings: the shared ``DEPOT_*`` ones plus this service's tunables."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from depot_common.settings import MIB, DepotSettings


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
    # the web console (README, "Web console"): where the browser finds the other public APIs (empty = this origin)
    public_search_url: str = Field(default="", description="search API as the browser reaches it")
    public_reconciler_url: str = Field(default="", description="reconciler API as the browser reaches it")
    s3_cors_origins: Annotated[list[str], NoDecode] = Field(
        default=[], description="origins whose pages PUT presigned parts straight to the bucket (bucket CORS)"
    )
    events_heartbeat_interval: int = Field(
        default=10, gt=0, le=15, description="seconds between GET /v1/events heartbeats when idle"
    )
    events_client_buffer: int = Field(
        default=512, gt=0, description="events queued per GET /v1/events stream; a client further behind is dropped"
    )
    pipeline_consumers: Annotated[list[str], NoDecode] = Field(
        default=[
            "depot.documents.v1:depot-indexer",
            "depot.compensations.v1:depot-indexer",
            "depot.compensations.v1:depot-upload-compensations",
        ],
        description="topic:group pairs whose lag and DLQ GET /v1/admin/pipeline reports (comma list)",
    )

    @field_validator("pipeline_consumers", mode="before")
    @classmethod
    def _topic_group_list(cls, value: object) -> object:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, list):
            for item in value:
                topic, _, group = str(item).partition(":")
                if not topic or not group:
                    raise ValueError(f"{item!r} is not topic:group")
        return value

    @property
    def pipeline_pairs(self) -> list[tuple[str, str]]:
        """``pipeline_consumers`` as ``(topic, group)`` pairs."""
        return [(item.partition(":")[0], item.partition(":")[2]) for item in self.pipeline_consumers]

    @field_validator("public_search_url", "public_reconciler_url")
    @classmethod
    def _origin_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL (or empty for the console's own origin)")
        return value.rstrip("/")

    @field_validator("s3_cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip().rstrip("/") for item in value.split(",") if item.strip()]
        return value
