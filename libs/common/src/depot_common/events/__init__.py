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
from depot_common.events.index import INDEX_TOPIC, DocumentIndexed, DocumentIndexFailed

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
    "document.indexed": DocumentIndexed,
    "document.index_failed": DocumentIndexFailed,
}

#: The topic each event type is published on.
TOPIC_OF: dict[str, str] = {
    **{name: COMPENSATIONS_TOPIC for name in EVENT_TYPES if name.startswith("compensation.")},
    "document.stored": DOCUMENTS_TOPIC,
    "document.deleted": DOCUMENTS_TOPIC,
    "document.failed": DOCUMENTS_TOPIC,
    "document.indexed": INDEX_TOPIC,
    "document.index_failed": INDEX_TOPIC,
}

__all__ = [
    "COMPENSATIONS_TOPIC",
    "CONTENT_TYPE",
    "DOCUMENTS_TOPIC",
    "EVENT_TYPES",
    "INDEX_TOPIC",
    "TOPIC_OF",
    "CloudEvent",
    "DocumentDeleted",
    "DocumentFailed",
    "DocumentIndexFailed",
    "DocumentIndexed",
    "DocumentStored",
    "GhostIndexEntry",
    "MissingBlob",
    "OrphanObject",
    "RawCloudEvent",
    "Reindex",
    "StaleUpload",
    "encode",
]
