"""The check registry: one module per check, compensations executed by their owners, one pass per source."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

import depot_reconciler.checks
from depot_common.events import BY_NAME, COMPENSATIONS_TOPIC, Service, type_of
from depot_reconciler.checks import CHECKS, REGISTRY, UnknownCheck, select
from depot_reconciler.checks.base import Check, Finding, Limits, Reads, Source
from depot_reconciler.scan import ScanProgress, scan

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
LIMITS = Limits(NOW, timedelta(0), timedelta(0), timedelta(0), timedelta(0))


def check_modules() -> list[str]:
    """The modules of the ``depot_reconciler.checks`` package other than the shared ``base`` and ``streams``."""
    names = [info.name for info in pkgutil.iter_modules(depot_reconciler.checks.__path__)]
    return sorted(name for name in names if name not in {"base", "streams"})


def test_every_check_module_is_registered_once_under_its_name() -> None:
    """Each module in depot_reconciler/checks declares one CHECK named like the module, and the registry holds it."""
    for name in check_modules():
        module = importlib.import_module(f"depot_reconciler.checks.{name}")
        assert module.CHECK.name == name
        assert module.CHECK in REGISTRY
    assert sorted(CHECKS) == check_modules()
    assert len(set(CHECKS)) == len(REGISTRY)


@pytest.mark.parametrize("check", [check for check in REGISTRY if check.acts], ids=lambda check: check.name)
def test_an_acting_check_emits_a_registered_compensation_its_owner_executes(check: Check[Any]) -> None:
    """A check's compensation is a registered event on the compensations topic, produced here, executed by an owner."""
    assert check.compensation is not None
    entry = BY_NAME[type_of(check.compensation)]
    assert entry.topic == COMPENSATIONS_TOPIC
    assert entry.producer is Service.RECONCILER
    assert entry.executor in {Service.UPLOAD_API, Service.INDEXER}


def test_a_compensation_without_a_recheck_is_refused() -> None:
    """A check that would emit without re-checking at the moment of acting cannot be declared."""
    acting = next(check for check in REGISTRY if check.acts)
    with pytest.raises(ValueError, match="re-check"):
        Check("careless", acting.source, acting.classify, acting.compensation, None)


def test_select_keeps_the_canonical_order_and_refuses_an_unknown_check() -> None:
    """Requested checks come back in registry order; all but the on-request ones when none are named; an unknown
    name raises."""
    assert [check.name for check in select(["stuck_outbox", "orphan_object"])] == ["orphan_object", "stuck_outbox"]
    assert select(None) == tuple(check for check in REGISTRY if not check.on_request)
    with pytest.raises(UnknownCheck, match="unknown checks: nope"):
        select(["nope", "orphan_object"])


async def test_checks_sharing_a_source_read_it_once_and_classify_each_item_in_order() -> None:
    """The scan opens a source once for all its checks, tallies each item once, and yields findings in check order."""
    opened: list[str] = []

    async def numbers(_: Reads) -> AsyncIterator[int]:
        opened.append("numbers")
        for number in (1, 2, 3):
            yield number

    def tally(progress: ScanProgress, _: int) -> None:
        progress.index_rows += 1

    source: Source[int] = Source("numbers", numbers, tally)
    odd = Check("odd", source, lambda n, _: Finding("odd", str(n)) if n % 2 else None)
    any_ = Check("any", source, lambda n, _: Finding("any", str(n)))
    progress = ScanProgress()
    reads = Reads(pool=cast(Any, None), s3=None, bucket="b", page_size=10)
    found = [(f.check, f.subject) async for f in scan([odd, any_], reads, limits=LIMITS, progress=progress)]
    assert found == [("odd", "1"), ("any", "1"), ("any", "2"), ("odd", "3"), ("any", "3")]
    assert opened == ["numbers"]
    assert progress.index_rows == 3
