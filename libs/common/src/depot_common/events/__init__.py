"""Event contracts: the CloudEvent envelope and the data model of every event type."""

from depot_common.events.documents import (
    DOCUMENTS_TOPIC,
    DocumentDeleted,
    DocumentFailed,
    DocumentStored,
)
from depot_common.events.envelope import CONTENT_TYPE, CloudEvent, RawCloudEvent, encode

#: Every event type Depot publishes, by its CloudEvents ``type``.
EVENT_TYPES = {
    "document.stored": DocumentStored,
    "document.deleted": DocumentDeleted,
    "document.failed": DocumentFailed,
}

__all__ = [
    "CONTENT_TYPE",
    "DOCUMENTS_TOPIC",
    "EVENT_TYPES",
    "CloudEvent",
    "DocumentDeleted",
    "DocumentFailed",
    "DocumentStored",
    "RawCloudEvent",
    "encode",
]
