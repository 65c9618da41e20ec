"""Event contracts: the CloudEvent envelope and the data model of every event type."""

from pydantic import BaseModel

from depot_common.events.compensations import (
    COMPENSATIONS_TOPIC,
    GhostIndexEntry,
    MissingBlob,
    OrphanObject,
    Reindex,
    StaleUpload,
)
from depot_common.events.documents import (
    DOCUMENTS_TOPIC,
    DocumentDeleted,
    DocumentFailed,
    DocumentStored,
)
from depot_common.events.envelope import CONTENT_TYPE, CloudEvent, RawCloudEvent, encode

#: Every event type Depot publishes, by its CloudEvents ``type``.
EVENT_TYPES: dict[str, type[BaseModel]] = {
    "document.stored": DocumentStored,
    "document.deleted": DocumentDeleted,
    "document.failed": DocumentFailed,
    "compensation.orphan_object": OrphanObject,
    "compensation.missing_blob": MissingBlob,
    "compensation.stale_upload": StaleUpload,
    "compensation.reindex": Reindex,
    "compensation.ghost_index_entry": GhostIndexEntry,
}

#: The topic each event type is published on.
TOPIC_OF: dict[str, str] = {
    name: DOCUMENTS_TOPIC if name.startswith("document.") else COMPENSATIONS_TOPIC for name in EVENT_TYPES
}

__all__ = [
    "COMPENSATIONS_TOPIC",
    "CONTENT_TYPE",
    "DOCUMENTS_TOPIC",
    "EVENT_TYPES",
    "TOPIC_OF",
    "CloudEvent",
    "DocumentDeleted",
    "DocumentFailed",
    "DocumentStored",
    "GhostIndexEntry",
    "MissingBlob",
    "OrphanObject",
    "RawCloudEvent",
    "Reindex",
    "StaleUpload",
    "encode",
]
