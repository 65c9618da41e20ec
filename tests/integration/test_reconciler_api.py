"""The reconciler's HTTP API and schedule: start runs, read their plans, apply them, one run at a time."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from depot_common.db import create_pool
from depot_common.s3 import s3_client
from depot_reconciler.bootstrap import build_app
from depot_reconciler.plan import RUN_LOCK
from depot_reconciler.runner import Reconciler
from depot_reconciler.settings import ReconcilerSettings
from depot_upload.settings import UploadSettings
from tests.conftest import serve
from tests.integration.test_reconciler_apply import outbox_events
from tests.integration.test_reconciler_plan import World, plant_one_of_each, reconcile_world

Auth = Callable[..., dict[str, str]]
COMPENSATION = {
    "orphan_object": "compensation.orphan_object",
    "missing_blob": "compensation.missing_blob",
    "stale_upload": "compensation.stale_upload",
    "unindexed": "compensation.reindex",
    "ghost_index_entry": "compensation.ghost_index_entry",
    "abandoned_multipart": "compensation.abandoned_multipart",
}


@pytest.fixture
async def world(postgres_admin_url: str, make_settings: Callable[..., Any]) -> AsyncIterator[World]:
    async with reconcile_world(postgres_admin_url, make_settings) as created:
        yield created


@contextlib.asynccontextmanager
async def reconciler_api(settings: ReconcilerSettings) -> AsyncIterator[str]:
    async with serve(build_app(settings)) as url:
        yield url


@pytest.fixture
async def api(world: World) -> AsyncIterator[str]:
    """A reconciler API on the test's world: no grace, no schedule, no safety stop."""
    async with reconciler_api(world.settings(reconcile_grace=0, reconcile_interval=0, reconcile_max_fraction=1)) as url:
        yield url


@contextlib.asynccontextmanager
async def holding_run_lock(world: World) -> AsyncIterator[None]:
    """Hold the reconcile run lock, as another replica's run would."""
    async with world.pool.acquire() as conn:
        assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", RUN_LOCK)
        try:
            yield
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", RUN_LOCK)


async def wait_run(http: httpx.AsyncClient, url: str, run_id: str, headers: dict[str, str]) -> dict[str, Any]:
    """Poll a run until it is neither running nor applying; return its JSON."""
    for _ in range(500):
        response = await http.get(f"{url}/v1/reconcile/runs/{run_id}", headers=headers)
        assert response.status_code == 200, response.text
        run: dict[str, Any] = response.json()
        if run["status"] not in {"running", "applying"}:
            return run
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish")


async def start(http: httpx.AsyncClient, url: str, headers: dict[str, str], **body: Any) -> str:
    response = await http.post(f"{url}/v1/reconcile", headers=headers, json=body)
    assert response.status_code == 202, response.text
    run_id: str = response.json()["run_id"]
    return run_id


