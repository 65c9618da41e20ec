"""The event registry: every type has one executor and a schema, and the documented types are the registered ones."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import BaseModel

from depot_common.events import (
    BY_NAME,
    COMPENSATIONS_TOPIC,
    EVENT_TYPES,
    REGISTRY,
    DocumentStored,
    EventType,
    Service,
    executed_by,
    ignored_by,
    type_of,
    types_on,
)
from depot_common.events.registry import _by_name
from depot_common.events.schemas import filename
from depot_indexer.bootstrap import CONSUMED_TOPICS
from depot_indexer.handlers import build_handlers
from depot_upload.bootstrap import COMPENSATION_TOPICS
from depot_upload.compensations.service import Compensations

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "docs" / "events" / "schemas"
EVENTS_DOC = ROOT / "docs" / "events.md"
#: ``### `document.stored` (depot.documents.v1)``: one heading per documented event type.
DOCUMENTED = re.compile(r"^### `(?P<type>[a-z_]+\.[a-z_]+)` \((?P<topic>[a-z0-9_.]+)\)\s*$", re.MULTILINE)

Table = Mapping[str, tuple[type[BaseModel], Any]]


def depot_consumers() -> dict[Service, tuple[Table, Collection[str]]]:
    """Every Depot consumer's real handler table and the topics it reads, by the service running it."""
    unused = cast(Any, None)  # building the tables does no I/O: the adapters are never called here
    return {
        Service.UPLOAD_API: (
            Compensations(unused, unused, quarantine_retention=1, upload_ttl=1).handlers(),
            COMPENSATION_TOPICS,
        ),
        Service.INDEXER: (build_handlers(unused, unused, max_object_bytes=1, max_text_chars=1), CONSUMED_TOPICS),
    }


def documented_types() -> dict[str, str]:
    """``{event type: topic}`` of every event type docs/events.md documents."""
    return {match["type"]: match["topic"] for match in DOCUMENTED.finditer(EVENTS_DOC.read_text(encoding="utf-8"))}


@pytest.mark.parametrize("entry", REGISTRY, ids=lambda entry: entry.name)
def test_every_registered_type_has_exactly_one_executor(entry: EventType) -> None:
    """Exactly one Depot consumer's handler table takes the type: the registered executor's (none: a notification)."""
    takers = [service for service, (table, _) in depot_consumers().items() if entry.name in table]
    if entry.executor is None:
        assert takers == []
        return
    assert takers == [entry.executor]
    table, _ = depot_consumers()[entry.executor]
    assert table[entry.name][0] is entry.model


def test_every_compensation_has_an_executor() -> None:
    """Only facts may go without an executor: every compensation the reconciler emits is some owner's to execute."""
    assert [entry.name for entry in REGISTRY if entry.topic == COMPENSATIONS_TOPIC and entry.executor is None] == []


@pytest.mark.parametrize("service", list(depot_consumers()))
def test_each_consumer_handles_what_it_executes_and_ignores_the_rest(service: Service) -> None:
    """A consumer's handlers are exactly its registered types; what it ignores is every other type of its topics."""
    table, topics = depot_consumers()[service]
    assert set(table) == executed_by(service, topics)
    ignored = ignored_by(service, topics)
    assert ignored.isdisjoint(table)
    assert ignored | set(table) == types_on(topics)


@pytest.mark.parametrize("entry", REGISTRY, ids=lambda entry: entry.name)
def test_every_registered_type_has_a_json_schema(entry: EventType) -> None:
    """docs/events/schemas holds the generated JSON Schema of every registered type."""
    assert (SCHEMA_DIR / filename(entry.name)).is_file()


def test_every_documented_type_has_a_model_on_its_documented_topic() -> None:
    """Each event type docs/events.md documents is registered with a model, on the topic the page names."""
    documented = documented_types()
    assert len(documented) >= len(REGISTRY)  # the page's headings were found
    assert {name: BY_NAME[name].topic for name in documented if name in BY_NAME} == documented
    assert sorted(set(documented) - set(EVENT_TYPES)) == []


def test_every_registered_type_is_documented() -> None:
    """No event type is published without its section in docs/events.md."""
    assert sorted(set(EVENT_TYPES) - set(documented_types())) == []


def test_a_model_maps_to_its_type_and_an_unregistered_one_fails() -> None:
    """``type_of`` finds a registered model's type and raises for a model nobody registered."""

    class Unregistered(BaseModel):
        pass

    assert type_of(DocumentStored) == "document.stored"
    with pytest.raises(KeyError):
        type_of(Unregistered)


def test_a_type_or_model_registered_twice_is_refused() -> None:
    """Registering a second entry with a known type or model raises instead of shadowing the first."""
    first = REGISTRY[0]
    with pytest.raises(ValueError, match="registered twice"):
        _by_name((first, EventType(first.name, BaseModel, first.topic, first.producer, first.executor)))
    with pytest.raises(ValueError, match="registered twice"):
        _by_name((first, EventType("document.other", first.model, first.topic, first.producer, first.executor)))
