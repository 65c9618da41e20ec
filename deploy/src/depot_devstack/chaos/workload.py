"""Well-behaved clients: they retry what they may, and remember what Depot acknowledged.

A client treats a timeout, a refused connection or a 503 as "try again later" and
retries the same request (the same ``Idempotency-Key`` for streamed uploads; the same
declared SHA-256 for presigned uploads, which Depot answers with the same upload). Every
answer is counted; a 5xx other than 503 is a failure of the run (docs/invariants.md, invariant 8).
The :class:`Ledger` is the clients' memory: what was acknowledged (201/200) and what
was deleted (204), against which the invariants are checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog

log = structlog.get_logger("chaos.workload")

MIB = 1024 * 1024
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo")
RETRYABLE = {502, 503, 504}


@dataclass
class Acked:
    """A document Depot acknowledged, and how."""

    sha256: str
    size: int
    via: str
    token: str  # a word only this document contains (to find it through search)


@dataclass
class Ledger:
    """What the clients saw."""

    acked: dict[str, Acked] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    delete_unanswered: set[str] = field(default_factory=set)  # a DELETE sent whose answer never came
    statuses: Counter[str] = field(default_factory=Counter)
    operations: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    gave_up: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    busy: set[str] = field(default_factory=set)
    contents: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # small documents' (name, bytes)

    def live(self) -> dict[str, Acked]:
        return {doc: acked for doc, acked in self.acked.items() if doc not in self.deleted}

    def choosable(self) -> list[str]:
        """Live documents an operation may pick: none in use by another, none whose DELETE is in doubt
        (a DELETE that gave up may have been carried out: a later DELETE would get a correct 404)."""
        taken = self.busy | self.delete_unanswered
        return [doc for doc in self.live() if doc not in taken]

    def ack(self, document: dict[str, Any], via: str, token: str, content: tuple[str, bytes] | None) -> None:
        doc_id = str(document["id"])
        self.acked[doc_id] = Acked(str(document["sha256"]), int(document["size_bytes"]), via, token)
        if content is not None and len(content[1]) <= 64 * 1024:
            self.contents[doc_id] = content


class GaveUp(Exception):
    """The request did not get a definitive answer before the operation's deadline."""


