"""Schemathesis against the three APIs as real processes: their OpenAPI documents tell the truth (issue 13).

Each run is what ``st run --checks all`` does (examples, coverage, fuzzing and stateful
phases, every check), through Schemathesis' Python API, with the configuration in
``tests/schemathesis.toml``: bounded examples per operation, a time budget and a fixed
(derandomized) generation so a run is repeatable. A finding of any check fails the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import schemathesis
from schemathesis.engine import events, from_schema

from tests.processes import service_processes

CONFIG = Path(__file__).parent.parent / "schemathesis.toml"
MODULES = {"upload": "depot_upload", "search": "depot_indexer", "reconciler": "depot_reconciler"}


@pytest.fixture(scope="module")
def apis(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Base URLs of the upload, search and reconciler APIs, each a real process on the session's servers."""
    logs = tmp_path_factory.mktemp("contract")
    with service_processes(
        {module: logs / f"{name}.log" for name, module in MODULES.items()}, stack_env, DEPOT_RECONCILE_INTERVAL="0"
    ) as running:
        yield {name: running[module][1] for name, module in MODULES.items()}


def findings(base_url: str, token: str) -> list[str]:
    """Every distinct failure Schemathesis finds against ``base_url`` (and any error that stopped a scenario)."""
    config = schemathesis.Config.from_path(CONFIG)
    config.projects.default.update(base_url=base_url, headers={"Authorization": f"Bearer {token}"})
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=config)
    found: set[str] = set()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            for nodes in event.recorder.checks.values():
                for node in nodes:
                    if node.failure_info is not None:
                        failure = node.failure_info.failure
                        detail = " ".join(failure.message.split())[:300]
                        steps = " then ".join(step.curl for step in node.failure_info.steps)[:600]
                        found.add(f"{event.recorder.label} {node.name}: {failure.title}: {detail} [{steps}]")
        elif isinstance(event, events.NonFatalError):
            found.add(f"{event.label}: error: {event.value!r}")
        elif isinstance(event, events.FatalError):
            raise event.exception
        elif isinstance(event, events.EngineFinished):
            found.update(f"{failure.operation}: {failure.title}" for failure in event.failures)
    return sorted(found)


@pytest.mark.timeout(600)  # a run is bounded by max-time in schemathesis.toml; start-up is slow on a loaded machine
@pytest.mark.parametrize("api", list(MODULES))
@pytest.mark.parametrize("admin", [True, False], ids=["admin", "user"])
def test_schemathesis_finds_nothing(apis: dict[str, str], token: Callable[..., str], api: str, admin: bool) -> None:
    """Every status, content type, header and body each operation returns is the one its OpenAPI entry documents."""
    found = findings(apis[api], token(f"contract-{api}-{'admin' if admin else 'user'}", admin=admin))
    assert not found, f"{len(found)} Schemathesis finding(s) against the {api} API:\n" + "\n".join(found)
