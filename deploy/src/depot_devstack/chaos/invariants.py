"""The invariants of docs/invariants.md, counted: what the clients were promised against what PostgreSQL, S3, the index
and the broker hold once the pipeline has drained.

Every figure is a count of violations except ``acked`` (the documents the clients were
told are stored); a healthy run prints zeros for everything else.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer

from depot_common.dlq import DeadLetterQueue, DlqError
from depot_common.s3 import s3_client
from depot_common.settings import DepotSettings
from depot_devstack.chaos.workload import Ledger

PREFIX = "documents/"


@dataclass
class Verdict:
    """The invariant line's numbers, and the evidence behind each non-zero one."""

    acked: int = 0
    deleted: int = 0
    lost: int = 0
    undeleted: int = 0
    orphans: int = 0
    ghost: int = 0
    unsearchable: int = 0
    pending: int = 0
    multipart: int = 0
    dlq: int = 0
    http5xx: int = 0
    crashes: int = 0
    unexpected: int = 0
    findings_after: int = -1
    evidence: dict[str, list[str]] = field(default_factory=dict)

    def add(self, name: str, item: str) -> None:
        setattr(self, name, getattr(self, name) + 1)
        self.evidence.setdefault(name, [])
        if len(self.evidence[name]) < 10:
            self.evidence[name].append(item)

    @property
    def ok(self) -> bool:
        figures = asdict(self)
        return self.findings_after == 0 and all(
            figures[name] == 0 for name in figures if name not in {"acked", "deleted", "findings_after", "evidence"}
        )

    def line(self) -> str:
        return (
            f"acked={self.acked} deleted={self.deleted} lost={self.lost} undeleted={self.undeleted} "
            f"orphans={self.orphans} ghost={self.ghost} unsearchable={self.unsearchable} pending={self.pending} "
            f"multipart={self.multipart} dlq={self.dlq} http5xx={self.http5xx} crashes={self.crashes} "
            f"unexpected={self.unexpected} "
            f"findings_after={self.findings_after}"
        )


def settings_of(env: dict[str, str]) -> DepotSettings:
    return DepotSettings(
        database_url=env["DEPOT_DATABASE_URL"],
        kafka_bootstrap=env["DEPOT_KAFKA_BOOTSTRAP"],
        s3_bucket=env["DEPOT_S3_BUCKET"],
        s3_endpoint=env["DEPOT_S3_ENDPOINT"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],  # type: ignore[arg-type]
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],  # type: ignore[arg-type]
        jwt_secret=env["DEPOT_JWT_SECRET"],  # type: ignore[arg-type]
    )


async def _objects(s3: Any, bucket: str) -> AsyncIterator[dict[str, Any]]:
    paginator = s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=PREFIX):
        for item in page.get("Contents", []):
            yield item


async def _multipart_uploads(s3: Any, bucket: str) -> AsyncIterator[dict[str, Any]]:
    paginator = s3.get_paginator("list_multipart_uploads")
    async for page in paginator.paginate(Bucket=bucket, Prefix=PREFIX):
        for item in page.get("Uploads", []):
            yield item


async def unsettled(env: dict[str, str]) -> int:
    """Work the pipeline still owes: unpublished outbox rows, index entries behind their document."""
    conn = await asyncpg.connect(env["DEPOT_DATABASE_URL"])
    try:
        outboxes = [
            row["schema"]
            for row in await conn.fetch(
                "SELECT table_schema AS schema FROM information_schema.tables WHERE table_name = 'outbox'"
            )
        ]
        total = 0
        for schema in outboxes:
            total += await conn.fetchval(f'SELECT count(*) FROM "{schema}".outbox')
        total += await conn.fetchval(
            """
            SELECT count(*) FROM upload.documents d
            LEFT JOIN search.index_entries e ON e.document_id = d.id
            WHERE (d.status = 'stored' AND (e.status IS DISTINCT FROM 'indexed' OR e.version <> d.version))
               OR (d.status <> 'stored' AND e.status = 'indexed')
            """
        )
        return int(total)
    finally:
        await conn.close()


