"""JSON Schemas of Depot's events, generated from the pydantic models.

Each event type of :data:`depot_common.events.EVENT_TYPES` gets the JSON Schema (draft
2020-12) of the whole CloudEvent carrying its ``data``, stored as ``<type>.json``
(``docs/events/schemas/`` in the repository; sorted keys, 2-space indent)::

    python -m depot_common.events.schemas --write docs/events/schemas   # (re)generate
    python -m depot_common.events.schemas --check docs/events/schemas   # exit 1 on drift

The models are the source of truth; the files are what other teams and languages read.
``tests/unit/test_event_schemas.py`` fails when the committed files drift from the models.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from depot_common.events import EVENT_TYPES, TOPIC_OF
from depot_common.events.envelope import CloudEvent

#: The JSON Schema dialect of every generated schema.
DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: Where ``--write`` and ``--check`` look when no directory is given.
DEFAULT_DIR = Path("docs/events/schemas")


def schema_id(event_type: str) -> str:
    """The ``$id`` of ``event_type``'s schema: a URN naming the type and its topic."""
    return f"urn:depot:event:{TOPIC_OF[event_type]}:{event_type}"


def event_schema(event_type: str) -> dict[str, Any]:
    """The JSON Schema of a CloudEvent of ``event_type`` (``KeyError`` for an unknown type)."""
    model = EVENT_TYPES[event_type]
    schema = CloudEvent[model].model_json_schema()  # type: ignore[valid-type]
    schema["properties"]["type"] = {**schema["properties"]["type"], "const": event_type}
    return {
        "$schema": DIALECT,
        "$id": schema_id(event_type),
        **schema,
        "title": event_type,
        "description": f"CloudEvents 1.0 event {event_type!r} on topic {TOPIC_OF[event_type]}: "
        f"{(model.__doc__ or '').strip()}",
    }


def render(schema: dict[str, Any]) -> str:
    """The committed text of a schema: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def filename(event_type: str) -> str:
    return f"{event_type}.json"


def generated() -> dict[str, str]:
    """``{file name: text}`` for every event type."""
    return {filename(name): render(event_schema(name)) for name in sorted(EVENT_TYPES)}


def drift(directory: Path) -> list[str]:
    """Why ``directory`` differs from the models, one line per file (empty when it matches)."""
    expected = generated()
    problems: list[str] = []
    for name, text in expected.items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{path}: missing (event type {name.removesuffix('.json')} has no schema file)")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path}: differs from the model (regenerate with make schemas)")
    problems.extend(
        f"{path}: no event type {path.stem} in EVENT_TYPES (remove the file)"
        for path in sorted(directory.glob("*.json"))
        if path.name not in expected
    )
    return problems


def write(directory: Path) -> list[Path]:
    """Write every schema into ``directory``; return the files whose content changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed: list[Path] = []
    for name, text in generated().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m depot_common.events.schemas",
        description="Generate (--write) or verify (--check) the JSON Schemas of Depot's events.",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="write <type>.json for every event type")
    mode.add_argument("--check", action="store_true", help="exit 1 listing the files that drifted from the models")
    parser.add_argument(
        "directory", nargs="?", type=Path, default=DEFAULT_DIR, help=f"schema directory (default {DEFAULT_DIR})"
    )
    args = parser.parse_args(argv)
    directory: Path = args.directory
    if args.write:
        for path in write(directory):
            sys.stdout.write(f"wrote {path}\n")
        stale = [line for line in drift(directory) if "no event type" in line]
    else:
        stale = drift(directory)
    for line in stale:
        sys.stderr.write(line + "\n")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
