"""The CloudEvents 1.0 envelope (structured JSON mode) every Depot event travels in."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

CONTENT_TYPE = "application/cloudevents+json"

D = TypeVar("D", bound=BaseModel)


class CloudEvent(BaseModel, Generic[D]):
    """A CloudEvents 1.0 event; ``data`` is one of the models in ``depot_common.events``."""

    model_config = ConfigDict(frozen=True)

    specversion: str = "1.0"
    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    source: str
    type: str
    subject: str
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    datacontenttype: str = "application/json"
    data: D


class RawCloudEvent(CloudEvent[Any]):
    """An envelope whose ``data`` has not been validated against its type yet."""


def encode(event: CloudEvent[Any]) -> bytes:
    """Serialize an event for a Kafka value."""
    return event.model_dump_json().encode()
