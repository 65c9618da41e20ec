"""``depot-reconciler run`` reports findings as a table or JSON and exits 0, 1 or 2."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import structlog

from depot_reconciler import cli
from tests.conftest import patched_environ
from tests.integration.test_reconciler_plan import World, plant_one_of_each, reconcile_world


@pytest.fixture
async def world(postgres_admin_url: str, make_settings: Callable[..., Any]) -> AsyncIterator[World]:
    async with reconcile_world(postgres_admin_url, make_settings) as created:
        yield created


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is now (pytest swaps it per test)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@pytest.fixture(autouse=True)
def _test_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Log to the current stderr without caching loggers (which would outlive the test's capture)."""
    saved = structlog.get_config()

    def configure(fmt: str, level: str, *, service: str) -> None:
        structlog.configure(
            processors=[structlog.processors.add_log_level, structlog.dev.ConsoleRenderer(colors=False)],
            logger_factory=structlog.PrintLoggerFactory(_CurrentStderr()),  # type: ignore[arg-type]
            cache_logger_on_first_use=False,
        )

    monkeypatch.setattr(cli, "configure_logging", configure)
    yield
    structlog.configure(**saved)


async def run_cli(env: dict[str, str], *argv: str) -> int:
    """Call ``cli.main`` with ``env`` over the environment, in a thread (it runs its own event loop)."""
    with patched_environ(env):
        return await asyncio.to_thread(cli.main, ["run", *argv])


def world_env(stack_env: dict[str, str], world: World, **extra: str) -> dict[str, str]:
    return {**stack_env, "DEPOT_DATABASE_URL": world.database_url, "DEPOT_S3_BUCKET": world.bucket, **extra}


async def test_consistent_world_exits_0_with_a_summary_table(
    world: World, stack_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A dry run over a consistent world prints a zero summary by class and exits 0."""
    await world.consistent_baseline()
    assert await run_cli(world_env(stack_env, world)) == 0
    out = capsys.readouterr().out
    assert "orphan_object" in out
    assert "consistent" in out
    assert await world.pool.fetchval("SELECT count(*) FROM reconcile.findings") == 0


async def test_findings_exit_1_and_json_lists_them(
    world: World, stack_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """With findings, --json prints the run, counts by class and every finding, and the exit code is 1."""
    expected = await plant_one_of_each(world)
    code = await run_cli(world_env(stack_env, world, DEPOT_RECONCILE_GRACE="0"), "--json")
    assert code == 1
    report = json.loads(capsys.readouterr().out)
    assert report["total"] == len(expected)
    assert report["counts"]["missing_blob"] == 2
    assert {(item["check"], item["subject"]) for item in report["findings"]} == expected
    status = await world.pool.fetchval("SELECT status FROM reconcile.runs WHERE id = $1", report["run_id"])
    assert status == "planned"


async def test_check_option_limits_the_run(
    world: World, stack_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--check NAME runs only the named checks."""
    await plant_one_of_each(world)
    env = world_env(stack_env, world, DEPOT_RECONCILE_GRACE="0")
    assert await run_cli(env, "--json", "--check", "orphan_object") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {"orphan_object": 1}
    assert [item["check"] for item in report["findings"]] == ["orphan_object"]


async def test_bad_settings_exit_2_naming_the_setting(
    stack_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A malformed setting stops the run with exit 2 and one line naming it."""
    assert await run_cli({**stack_env, "DEPOT_RECONCILE_MAX_FRACTION": "2"}) == 2
    assert "DEPOT_RECONCILE_MAX_FRACTION" in capsys.readouterr().err


async def test_unreachable_database_exits_2(stack_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """A database that cannot be reached is an error (exit 2), not a consistent result."""
    env = {**stack_env, "DEPOT_DATABASE_URL": "postgresql://depot@127.0.0.1:1/nowhere"}
    assert await run_cli(env) == 2
    assert "depot-reconciler: error" in capsys.readouterr().err


async def test_apply_option_emits_compensations_and_reports_them(
    world: World, stack_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--apply emits the compensations of the plan into reconcile.outbox and reports them in the JSON."""
    await world.consistent_baseline()
    await plant_one_of_each(world)
    env = world_env(stack_env, world, DEPOT_RECONCILE_GRACE="0", DEPOT_RECONCILE_MAX_FRACTION="1")
    assert await run_cli(env, "--apply", "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "applied"
    assert sum(report["applied"]["emitted"].values()) == 7
    assert await world.pool.fetchval("SELECT count(*) FROM reconcile.outbox") == 7


async def test_safety_stop_exits_2_without_emitting(
    world: World, stack_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--apply past DEPOT_RECONCILE_MAX_FRACTION is refused with exit 2 and nothing emitted."""
    await plant_one_of_each(world)
    env = world_env(stack_env, world, DEPOT_RECONCILE_GRACE="0")
    assert await run_cli(env, "--apply") == 2
    assert "--force" in capsys.readouterr().err
    assert await world.pool.fetchval("SELECT count(*) FROM reconcile.outbox") == 0
