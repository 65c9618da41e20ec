"""JSON shape of ``GET /v1/admin/pipeline`` (README "Pipeline health")."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True, populate_by_name=True)


class OutboxOut(_Out):
    schema_name: str = Field(alias="schema", description="the owner's PostgreSQL schema")
    topic: str
    backlog: int | None = Field(description="unpublished events; null when unreadable")
    oldest_unpublished_age_s: float | None = Field(description="age of the oldest unpublished event (0 when none)")


class PartitionLagOut(_Out):
    partition: int
    committed: int | None = Field(description="the group's committed offset; null when it never committed here")
    end: int
    lag: int


class ConsumerOut(_Out):
    group: str
    topic: str
    lag: int | None = Field(description="sum of the partitions' lag; null when Kafka was unreadable")
    partitions: list[PartitionLagOut] | None


class DlqOut(_Out):
    topic: str = Field(description="<source_topic>.<group>.dlq")
    group: str
    source_topic: str
    messages: int | None = Field(description="messages the DLQ holds; null when unreadable")
    pending: int | None = Field(description="messages not redriven yet")


class PipelineOut(_Out):
    checked_at: datetime
    outboxes: list[OutboxOut]
    consumers: list[ConsumerOut]
    dlqs: list[DlqOut]
