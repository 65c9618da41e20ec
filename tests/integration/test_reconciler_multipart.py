"""``abandoned_multipart``: a multipart upload nobody claims is found, ordered aborted, aborted by upload-api."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from depot_common.lifecycle import background_task
from depot_reconciler import cli
from depot_reconciler.bootstrap import run_relay
from depot_upload.bootstrap import compensation_consumer
from depot_upload.settings import UploadSettings
from tests.integration.test_reconciler_plan import World, reconcile_world
from tests.integration.test_upload_compensations import presigned_session, run_cli, wait_drained

CHECK = ["--check", "abandoned_multipart"]


@pytest.fixture
async def world(postgres_admin_url: str, make_settings: Callable[..., Any]) -> AsyncIterator[World]:
    async with reconcile_world(postgres_admin_url, make_settings) as created:
        yield created


async def start_multipart(world: World, key: str) -> str:
    """Start a multipart upload straight in S3 (as a crashed API would leave it) with one part; its upload id."""
    created = await world.s3.create_multipart_upload(Bucket=world.bucket, Key=key)
    upload_id: str = created["UploadId"]
    await world.s3.upload_part(Bucket=world.bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"p" * 1024)
    return upload_id


async def in_progress(world: World) -> set[tuple[str, str]]:
    listed = await world.s3.list_multipart_uploads(Bucket=world.bucket, Prefix="documents/")
    return {(upload["Key"], upload["UploadId"]) for upload in listed.get("Uploads", [])}


async def findings(world: World) -> set[str]:
    """Subjects of the abandoned_multipart findings of the latest run."""
    rows = await world.pool.fetch(
        "SELECT subject FROM reconcile.findings WHERE class = 'abandoned_multipart'"
        " AND run_id = (SELECT id FROM reconcile.runs ORDER BY started_at DESC LIMIT 1)"
    )
    return {row["subject"] for row in rows}


async def test_an_abandoned_multipart_upload_is_found_aborted_and_gone_on_the_next_run(
    world: World, stack_env: dict[str, str], make_settings: Callable[..., Any]
) -> None:
    """Only the upload nobody claims is a finding; apply has upload-api abort it (audited); the next run is clean."""
    abandoned_key = f"documents/{uuid.uuid4()}"
    abandoned = await start_multipart(world, abandoned_key)
    twin = await start_multipart(world, abandoned_key)  # a retried CreateMultipartUpload: two uploads, one key
    abandoned_subjects = {f"{abandoned_key}?uploadId={upload}" for upload in (abandoned, twin)}
    presigned_id = await world.document("pending", size=None, age=5)  # claimed by its pending session alone
    presigned = await start_multipart(world, f"documents/{presigned_id}")
    await presigned_session(world, presigned_id, b"x" * 10, multipart_upload_id=presigned)
    await world.pool.execute(
        "UPDATE upload.upload_sessions SET expires_at = now() + interval '1 hour' WHERE document_id = $1", presigned_id
    )
    streaming_id = await world.document("pending", size=None, age=-3600)  # a streamed upload in flight
    streaming = await start_multipart(world, f"documents/{streaming_id}")
    await asyncio.sleep(2)  # every upload is now older than the TTL (1 s) plus the grace (0 s)

    env = {
        **stack_env,
        "DEPOT_DATABASE_URL": world.database_url,
        "DEPOT_S3_BUCKET": world.bucket,
        "DEPOT_RECONCILE_GRACE": "0",
        "DEPOT_UPLOAD_TTL": "1",
    }
    assert await run_cli(env, *CHECK) == cli.EXIT_FINDINGS
    assert await findings(world) == abandoned_subjects
    assert await run_cli(env, "--apply", "--force", *CHECK) == cli.EXIT_FINDINGS
    audit = await world.pool.fetch("SELECT class, subject, action, event_id FROM reconcile.audit")
    assert sorted((row["class"], row["subject"], row["action"]) for row in audit) == sorted(
        ("abandoned_multipart", subject, "compensation.abandoned_multipart") for subject in abandoned_subjects
    )
    assert all(row["event_id"] is not None for row in audit)

    upload_settings: UploadSettings = make_settings(
        UploadSettings,
        database_url=world.database_url,
        s3_bucket=world.bucket,
        compensations_group=f"depot-upload-compensations-{secrets.token_hex(4)}",
        consumer_session_timeout=2,
    )
    async with (
        background_task(run_relay(world.settings(relay_poll_interval=1))),
        compensation_consumer(upload_settings) as (events, _),
        background_task(events.run()),
    ):
        await wait_drained(world, 2)

    remaining = await in_progress(world)
    assert (abandoned_key, abandoned) not in remaining
    assert (abandoned_key, twin) not in remaining
    assert {(f"documents/{presigned_id}", presigned), (f"documents/{streaming_id}", streaming)} <= remaining
    assert await run_cli(env, *CHECK) == cli.EXIT_CONSISTENT
    for key, upload_id in remaining:
        await world.s3.abort_multipart_upload(Bucket=world.bucket, Key=key, UploadId=upload_id)
