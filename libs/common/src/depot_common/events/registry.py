"""The one registry of Depot's event types: type → data model → topic → executing service.

Every event type Depot publishes is one :class:`EventType` entry of :data:`REGISTRY`, and
everything else is derived from it: the models by type (:data:`EVENT_TYPES`), the topic of
each type (:data:`TOPIC_OF`), the CloudEvents ``type`` of a model (:func:`type_of`), the
handler table a consumer passes to ``EventConsumer`` (:func:`handler_table`) and the types
it skips because another service executes them (:func:`ignored_by`). Adding an event type
is one entry here plus its model (and ``make schemas``); a consumer that reads its topic
and does not execute it skips it without a change.

``executor`` is the one Depot service whose consumer acts on the event: it executes a
compensation, or applies a fact to the data it owns (the indexer indexes
``document.stored``). Every other Depot consumer of the topic ignores the type. A fact no
Depot service acts on has no executor (``None``): ``document.indexed`` and
``document.index_failed`` are read only by the event stream (``GET /v1/events``) and by
consumers outside Depot. Every compensation has an executor.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from pydantic import BaseModel

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
from depot_common.events.documents import DOCUMENTS_TOPIC, DocumentDeleted, DocumentFailed, DocumentStored
from depot_common.events.index import INDEX_TOPIC, DocumentIndexed, DocumentIndexFailed


class Service(StrEnum):
    """The Depot services that produce or execute events."""

    UPLOAD_API = "upload-api"
    INDEXER = "indexer"
    RECONCILER = "reconciler"


@dataclass(frozen=True, slots=True)
class EventType:
    """One event type: its CloudEvents ``type``, ``data`` model, topic, producer and executor."""

    name: str
    model: type[BaseModel]
    topic: str
    producer: Service
    executor: Service | None


#: Every event type Depot publishes.
REGISTRY: tuple[EventType, ...] = (
    EventType("document.stored", DocumentStored, DOCUMENTS_TOPIC, Service.UPLOAD_API, Service.INDEXER),
    EventType("document.deleted", DocumentDeleted, DOCUMENTS_TOPIC, Service.UPLOAD_API, Service.INDEXER),
    EventType("document.failed", DocumentFailed, DOCUMENTS_TOPIC, Service.UPLOAD_API, Service.INDEXER),
    EventType("document.indexed", DocumentIndexed, INDEX_TOPIC, Service.INDEXER, None),
    EventType("document.index_failed", DocumentIndexFailed, INDEX_TOPIC, Service.INDEXER, None),
    EventType("compensation.orphan_object", OrphanObject, COMPENSATIONS_TOPIC, Service.RECONCILER, Service.UPLOAD_API),
    EventType("compensation.missing_blob", MissingBlob, COMPENSATIONS_TOPIC, Service.RECONCILER, Service.UPLOAD_API),
    EventType("compensation.stale_upload", StaleUpload, COMPENSATIONS_TOPIC, Service.RECONCILER, Service.UPLOAD_API),
    EventType("compensation.reindex", Reindex, COMPENSATIONS_TOPIC, Service.RECONCILER, Service.INDEXER),
    EventType(
        "compensation.ghost_index_entry", GhostIndexEntry, COMPENSATIONS_TOPIC, Service.RECONCILER, Service.INDEXER
    ),
    EventType(
        "compensation.abandoned_multipart",
        AbandonedMultipart,
        COMPENSATIONS_TOPIC,
        Service.RECONCILER,
        Service.UPLOAD_API,
    ),
    EventType(
        "compensation.content_mismatch", ContentMismatch, COMPENSATIONS_TOPIC, Service.RECONCILER, Service.UPLOAD_API
    ),
)


def _by_name(entries: tuple[EventType, ...]) -> dict[str, EventType]:
    by_name: dict[str, EventType] = {}
    by_model: dict[type[BaseModel], str] = {}
    for entry in entries:
        if entry.name in by_name or entry.model in by_model:
            raise ValueError(f"event type {entry.name} or its model {entry.model.__name__} is registered twice")
        by_name[entry.name] = entry
        by_model[entry.model] = entry.name
    return by_name


#: The registry by CloudEvents ``type``.
BY_NAME: Mapping[str, EventType] = _by_name(REGISTRY)
#: The ``data`` model of each event type.
EVENT_TYPES: Mapping[str, type[BaseModel]] = {name: entry.model for name, entry in BY_NAME.items()}
#: The topic each event type is published on.
TOPIC_OF: Mapping[str, str] = {name: entry.topic for name, entry in BY_NAME.items()}
_TYPE_OF: Mapping[type[BaseModel], str] = {entry.model: entry.name for entry in REGISTRY}


def type_of(model: type[BaseModel]) -> str:
    """The CloudEvents ``type`` whose ``data`` is ``model`` (``KeyError`` for an unregistered model)."""
    return _TYPE_OF[model]


def types_on(topics: Collection[str]) -> frozenset[str]:
    """Every event type published on one of ``topics``."""
    return frozenset(entry.name for entry in REGISTRY if entry.topic in topics)


def executed_by(service: Service, topics: Collection[str]) -> frozenset[str]:
    """The types on ``topics`` that ``service`` executes."""
    return frozenset(entry.name for entry in REGISTRY if entry.topic in topics and entry.executor is service)


def ignored_by(service: Service, topics: Collection[str]) -> frozenset[str]:
    """The types on ``topics`` another service executes: ``service``'s consumer skips them."""
    return types_on(topics) - executed_by(service, topics)


H = TypeVar("H")


def handler_table(handlers: Mapping[type[BaseModel], H]) -> dict[str, tuple[type[BaseModel], H]]:
    """``EventConsumer``'s handler table (type → (model, handler)) from handlers keyed by model."""
    return {type_of(model): (model, handler) for model, handler in handlers.items()}
