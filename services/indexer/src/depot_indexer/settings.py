"""indexer settings: the shared ``DEPOT_*`` ones plus this service's tunables."""

from __future__ import annotations

from pydantic import Field

from depot_common.settings import MIB, DepotSettings


class IndexerSettings(DepotSettings):
    """Configuration of ``depot-indexer serve|consume`` (README "Configuration", docs/api.md "Search API")."""

    http_port: int = Field(default=8001, gt=0, lt=65536)
    consumer_group: str = Field(default="depot-indexer", min_length=1)
    index_max_object_bytes: int = Field(
        default=20 * MIB, gt=0, description="bytes of an object read from S3 for text extraction"
    )
    index_max_text_chars: int = Field(
        default=1_000_000, gt=0, description="characters of extracted text kept per document"
    )
    documents_partitions: int = Field(default=6, gt=0)
    consumer_session_timeout: int = Field(
        default=6, ge=1, description="seconds before the broker considers a silent consumer dead"
    )
