"""Event contracts: the CloudEvent envelope, the data model of every event type, and their registry."""

from depot_common.events.compensations import (
    COMPENSATIONS_TOPIC,
    AbandonedMultipart,
    ContentMismatch,
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
from depot_common.events.registry import (
    BY_NAME,
    EVENT_TYPES,
    REGISTRY,
    TOPIC_OF,
    EventType,
    Service,
    executed_by,
    handler_table,
    ignored_by,
    type_of,
    types_on,
)

__all__ = [
    "BY_NAME",
    "COMPENSATIONS_TOPIC",
    "CONTENT_TYPE",
    "DOCUMENTS_TOPIC",
    "EVENT_TYPES",
    "INDEX_TOPIC",
    "REGISTRY",
    "TOPIC_OF",
    "AbandonedMultipart",
    "CloudEvent",
    "ContentMismatch",
    "DocumentDeleted",
    "DocumentFailed",
    "DocumentIndexFailed",
    "DocumentIndexed",
    "DocumentStored",
    "EventType",
    "GhostIndexEntry",
    "MissingBlob",
    "OrphanObject",
    "RawCloudEvent",
    "Reindex",
    "Service",
    "StaleUpload",
    "encode",
    "executed_by",
    "handler_table",
    "ignored_by",
    "type_of",
    "types_on",
]