async def all_findings(http: httpx.AsyncClient, url: str, run_id: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every finding of a run, read three per page."""
    findings: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"findings_cursor": cursor} if cursor else {})
        page = (await http.get(f"{url}/v1/reconcile/runs/{run_id}", headers=headers, params=params)).json()
        assert len(page["findings"]) <= 3
        findings += page["findings"]
        cursor = page["next_findings_cursor"]
        if cursor is None:
            return findings


async def test_a_run_starts_in_the_background_and_reports_the_planted_findings(
    world: World, api: str, http: httpx.AsyncClient, auth: Auth
) -> None:
    """POST answers 202 with a run id; the finished run shows its counts and every planted finding, paginated."""
    admin = auth("ops", admin=True)
    await world.consistent_baseline()
    planted = await plant_one_of_each(world)
    run_id = await start(http, api, admin)
    run = await wait_run(http, api, run_id, admin)
    assert run["status"] == "planned"
    assert run["apply"] is False
    expected_counts = {check: sum(1 for c, _ in planted if c == check) for check in run["checks"]}
    assert run["counts"] == expected_counts
    assert run["total"] == len(planted)
    findings = await all_findings(http, api, run_id, admin)
    assert {(f["check"], f["subject"]) for f in findings} == planted
    assert len(findings) == len(planted)
    listed = (await http.get(f"{api}/v1/reconcile/runs", headers=admin, params={"limit": 1})).json()
    assert [item["id"] for item in listed["items"]] == [run_id]
    assert listed["next_cursor"] is None
    metrics = (await http.get(f"{api}/metrics")).text
    assert 'depot_reconcile_findings{class="missing_blob"} 2.0' in metrics
    assert "depot_reconcile_run_duration_seconds_count" in metrics
    assert "depot_reconcile_objects_scanned_total" in metrics
    assert await outbox_events(world) == set()  # a dry run emits nothing


async def test_the_runs_list_pages_newest_first(world: World, api: str, http: httpx.AsyncClient, auth: Auth) -> None:
    """Three runs read one per page come back newest first, each once."""
    admin = auth("ops", admin=True)
    started = []
    for _ in range(3):
        run_id = await start(http, api, admin, checks=["stuck_outbox"])
        await wait_run(http, api, run_id, admin)
        started.append(run_id)
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        page = (await http.get(f"{api}/v1/reconcile/runs", headers=admin, params=params)).json()
        seen += [item["id"] for item in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert seen == started[::-1]
    bad = await http.get(f"{api}/v1/reconcile/runs", headers=admin, params={"cursor": "nope"})
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_cursor"


async def test_every_reconcile_endpoint_needs_an_admin_token(api: str, http: httpx.AsyncClient, auth: Auth) -> None:
    """No token is 401 and a non-admin token is 403 on every /v1/reconcile endpoint."""
    run = f"{api}/v1/reconcile/runs/{uuid.uuid4()}"
    calls = [
        ("POST", f"{api}/v1/reconcile"),
        ("POST", f"{run}/apply"),
        ("GET", f"{api}/v1/reconcile/runs"),
        ("GET", run),
    ]
    for method, url in calls:
        anonymous = await http.request(method, url, json={})
        assert anonymous.status_code == 401, (method, url)
        assert anonymous.json()["error"] == "missing_token"
        user = await http.request(method, url, headers=auth("alice"), json={})
        assert user.status_code == 403, (method, url)
        assert user.json()["error"] == "forbidden"
    assert (await http.get(f"{api}/healthz")).status_code == 200


async def test_a_run_while_another_replica_holds_the_lock_is_409(
    world: World, api: str, http: httpx.AsyncClient, auth: Auth
) -> None:
    """While the run lock is held elsewhere, starting or applying a run is 409 run_in_progress."""
    admin = auth("ops", admin=True)
    planned = await start(http, api, admin)
    await wait_run(http, api, planned, admin)
    async with holding_run_lock(world):
        response = await http.post(f"{api}/v1/reconcile", headers=admin, json={"apply": False})
        assert response.status_code == 409
        assert response.json()["error"] == "run_in_progress"
        response = await http.post(f"{api}/v1/reconcile/runs/{planned}/apply", headers=admin)
        assert response.status_code == 409
        assert response.json()["error"] == "run_in_progress"
    assert await world.pool.fetchval("SELECT count(*) FROM reconcile.runs") == 1


async def test_an_unknown_check_is_422(world: World, api: str, http: httpx.AsyncClient, auth: Auth) -> None:
    """A check name the reconciler does not know is refused before any run is created."""
    response = await http.post(f"{api}/v1/reconcile", headers=auth("ops", admin=True), json={"checks": ["nope"]})
    assert response.status_code == 422
    assert response.json()["error"] == "unknown_check"
    assert await world.pool.fetchval("SELECT count(*) FROM reconcile.runs") == 0


async def test_applying_a_reviewed_plan_emits_compensations_once(
    world: World, api: str, http: httpx.AsyncClient, auth: Auth
) -> None:
    """Apply emits one compensation per actionable finding into reconcile.outbox; applying again is 409."""
    admin = auth("ops", admin=True)
    for _ in range(3):  # enough population for the plan to stay under the safety share
        await world.stored()
    planted = await plant_one_of_each(world)
    run_id = await start(http, api, admin)
    await wait_run(http, api, run_id, admin)
    response = await http.post(f"{api}/v1/reconcile/runs/{run_id}/apply", headers=admin)
    assert response.status_code == 202, response.text
    run = await wait_run(http, api, run_id, admin)
    assert run["status"] == "applied"
    expected = {(COMPENSATION[check], subject) for check, subject in planted if check in COMPENSATION}
    assert await outbox_events(world) == expected
    assert run["applied"]["reported"] == 1
    again = await http.post(f"{api}/v1/reconcile/runs/{run_id}/apply", headers=admin, json={"force": True})
    assert again.status_code == 409
    assert again.json()["error"] == "already_applied"
    unknown = await http.post(f"{api}/v1/reconcile/runs/{uuid.uuid4()}/apply", headers=admin)
    assert unknown.status_code == 404
    assert (await http.get(f"{api}/v1/reconcile/runs/{uuid.uuid4()}", headers=admin)).status_code == 404
    metrics = (await http.get(f"{api}/metrics")).text
    assert 'depot_reconcile_compensations_applied_total{class="orphan_object"}' in metrics


async def test_safety_stop_is_409_with_the_numbers_until_forced(
    world: World, http: httpx.AsyncClient, auth: Auth
) -> None:
    """A plan over DEPOT_RECONCILE_MAX_FRACTION is refused with its numbers and nothing emitted; force applies it."""
    admin = auth("ops", admin=True)
    for _ in range(5):
        await world.stored()
    await plant_one_of_each(world)
    settings = world.settings(reconcile_grace=0, reconcile_interval=0, reconcile_max_fraction=0.05)
    async with reconciler_api(settings) as api:
        run_id = await start(http, api, admin)
        await wait_run(http, api, run_id, admin)
        stopped = await http.post(f"{api}/v1/reconcile/runs/{run_id}/apply", headers=admin, json={})
        assert stopped.status_code == 409
        body = stopped.json()
        assert body["error"] == "safety_stop"
        assert body["actionable"] == 7
        assert body["population"] == 10  # documents: 5 consistent + 5 planted
        assert body["max_fraction"] == 0.05
        assert await outbox_events(world) == set()
        assert (await wait_run(http, api, run_id, admin))["status"] == "planned"
        forced = await http.post(f"{api}/v1/reconcile/runs/{run_id}/apply", headers=admin, json={"force": True})
        assert forced.status_code == 202
        run = await wait_run(http, api, run_id, admin)
        assert run["status"] == "applied"
        assert sum(run["applied"]["emitted"].values()) == 7
        assert len(await outbox_events(world)) == 7


async def test_the_schedule_records_a_run_and_skips_quietly_when_locked(world: World) -> None:
    """A scheduled tick records a dry run; with the lock held elsewhere it records nothing; the loop ticks by itself."""
    await plant_one_of_each(world)
    reconciler = Reconciler(world.pool, world.s3, world.settings(reconcile_grace=0))
    try:
        run_id = await reconciler.scheduled_run()
        assert run_id is not None
        run = await world.pool.fetchrow("SELECT status, apply FROM reconcile.runs WHERE id = $1", run_id)
        assert run is not None
        assert (run["status"], run["apply"]) == ("planned", False)
        async with holding_run_lock(world):
            assert await reconciler.scheduled_run() is None
        assert await world.pool.fetchval("SELECT count(*) FROM reconcile.runs") == 1
        loop = asyncio.create_task(reconciler.schedule(0.05))
        try:
            for _ in range(200):
                if await world.pool.fetchval("SELECT count(*) FROM reconcile.runs WHERE status = 'planned'") >= 2:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the schedule never ran")
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
    finally:
        await reconciler.close()


async def test_a_scheduled_run_applies_when_configured(world: World) -> None:
    """With DEPOT_RECONCILE_SCHEDULE_APPLY=true the scheduled run applies its plan."""
    for _ in range(3):
        await world.stored()
    planted = await plant_one_of_each(world)
    settings = world.settings(reconcile_grace=0, reconcile_max_fraction=1, reconcile_schedule_apply=True)
    reconciler = Reconciler(world.pool, world.s3, settings)
    run_id = await reconciler.scheduled_run()
    assert await world.pool.fetchval("SELECT status FROM reconcile.runs WHERE id = $1", run_id) == "applied"
    assert len(await outbox_events(world)) == sum(1 for check, _ in planted if check in COMPENSATION)


async def test_a_dry_run_during_an_upload_burst_reports_none_of_its_documents(
    upload_api: str,
    upload_settings: UploadSettings,
    database_url: str,
    make_settings: Callable[..., Any],
    http: httpx.AsyncClient,
    auth: Auth,
) -> None:
    """Runs that certainly overlap a burst of uploads (documents are stored while a scan runs) report no
    orphan_object, missing_blob or stale_upload for them."""
    settings: ReconcilerSettings = make_settings(
        ReconcilerSettings,
        database_url=database_url,
        s3_bucket=upload_settings.s3_bucket,
        reconcile_grace=0,
        reconcile_interval=0,
        page_size=2,  # many small pages: the listing and the row pages interleave with the uploads
    )
    admin = auth("ops", admin=True)
    owner = f"burst-{secrets.token_hex(4)}"
    headers = auth(owner)
    checks = ["orphan_object", "missing_blob", "stale_upload"]
    documents: list[str] = []
    enough = asyncio.Event()

    async def upload(n: int) -> None:
        data = f"burst {owner} {n} {secrets.token_hex(16)}\n".encode()
        response = await http.post(
            f"{upload_api}/v1/documents", headers=headers, files={"file": (f"b{n}.txt", data, "text/plain")}
        )
        assert response.status_code == 201, response.text
        documents.append(response.json()["id"])

    async def burst() -> None:
        """Uploads, four at a time, until at least 60 are stored and a scan has overlapped them (at most 600)."""
        n = 0
        while n < 60 or not enough.is_set():
            assert n < 600, "no scan overlapped the burst"
            await asyncio.gather(*(upload(n + i) for i in range(4)))
            n += 4

    pool = await create_pool(database_url, max_size=2)
    overlap = (
        "SELECT count(*) FROM upload.documents d JOIN reconcile.runs r ON r.id = ANY($2::uuid[])"
        " WHERE d.owner_id = $1 AND d.status = 'stored' AND d.updated_at BETWEEN r.started_at AND r.finished_at"
    )
    try:
        async with reconciler_api(settings) as api:
            uploads = asyncio.ensure_future(burst())
            run_ids: list[str] = []
            while not uploads.done():  # one dry run after another for as long as the burst lasts
                run_id = await start(http, api, admin, checks=checks)
                await wait_run(http, api, run_id, admin)
                run_ids.append(run_id)
                if await pool.fetchval(overlap, owner, run_ids) > 0:
                    enough.set()
            await uploads
            stored_during_scans = await pool.fetchval(overlap, owner, run_ids)
            findings = [f for run_id in run_ids for f in await all_findings_fast(http, api, run_id, admin)]
        stored = await pool.fetchval(
            "SELECT count(*) FROM upload.documents WHERE owner_id = $1 AND status = 'stored'", owner
        )
    finally:
        await pool.close()
    assert stored_during_scans > 0, "documents were stored while a scan ran"
    subjects = set(documents) | {f"documents/{document_id}" for document_id in documents}
    assert [f for f in findings if f["subject"] in subjects] == []
    assert stored == len(documents) >= 60
    async with s3_client(settings) as s3:
        head = await s3.head_object(Bucket=settings.s3_bucket, Key=f"documents/{documents[0]}")
        assert head["ContentLength"] > 0


async def all_findings_fast(
    http: httpx.AsyncClient, url: str, run_id: str, headers: dict[str, str]
) -> list[dict[str, Any]]:
    """Every finding of a run, a thousand per page."""
    findings: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000} | ({"findings_cursor": cursor} if cursor else {})
        page = (await http.get(f"{url}/v1/reconcile/runs/{run_id}", headers=headers, params=params)).json()
        findings += page["findings"]
        if (cursor := page["next_findings_cursor"]) is None:
            return findings