async def count_dlq(bootstrap: list[str]) -> tuple[int, list[str]]:
    """Messages in every ``*.dlq`` topic of the broker."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        topics = sorted(topic for topic in await consumer.topics() if topic.endswith(".dlq"))
    finally:
        await consumer.stop()
    total, evidence = 0, []
    for dlq in topics:
        topic, group = dlq.removesuffix(".dlq").rsplit(".", 1)
        with contextlib.suppress(DlqError):
            async with DeadLetterQueue(bootstrap, topic, group, idle_timeout=5) as queue:
                async for letter in queue.messages():
                    total += 1
                    evidence.append(f"{dlq}: {letter.summary()}")
    return total, evidence


async def check(env: dict[str, str], ledger: Ledger, search_url: str, token: str, *, sample: int = 25) -> Verdict:
    """Count every violation of invariants 1 to 5, 7 and 8 (docs/invariants.md) (6 is the caller's second dry run)."""
    verdict = Verdict(acked=len(ledger.acked), deleted=len(ledger.deleted))
    settings = settings_of(env)
    conn = await asyncpg.connect(settings.database_url)
    try:
        documents = {
            str(row["id"]): row
            for row in await conn.fetch(
                "SELECT id, status, size_bytes, sha256, object_key, version FROM upload.documents"
            )
        }
        entries = {
            str(row["document_id"]): row
            for row in await conn.fetch("SELECT document_id, status, version FROM search.index_entries")
        }
        sessions = {
            row["multipart_upload_id"]
            for row in await conn.fetch(
                "SELECT multipart_upload_id FROM upload.upload_sessions "
                "WHERE status = 'pending' AND multipart_upload_id IS NOT NULL"
            )
        }
    finally:
        await conn.close()
    stored_keys = {row["object_key"]: doc for doc, row in documents.items() if row["status"] == "stored"}
    # a DELETE whose answer was lost may have been carried out: such a document is deleted or intact
    asked_away = {doc for doc in ledger.delete_unanswered if doc in documents and documents[doc]["status"] == "deleted"}
    live = {doc: acked for doc, acked in ledger.live().items() if doc not in asked_away}

    async with s3_client(settings) as s3:
        objects = {item["Key"]: int(item["Size"]) async for item in _objects(s3, settings.s3_bucket)}
        # 1 + 5: every acknowledged, undeleted document is stored, with its bytes intact
        for doc, acked in live.items():
            row = documents.get(doc)
            if row is None or row["status"] != "stored":
                verdict.add("lost", f"{doc} ({acked.via}): status {row['status'] if row else 'missing'}")
                continue
            if row["object_key"] not in objects:
                verdict.add("lost", f"{doc} ({acked.via}): object {row['object_key']} missing")
                continue
            body = await s3.get_object(Bucket=settings.s3_bucket, Key=row["object_key"])
            digest = hashlib.sha256()
            async for chunk in body["Body"].iter_chunks(1024 * 1024):
                digest.update(chunk)
            if digest.hexdigest() != acked.sha256 or objects[row["object_key"]] != acked.size:
                verdict.add("lost", f"{doc} ({acked.via}): bytes differ from the acknowledged ones")
        for doc in ledger.deleted:
            row = documents.get(doc)
            if row is not None and row["status"] != "deleted":
                verdict.add("undeleted", f"{doc}: status {row['status']} after a 204")
        # 2: every object belongs to a stored document
        for key in objects:
            if key not in stored_keys:
                verdict.add("orphans", key)
        # 1: every stored document's object exists with its size (the acknowledged ones were checked above)
        for key, doc in stored_keys.items():
            row = documents[doc]
            if doc in live:
                continue
            if objects.get(key) != row["size_bytes"]:
                verdict.add("lost", f"{doc}: stored, object {'size differs' if key in objects else 'missing'}")
        # 7: no multipart upload without a live session
        async for upload in _multipart_uploads(s3, settings.s3_bucket):
            if upload["UploadId"] not in sessions:
                verdict.add("multipart", f"{upload['Key']} {upload['UploadId'][:16]}… since {upload['Initiated']}")
    # 3
    for doc, row in documents.items():
        if row["status"] == "pending":
            verdict.add("pending", doc)
    # 4: the index holds exactly the stored documents, at their version
    for doc, row in documents.items():
        entry = entries.get(doc)
        indexed = entry is not None and entry["status"] == "indexed"
        if row["status"] == "stored" and not (indexed and entry is not None and entry["version"] == row["version"]):
            verdict.add("unsearchable", f"{doc}: index {dict(entry) if entry else 'none'} vs version {row['version']}")
        if row["status"] != "stored" and indexed:
            verdict.add("ghost", f"{doc}: {row['status']} but indexed")
    for doc, entry in entries.items():
        if doc not in documents and entry["status"] == "indexed":
            verdict.add("ghost", f"{doc}: no such document")
    # 4, through the search API as a user would: a sample of live documents by their own word
    sampled = list(live.items())
    async with httpx.AsyncClient(timeout=10, headers={"Authorization": f"Bearer {token}"}) as http:
        for doc, acked in random.sample(sampled, min(sample, len(sampled))):
            hits = (await http.get(f"{search_url}/v1/search", params={"q": acked.token})).json()["hits"]
            if doc not in {hit["document_id"] for hit in hits}:
                verdict.add("unsearchable", f"{doc}: search for {acked.token} misses it")
        for doc in random.sample(sorted(ledger.deleted), min(sample, len(ledger.deleted))):
            acked = ledger.acked[doc]
            hits = (await http.get(f"{search_url}/v1/search", params={"q": acked.token})).json()["hits"]
            if doc in {hit["document_id"] for hit in hits}:
                verdict.add("ghost", f"{doc}: deleted but found by search")
    # 8
    verdict.dlq, letters = await count_dlq(settings.kafka_servers)
    if letters:
        verdict.evidence["dlq"] = letters[:10]
    for error in ledger.server_errors:
        verdict.add("http5xx", error)
    for item in ledger.unexpected:
        verdict.add("unexpected", item)
    return verdict
