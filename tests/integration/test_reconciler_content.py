"""``content_mismatch`` end to end: bytes replaced behind Depot's back are found only when asked, and repaired.

Everything real and private to the test: a database and a bucket of its own (moto), a tansu
broker of its own, the upload API, its outbox relay and compensation worker, the indexer and
the search API, the reconciler's CLI, HTTP API and relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from depot_common.lifecycle import background_task
from depot_devstack import servers
from depot_indexer.bootstrap import build_app as build_search_app
from depot_indexer.bootstrap import indexer_consumer
from depot_indexer.settings import IndexerSettings
from depot_reconciler import cli
from depot_reconciler.bootstrap import build_app as build_reconciler_app
from depot_reconciler.bootstrap import run_relay as reconciler_relay
from depot_reconciler.runner import Reconciler
from depot_reconciler.verification import HASH_CHUNK, hash_object
from depot_upload.bootstrap import build_app as build_upload_app
from depot_upload.bootstrap import compensation_consumer
from depot_upload.bootstrap import run_relay as upload_relay
from depot_upload.settings import UploadSettings
from tests.conftest import serve
from tests.integration.test_pipeline import search
from tests.integration.test_reconciler_api import start, wait_run
from tests.integration.test_reconciler_plan import World, reconcile_world
from tests.integration.test_upload_compensations import body_of, run_cli
from tests.kafka_helpers import event_of, read_until
from tests.upload_helpers import upload

DOCUMENTS = 50
MIB = 1024 * 1024
Auth = Callable[..., dict[str, str]]


@pytest.fixture
async def world(postgres_admin_url: str, make_settings: Callable[..., Any]) -> AsyncIterator[World]:
    async with reconcile_world(postgres_admin_url, make_settings) as created:
        yield created


async def latest_findings(world: World) -> list[tuple[str, str]]:
    """``(class, subject)`` of every finding of the latest run."""
    rows = await world.pool.fetch(
        "SELECT class, subject FROM reconcile.findings"
        " WHERE run_id = (SELECT id FROM reconcile.runs ORDER BY started_at DESC LIMIT 1) ORDER BY id"
    )
    return [(row["class"], row["subject"]) for row in rows]


async def latest_scanned(world: World) -> dict[str, Any]:
    counts: dict[str, Any] = await world.pool.fetchval(
        "SELECT counts FROM reconcile.runs ORDER BY started_at DESC LIMIT 1"
    )
    return counts


async def eventually(probe: Callable[[], Any], *, timeout: float = 30) -> None:
    """Wait until the async ``probe()`` is true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await probe():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{probe.__name__} never held")
        await asyncio.sleep(0.1)


async def test_a_tampered_object_is_found_only_when_asked_quarantined_failed_and_unsearchable(
    world: World,
    stack_env: dict[str, str],
    make_settings: Callable[..., Any],
    auth: Auth,
    tmp_path: Path,
) -> None:
    """50 uploads, one object overwritten in S3 with same-size bytes: a dry run with --verify-content (CLI and HTTP)
    lists exactly it, without it nothing; apply → the worker moves the object to quarantine/, fails the document
    (content_mismatch) with document.failed on Kafka, the indexer drops it; the next verifying run is clean."""
    broker, bootstrap = servers.start_tansu(tmp_path)
    group = f"content-{secrets.token_hex(4)}"
    common = {"database_url": world.database_url, "s3_bucket": world.bucket, "kafka_bootstrap": bootstrap}
    upload_settings: UploadSettings = make_settings(
        UploadSettings,
        **common,
        compensations_group=f"{group}-upload",
        consumer_session_timeout=2,
        relay_poll_interval=1,
    )
    indexer_settings: IndexerSettings = make_settings(
        IndexerSettings, **common, consumer_group=f"{group}-indexer", consumer_session_timeout=2
    )
    reconciler_settings = world.settings(
        kafka_bootstrap=bootstrap, relay_poll_interval=1, reconcile_interval=0, reconcile_grace=0
    )
    env = {
        **stack_env,
        "DEPOT_DATABASE_URL": world.database_url,
        "DEPOT_S3_BUCKET": world.bucket,
        "DEPOT_KAFKA_BOOTSTRAP": bootstrap,
    }
    alice = auth(f"alice-{secrets.token_hex(4)}")
    admin = auth("ops", admin=True)
    try:
        async with (
            serve(build_upload_app(upload_settings)) as api,
            serve(build_search_app(indexer_settings)) as search_api,
            serve(build_reconciler_app(reconciler_settings)) as reconciler_api,
            background_task(upload_relay(upload_settings)),
            indexer_consumer(indexer_settings) as indexer,
            background_task(indexer.run()),
            httpx.AsyncClient(timeout=30) as http,
        ):
            words = [f"walrus{secrets.token_hex(6)}" for _ in range(DOCUMENTS)]
            ids = []
            for word in words:
                response = await upload(http, api, alice, f"{word} field notes, page {secrets.token_hex(8)}\n".encode())
                assert response.status_code == 201, response.text
                ids.append(response.json()["id"])

            async def all_indexed() -> bool:
                count = await world.pool.fetchval("SELECT count(*) FROM search.index_entries WHERE status = 'indexed'")
                return bool(count == DOCUMENTS)

            await eventually(all_indexed)
            victim, victim_word = ids[17], words[17]
            key = f"documents/{victim}"
            original = await body_of(world, key)
            assert original is not None
            tampered = bytes(b ^ 0x20 for b in original)  # same size, other bytes
            await world.s3.put_object(Bucket=world.bucket, Key=key, Body=tampered)

            # dry runs: only a run asked to read the bytes sees it, and then it is the one finding
            assert await run_cli(env) == cli.EXIT_CONSISTENT
            assert await latest_findings(world) == []
            assert await run_cli(env, "--verify-content") == cli.EXIT_FINDINGS
            assert await latest_findings(world) == [("content_mismatch", victim)]
            counts = await latest_scanned(world)
            assert counts["verify_sample"] == 1.0
            assert counts["scanned"]["verified_documents"] == DOCUMENTS
            run_id = await start(http, reconciler_api, admin, verify_content=True)
            run = await wait_run(http, reconciler_api, run_id, admin)
            assert (run["status"], run["total"], run["counts"]["content_mismatch"]) == ("planned", 1, 1)
            assert run["verify_sample"] == 1.0
            assert (await latest_findings(world)) == [("content_mismatch", victim)]

            # apply (1 of 50 documents: within the safety stop), then the owners execute
            assert await run_cli(env, "--apply", "--verify-content") == cli.EXIT_FINDINGS
            audit = await world.pool.fetch("SELECT class, subject, action FROM reconcile.audit")
            assert [tuple(row) for row in audit] == [("content_mismatch", victim, "compensation.content_mismatch")]
            async with (
                background_task(reconciler_relay(reconciler_settings)),
                compensation_consumer(upload_settings) as (compensations, _),
                background_task(compensations.run()),
            ):

                async def repaired() -> bool:
                    status = await world.pool.fetchval(
                        "SELECT status FROM upload.documents WHERE id = $1", uuid.UUID(victim)
                    )
                    entry = await world.pool.fetchval(
                        "SELECT status FROM search.index_entries WHERE document_id = $1", uuid.UUID(victim)
                    )
                    return bool(status == "failed" and entry == "removed")

                await eventually(repaired)
            assert await body_of(world, key) is None
            assert await body_of(world, f"quarantine/{key}") == tampered
            quarantined = await world.pool.fetchrow("SELECT object_key, run_id FROM upload.quarantine")
            assert quarantined is not None
            assert quarantined["object_key"] == key
            failed = await read_until(
                bootstrap,
                "depot.documents.v1",
                lambda records: any(event_of(r)["type"] == "document.failed" for r in records),
            )
            assert [event_of(r)["data"] for r in failed if event_of(r)["type"] == "document.failed"] == [
                {
                    "document_id": victim,
                    "owner_id": event_of(failed[0])["data"]["owner_id"],
                    "reason": "content_mismatch",
                }
            ]
            assert await search(http, search_api, alice, victim_word) == []
            assert [hit["document_id"] for hit in await search(http, search_api, alice, words[18])] == [ids[18]]
            assert await run_cli(env, "--verify-content") == cli.EXIT_CONSISTENT
            assert await latest_findings(world) == []
            assert (await latest_scanned(world))["scanned"]["verified_documents"] == DOCUMENTS - 1
    finally:
        broker.stop()


