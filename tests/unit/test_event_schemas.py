"""The committed JSON Schemas of every event type match the models, and real events validate."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from pydantic import BaseModel

from depot_common.events import (
    EVENT_TYPES,
    TOPIC_OF,
    AbandonedMultipart,
    CloudEvent,
    ContentMismatch,
    DocumentDeleted,
    DocumentFailed,
    DocumentIndexed,
    DocumentIndexFailed,
    DocumentStored,
    GhostIndexEntry,
    MissingBlob,
    OrphanObject,
    Reindex,
    StaleUpload,
    encode,
)
from depot_common.events.schemas import drift, event_schema, filename, main, render, write

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "docs" / "events" / "schemas"
EVENTS_DOC = ROOT / "docs" / "events.md"

DOC = uuid.uuid4()
RUN = uuid.uuid4()
KEY = f"documents/{DOC}"
SAMPLES: dict[str, BaseModel] = {
    "document.stored": DocumentStored(
        document_id=DOC,
        owner_id="alice",
        filename="notes.txt",
        content_type="text/plain",
        size_bytes=39,
        sha256="ab" * 32,
        object_key=KEY,
        version=2,
    ),
    "document.deleted": DocumentDeleted(document_id=DOC, owner_id="alice", version=3),
    "document.failed": DocumentFailed(document_id=DOC, owner_id="alice", reason="upload_expired"),
    "document.indexed": DocumentIndexed(document_id=DOC, owner_id="alice", version=2, text_chars=39),
    "document.index_failed": DocumentIndexFailed(
        document_id=DOC, owner_id="alice", version=2, reason="pdf_unreadable: PdfStreamError"
    ),
    "compensation.orphan_object": OrphanObject(
        object_key=KEY, size_bytes=39, last_modified=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), run_id=RUN
    ),
    "compensation.missing_blob": MissingBlob(document_id=DOC, object_key=KEY, run_id=RUN),
    "compensation.stale_upload": StaleUpload(document_id=DOC, run_id=RUN),
    "compensation.reindex": Reindex(document_id=DOC, run_id=RUN),
    "compensation.ghost_index_entry": GhostIndexEntry(document_id=DOC, run_id=RUN),
    "compensation.abandoned_multipart": AbandonedMultipart(
        object_key=KEY, upload_id="2~abc", initiated=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), run_id=RUN
    ),
    "compensation.content_mismatch": ContentMismatch(
        document_id=DOC, object_key=KEY, expected_sha256="ab" * 32, actual_sha256="cd" * 32, run_id=RUN
    ),
}


def committed(event_type: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMA_DIR / filename(event_type)).read_text(encoding="utf-8"))
    return schema


def validator(event_type: str) -> jsonschema.Draft202012Validator:
    schema = committed(event_type)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def encoded(event_type: str) -> dict[str, Any]:
    data = SAMPLES[event_type]
    event = CloudEvent[type(data)](source="depot/test", type=event_type, subject=str(DOC), data=data)  # type: ignore[misc,operator]
    value: dict[str, Any] = json.loads(encode(event))
    return value


def test_every_event_type_has_a_sample() -> None:
    """The samples below cover exactly the event types of EVENT_TYPES, so no type goes unvalidated."""
    assert set(SAMPLES) == set(EVENT_TYPES)
    assert all(isinstance(SAMPLES[name], model) for name, model in EVENT_TYPES.items())


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_the_committed_schema_matches_the_model(event_type: str) -> None:
    """The committed schema file is byte for byte what the model generates (run `make schemas` after a change)."""
    path = SCHEMA_DIR / filename(event_type)
    assert path.is_file(), f"{event_type} has no schema file: run make schemas"
    assert path.read_text(encoding="utf-8") == render(event_schema(event_type)), f"{path} drifted: run make schemas"


def test_every_event_type_has_a_schema_file() -> None:
    """Each type of EVENT_TYPES has its <type>.json in docs/events/schemas."""
    files = {path.stem for path in SCHEMA_DIR.glob("*.json")}
    assert sorted(set(EVENT_TYPES) - files) == []


def test_every_schema_file_has_an_event_type() -> None:
    """No schema file in docs/events/schemas outlives its event type."""
    files = {path.stem for path in SCHEMA_DIR.glob("*.json")}
    assert sorted(files - set(EVENT_TYPES)) == []


def test_the_check_command_reports_changed_missing_and_stale_files(tmp_path: Path) -> None:
    """`--check` exits 0 on a fresh `--write` and 1 naming a changed, a missing and a stale file."""
    assert main(["--write", str(tmp_path)]) == 0
    assert drift(tmp_path) == []
    assert main(["--check", str(tmp_path)]) == 0
    (tmp_path / "document.stored.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "document.deleted.json").unlink()
    (tmp_path / "document.renamed.json").write_text("{}\n", encoding="utf-8")
    problems = drift(tmp_path)
    assert len(problems) == 3
    assert any("document.stored.json: differs" in line for line in problems)
    assert any("document.deleted.json: missing" in line for line in problems)
    assert any("document.renamed.json: no event type" in line for line in problems)
    assert main(["--check", str(tmp_path)]) == 1
    assert [path.name for path in write(tmp_path)] == ["document.deleted.json", "document.stored.json"]


def test_the_committed_schemas_pass_the_module_check() -> None:
    """`python -m depot_common.events.schemas --check docs/events/schemas` exits 0 on the repository."""
    result = subprocess.run(
        [sys.executable, "-m", "depot_common.events.schemas", "--check", str(SCHEMA_DIR)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_an_encoded_event_validates_against_its_schema(event_type: str) -> None:
    """An event encoded by Depot's own models is valid under the committed schema of its type."""
    schema = committed(event_type)
    assert schema["$id"] == f"urn:depot:event:{TOPIC_OF[event_type]}:{event_type}"
    assert schema["title"] == event_type
    validator(event_type).validate(encoded(event_type))


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_the_schema_rejects_what_the_model_rejects(event_type: str) -> None:
    """An unknown data field, a missing data field, another type or a malformed time all fail validation."""
    check = validator(event_type)
    extra = encoded(event_type)
    extra["data"]["surprise"] = 1
    missing = encoded(event_type)
    missing["data"].pop(next(iter(missing["data"])))
    other_type = {**encoded(event_type), "type": "document.other"}
    bad_time = {**encoded(event_type), "time": "yesterday"}
    for invalid in (extra, missing, other_type, bad_time):
        assert not check.is_valid(invalid), invalid


def test_the_documented_examples_are_real_events() -> None:
    """Every JSON example in docs/events.md is exactly what the models encode, and valid under its schema."""
    blocks = re.findall(r"```json\n(.*?)```", EVENTS_DOC.read_text(encoding="utf-8"), re.DOTALL)
    seen = []
    for block in blocks:
        example = json.loads(block)
        event_type = example["type"]
        validator(event_type).validate(example)
        model = EVENT_TYPES[event_type]
        parsed = CloudEvent[model].model_validate_json(block)  # type: ignore[valid-type]
        assert json.loads(encode(parsed)) == example
        seen.append(event_type)
    assert sorted(seen) == sorted(EVENT_TYPES)