@dataclass
class Client:
    """One client: picks operations at random and performs them like a careful program."""

    name: str
    api_urls: list[str]
    token: str
    ledger: Ledger
    rng: random.Random
    timeout: float
    part_size: int
    http: httpx.AsyncClient = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.AsyncClient(timeout=self.timeout, headers={"Authorization": f"Bearer {self.token}"})

    async def close(self) -> None:
        await self.http.aclose()

    # --- plumbing --------------------------------------------------------------------

    def _content(self, size: int) -> tuple[str, bytes, str]:
        token = f"tok{uuid.uuid4().hex[:16]}"
        words = [self.rng.choice(WORDS) for _ in range(max(1, size // 8))]
        text = f"chaos {token} " + " ".join(words)
        data = text.encode()[:size] if size > len(token) + 10 else text.encode()
        if len(data) < size:
            data += b" " * (size - len(data))
        return f"{token}.txt", data, token

    async def _send(
        self, label: str, deadline: float, send: Callable[[str], Awaitable[httpx.Response]]
    ) -> httpx.Response:
        """Send until an answer that is not "try again": 503/502/504, timeouts and refused connections retry."""
        delay = 0.2
        while True:
            url = self.rng.choice(self.api_urls)
            try:
                response = await send(url)
            except httpx.TransportError as error:
                self.ledger.statuses[f"{label}:{type(error).__name__}"] += 1
            else:
                self.ledger.statuses[f"{label}:{response.status_code}"] += 1
                if response.status_code >= 500 and response.status_code != 503:
                    self.ledger.server_errors.append(f"{label} {response.status_code} {response.text[:200]}")
                if response.status_code not in RETRYABLE and response.status_code != 500:
                    return response
            if time.monotonic() + delay > deadline:
                raise GaveUp(label)
            await asyncio.sleep(delay * (0.5 + self.rng.random()))
            delay = min(delay * 2, 2.0)

    def _unexpected(self, label: str, response: httpx.Response) -> None:
        self.ledger.unexpected.append(f"{label} {response.status_code} {response.text[:200]}")

    # --- operations ------------------------------------------------------------------

    async def streamed(self, deadline: float, size: int) -> None:
        name, data, token = self._content(size)
        key = str(uuid.uuid4())
        response = await self._send(
            "upload",
            deadline,
            lambda url: self.http.post(
                f"{url}/v1/documents", files={"file": (name, data, "text/plain")}, headers={"Idempotency-Key": key}
            ),
        )
        if response.status_code == 201:
            self.ledger.ack(response.json(), "streamed", token, (name, data))
        elif response.status_code == 409:  # stored by an attempt whose answer was lost: it holds these bytes
            self.ledger.acked[str(response.json()["existing_id"])] = Acked(
                hashlib.sha256(data).hexdigest(), len(data), "streamed-409", token
            )
        else:
            self._unexpected("upload", response)

    async def batch(self, deadline: float) -> None:
        files = [self._content(self.rng.randint(100, 8 * 1024)) for _ in range(self.rng.randint(2, 4))]
        response = await self._send(
            "batch",
            deadline,
            lambda url: self.http.post(
                f"{url}/v1/documents:batch", files=[("files", (name, data, "text/plain")) for name, data, _ in files]
            ),
        )
        if response.status_code != 207:
            self._unexpected("batch", response)
            return
        by_name = {name: (data, token) for name, data, token in files}
        for item in response.json()["results"]:
            data, token = by_name[item["filename"]]
            status = int(item["status"])
            self.ledger.statuses[f"batch-item:{status}"] += 1
            if status == 201:
                self.ledger.ack(item["document"], "batch", token, (item["filename"], data))
            elif status == 409:
                existing = item.get("error", {}).get("existing_id")
                if existing:
                    sha = hashlib.sha256(data).hexdigest()
                    self.ledger.acked[str(existing)] = Acked(sha, len(data), "batch-409", token)
            elif status == 503 or status >= 500:
                if status != 503:
                    self.ledger.server_errors.append(f"batch-item {status} {item}")
                await self.streamed(deadline, len(data))  # the careful client retries that file alone
            else:
                self.ledger.unexpected.append(f"batch-item {status} {item}")

    async def duplicate(self, deadline: float) -> None:
        candidates = [doc for doc in self.ledger.choosable() if doc in self.ledger.contents]
        if not candidates:
            return
        doc = self.rng.choice(candidates)
        self.ledger.busy.add(doc)
        try:
            name, data = self.ledger.contents[doc]
            response = await self._send(
                "duplicate",
                deadline,
                lambda url: self.http.post(f"{url}/v1/documents", files={"file": (name, data, "text/plain")}),
            )
            if response.status_code != 409 or response.json().get("existing_id") != doc:
                self._unexpected("duplicate", response)
        finally:
            self.ledger.busy.discard(doc)

    async def delete(self, deadline: float) -> None:
        candidates = self.ledger.choosable()
        if not candidates:
            return
        doc = self.rng.choice(candidates)
        self.ledger.busy.add(doc)
        attempts = 0

        async def send(url: str) -> httpx.Response:
            nonlocal attempts
            attempts += 1
            return await self.http.delete(f"{url}/v1/documents/{doc}")

        try:
            response = await self._send("delete", deadline, send)
            if response.status_code == 204 or (response.status_code == 404 and attempts > 1):
                self.ledger.deleted.add(doc)  # a 404 on a retry: an earlier attempt deleted it
            else:
                self._unexpected("delete", response)
        except GaveUp:
            self.ledger.delete_unanswered.add(doc)  # it may have been carried out: stored intact or deleted
            raise
        finally:
            self.ledger.busy.discard(doc)

    async def presigned(self, deadline: float, *, multipart: bool) -> None:
        size = self.part_size + self.rng.randint(1, 256 * 1024) if multipart else self.rng.randint(1024, 256 * 1024)
        name, data, token = self._content(size)
        digest = hashlib.sha256(data).hexdigest()
        declared = {"filename": name, "size_bytes": len(data), "sha256": digest, "content_type": "text/plain"}
        label = "presigned-multipart" if multipart else "presigned"
        for _ in range(5):  # an expired or vanished upload starts again
            created = await self._send(label, deadline, lambda url: self.http.post(f"{url}/v1/uploads", json=declared))
            if created.status_code == 409:
                self.ledger.acked[str(created.json()["existing_id"])] = Acked(digest, len(data), label + "-409", token)
                return
            if created.status_code not in (200, 201):
                self._unexpected(label, created)
                return
            upload = created.json()
            etags = await self._put_parts(upload, data, deadline, label)
            if etags is None:
                continue
            body: dict[str, Any] = {}
            if len(upload["parts"]) > 1:
                body = {"parts": [{"part_number": number, "etag": etag} for number, etag in sorted(etags.items())]}
            complete = f"/v1/uploads/{upload['upload_id']}/complete"
            completed = await self._send(
                label + "-complete",
                deadline,
                lambda url, path=complete, body=body: self.http.post(url + path, json=body),  # type: ignore[misc]
            )
            if completed.status_code == 200:
                self.ledger.ack(completed.json(), label, token, (name, data))
                return
            if completed.status_code == 409 and completed.json().get("error") == "duplicate":
                existing = completed.json()["existing_id"]
                self.ledger.acked[str(existing)] = Acked(digest, len(data), label + "-409", token)
                return
            if completed.status_code in (404, 409, 410):  # not uploaded / expired: start again
                self.ledger.statuses[f"{label}-restart:{completed.status_code}"] += 1
                continue
            self._unexpected(label + "-complete", completed)
            return
        raise GaveUp(label)

    async def _put_parts(
        self, upload: dict[str, Any], data: bytes, deadline: float, label: str
    ) -> dict[int, str] | None:
        """PUT every part straight to S3 with the headers it lists; None when the URLs stopped working."""
        part_size = int(upload["part_size"])
        etags: dict[int, str] = {}
        for part in upload["parts"]:
            number = int(part["part_number"])
            chunk = data[(number - 1) * part_size : number * part_size]
            headers = {str(k): str(v) for k, v in (part.get("headers") or {}).items()}
            delay = 0.2
            while True:
                try:
                    response = await self.http.put(part["url"], content=chunk, headers=headers)
                except httpx.TransportError as error:
                    self.ledger.statuses[f"{label}-put:{type(error).__name__}"] += 1
                else:
                    self.ledger.statuses[f"{label}-put:{response.status_code}"] += 1
                    if response.status_code == 200:
                        etags[number] = response.headers.get("etag", "").strip('"')
                        break
                    if response.status_code == 412:  # If-None-Match: an earlier attempt created it
                        break
                    if response.status_code in (403, 404):  # expired URL or upload gone
                        return None
                if time.monotonic() + delay > deadline:
                    raise GaveUp(label + "-put")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        return etags


async def run_client(client: Client, until: float, op_deadline: float, weights: dict[str, int]) -> None:
    """Perform random operations until ``until``; each gets ``op_deadline`` seconds to finish."""
    names, counts = list(weights), list(weights.values())
    try:
        while time.monotonic() < until:
            operation = client.rng.choices(names, counts)[0]
            deadline = time.monotonic() + op_deadline
            client.ledger.operations[operation] += 1
            try:
                if operation == "streamed":
                    await client.streamed(deadline, client.rng.randint(200, 32 * 1024))
                elif operation == "streamed-large":
                    await client.streamed(deadline, client.part_size + client.rng.randint(1, 512 * 1024))
                elif operation == "batch":
                    await client.batch(deadline)
                elif operation == "duplicate":
                    await client.duplicate(deadline)
                elif operation == "delete":
                    await client.delete(deadline)
                elif operation == "presigned":
                    await client.presigned(deadline, multipart=False)
                elif operation == "presigned-multipart":
                    await client.presigned(deadline, multipart=True)
            except GaveUp as error:
                client.ledger.gave_up[str(error)] += 1
                log.info("chaos.client.gave_up", client=client.name, operation=str(error))
    finally:
        await client.close()


@dataclass
class Canary:
    """One small upload a second, timed from its 201 until search finds it."""

    api_urls: list[str]
    search_url: str
    token: str
    samples: list[tuple[float, float]] = field(default_factory=list)  # (acked at, seconds to searchable)
    missed: int = 0

    async def run(self, until: float, *, give_up_after: float = 120.0) -> None:
        rng = random.Random(0)  # noqa: S311 - which replica to call, not a secret
        headers = {"Authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(timeout=5, headers=headers) as http:
            probes = []
            while time.monotonic() < until:
                token = f"canary{uuid.uuid4().hex[:16]}"
                key = str(uuid.uuid4())
                try:
                    response = await http.post(
                        f"{rng.choice(self.api_urls)}/v1/documents",
                        files={"file": (f"{token}.txt", f"canary {token}".encode(), "text/plain")},
                        headers={"Idempotency-Key": key},
                    )
                except httpx.TransportError:
                    response = None
                if response is not None and response.status_code == 201:
                    doc = str(response.json()["id"])
                    probes.append(asyncio.create_task(self._searchable(http, doc, token, give_up_after)))
                await asyncio.sleep(1.0)
            await asyncio.gather(*probes)

    async def _searchable(self, http: httpx.AsyncClient, doc: str, token: str, give_up_after: float) -> None:
        acked = time.monotonic()
        while time.monotonic() - acked < give_up_after:
            with contextlib.suppress(httpx.TransportError, ValueError, KeyError):
                hits = (await http.get(f"{self.search_url}/v1/search", params={"q": token})).json()["hits"]
                if any(hit["document_id"] == doc for hit in hits):
                    self.samples.append((acked, time.monotonic() - acked))
                    return
            await asyncio.sleep(0.2)
        self.missed += 1