async def test_a_sampled_run_reads_back_about_its_share(world: World, stack_env: dict[str, str]) -> None:
    """--verify-sample 0.25 over 200 stored documents reads back about a quarter of them, and no other object."""
    for _ in range(200):
        await world.stored(indexed=True)
    env = {**stack_env, "DEPOT_DATABASE_URL": world.database_url, "DEPOT_S3_BUCKET": world.bucket}
    assert await run_cli(env, "--verify-sample", "0.25", "--check", "content_mismatch") == cli.EXIT_FINDINGS
    counts = await latest_scanned(world)
    assert counts["verify_sample"] == 0.25
    verified = counts["scanned"]["verified_documents"]
    assert 25 <= verified <= 75
    # World.stored() records a random SHA-256: every document read back is a finding, and only those
    assert len(await latest_findings(world)) == verified


@contextlib.contextmanager
def peak_allocation() -> Iterator[list[int]]:
    """Measure the peak of Python allocations inside the block (``box[0]``, bytes)."""
    box = [0]
    tracemalloc.start()
    try:
        yield box
    finally:
        box[0] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


async def test_hashing_streams_so_memory_stays_flat_whatever_the_object_size(world: World) -> None:
    """Reading back a 64 MiB object allocates at most a few chunks, about what a 4 MiB one does."""
    peaks = {}
    for size in (4 * MIB, 64 * MIB):
        key = f"documents/{uuid.uuid4()}"
        await world.put_object(key, secrets.token_bytes(size))
        with peak_allocation() as peak:
            hashed = await hash_object(world.s3, world.bucket, key, expected_size=size)
        assert hashed is not None
        assert hashed.size == size
        assert hashed.sha256 is not None
        peaks[size] = peak[0]
    assert peaks[64 * MIB] < 4 * HASH_CHUNK, peaks
    assert peaks[64 * MIB] < peaks[4 * MIB] + 2 * HASH_CHUNK, peaks


async def test_scheduled_runs_verify_the_configured_share(world: World) -> None:
    """DEPOT_RECONCILE_SCHEDULE_VERIFY_SAMPLE=1 makes a scheduled run read every stored document back; 0 none."""
    document_id = await world.stored()  # World.stored() records a random SHA-256: its bytes never match
    for sample, expected in ((0.0, []), (1.0, [("content_mismatch", str(document_id))])):
        settings = world.settings(reconcile_interval=0, reconcile_schedule_verify_sample=sample)
        reconciler = Reconciler(world.pool, world.s3, settings)
        try:
            run_id = await reconciler.scheduled_run()
        finally:
            await reconciler.close()
        checks = await world.pool.fetchval("SELECT checks FROM reconcile.runs WHERE id = $1", run_id)
        assert ("content_mismatch" in checks) is bool(sample)
        assert await latest_findings(world) == expected
