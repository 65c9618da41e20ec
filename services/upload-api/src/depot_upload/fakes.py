"""In-memory fakes of depot_upload's Protocols, for fast tests of the service logic.

Like ``structlog.testing``, they ship beside what they fake. :class:`FakeDatabase` holds
the tables (documents, upload sessions, Idempotency-Keys, quarantine, outbox) and a
clock; :class:`FakeUnitOfWork` works on a copy of them and merges what it changed back on
``commit()`` only, so a test sees the same all-or-nothing as PostgreSQL gives.
:class:`FakeBucket` is one S3 bucket behind all three S3 Protocols. The repositories are in
each feature's ``fakes.py``. Integration tests against real servers stay beside these.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

from pydantic import BaseModel

from depot_common.errors import Conflict, PayloadTooLarge, Unavailable
from depot_common.events import type_of
from depot_upload.compensations.fakes import FakeCompensationRecords, QuarantineRow
from depot_upload.documents.fakes import FakeDocuments
from depot_upload.domain import Document, StoredBlob, Transition
from depot_upload.presigned.domain import CompletedPart, PartUrl, ReceivedPart
from depot_upload.presigned.fakes import FakeUploadSessions, SessionRow


@dataclass
class Tables:
    """The rows, by primary key; values are immutable (frozen dataclasses), so a copy is cheap."""

    documents: dict[Any, Document] = field(default_factory=dict)
    sessions: dict[Any, SessionRow] = field(default_factory=dict)
    idempotency: dict[tuple[str, str], tuple[str, Document]] = field(default_factory=dict)
    quarantine: dict[str, QuarantineRow] = field(default_factory=dict)
    outbox: list[tuple[str, BaseModel]] = field(default_factory=list)

    def copy(self) -> Tables:
        return Tables(
            documents=dict(self.documents),
            sessions=dict(self.sessions),
            idempotency=dict(self.idempotency),
            quarantine=dict(self.quarantine),
            outbox=list(self.outbox),
        )


class FakeDatabase:
    """The committed tables and the database clock (``advance`` moves it)."""

    def __init__(self, now: datetime | None = None) -> None:
        self.tables = Tables()
        self._now = now or datetime(2026, 1, 1, tzinfo=UTC)
        self.commits = 0

    def now(self) -> datetime:
        self._now += timedelta(microseconds=1)  # like clock_timestamp(): strictly increasing
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)

    def events(self) -> list[tuple[str, BaseModel]]:
        """The committed outbox: ``(type, data)`` in commit order."""
        return list(self.tables.outbox)

    def documents(self) -> FakeDocuments:
        """The document repository bound to the committed tables (as the pool-bound one is)."""
        return FakeDocuments(self.tables, self.now)

    def sessions(self) -> FakeUploadSessions:
        return FakeUploadSessions(self.tables, self.now)

    def uow(self) -> FakeUnitOfWork:
        """A unit of work factory's product: ``async with db.uow() as uow``."""
        return FakeUnitOfWork(self)

    def merge(self, base: Tables, changed: Tables) -> None:
        """Write what ``changed`` altered since ``base`` into the committed tables."""
        for table in fields(Tables):
            if table.name == "outbox":
                self.tables.outbox.extend(changed.outbox[len(base.outbox) :])
                continue
            before, after, committed = (getattr(t, table.name) for t in (base, changed, self.tables))
            for key in before.keys() - after.keys():
                committed.pop(key, None)
            for key, value in after.items():
                if before.get(key) is not value:
                    committed[key] = value
        self.commits += 1


class FakeUnitOfWork:
    """A transaction over a copy of the tables: ``commit()`` merges it, anything else discards it."""

    documents: FakeDocuments
    sessions: FakeUploadSessions
    compensations: FakeCompensationRecords

    def __init__(self, db: FakeDatabase) -> None:
        self._db = db
        self._base = db.tables.copy()
        self._tables = self._base.copy()
        self._done = False

    async def __aenter__(self) -> Self:
        self._base = self._db.tables.copy()
        self._tables = self._base.copy()
        self.documents = FakeDocuments(self._tables, self._db.now)
        self.sessions = FakeUploadSessions(self._tables, self._db.now)
        self.compensations = FakeCompensationRecords(self._tables, self._db.now)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._done = True

    async def apply(self, transition: Transition[Any]) -> Document:
        document = await self.documents.save(transition.document)
        self._tables.outbox.append((type_of(type(transition.event)), transition.event))
        return document

    async def commit(self) -> None:
        assert not self._done, "commit() after the unit of work ended"
        self._db.merge(self._base, self._tables)
        self._done = True


@dataclass
class FakeObject:
    data: bytes
    modified: datetime


class FakeBucket:
    """One S3 bucket: the ``BlobStore``, ``PresignStore`` and compensation ``ObjectStore`` Protocols.

    Tests play the client's presigned ``PUT`` with :meth:`put` and :meth:`upload_part`.
    """

    def __init__(self, clock: Any = None) -> None:
        self.objects: dict[str, FakeObject] = {}
        self.multipart: dict[str, tuple[str, dict[int, bytes]]] = {}
        self._ids = itertools.count(1)
        self._clock = clock or (lambda: datetime.now(UTC))
        self.calls: list[tuple[str, str]] = []
        self.failing: set[str] = set()
        """Names of methods that raise ``Unavailable`` (S3 down), for tests of failure paths."""
        self.before: dict[str, Callable[[], Awaitable[None]]] = {}
        """Per method name, a coroutine run (once) before the call: a concurrent request, interleaved."""

    async def _call(self, method: str, key: str) -> None:
        self.calls.append((method, key))
        if method in self.before:
            await self.before.pop(method)()
        if method in self.failing:
            raise Unavailable(f"S3 {method} failed: fake outage")

    # -- the client's side of presigned URLs --
    def put(self, key: str, data: bytes) -> None:
        self.objects[key] = FakeObject(data, self._clock())

    def upload_part(self, multipart_upload_id: str, part_number: int, data: bytes) -> str:
        self.multipart[multipart_upload_id][1][part_number] = data
        return _etag(data)

    # -- BlobStore --
    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int, content_type: str
    ) -> StoredBlob:
        await self._call("put_stream", key)
        body = bytearray()
        async for chunk in chunks:
            body += chunk
            if len(body) > max_bytes:
                raise PayloadTooLarge(f"file exceeds the {max_bytes}-byte limit", max_bytes=max_bytes)
        if key in self.objects:
            raise Conflict("object already exists", code="object_exists")
        self.put(key, bytes(body))
        return StoredBlob(size_bytes=len(body), sha256=hashlib.sha256(body).hexdigest())

    async def open(self, key: str) -> AsyncGenerator[bytes, None]:
        await self._call("open", key)
        if key not in self.objects:
            raise Unavailable("document content cannot be read: NoSuchKey", code="content_unavailable")
        return _once(self.objects[key].data)

    async def presign_get(self, key: str, *, filename: str, content_type: str, expires_in: int) -> str:
        return f"https://bucket.invalid/{key}?op=get&expires={expires_in}"

    # -- PresignStore --
    async def presign_put(self, key: str, *, sha256: str, expires_in: int) -> PartUrl:
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode()
        url = f"https://bucket.invalid/{key}?op=put&expires={expires_in}"
        return PartUrl(1, url, {"If-None-Match": "*", "x-amz-checksum-sha256": checksum})

    async def presign_part(self, key: str, multipart_upload_id: str, part_number: int, *, expires_in: int) -> PartUrl:
        return PartUrl(
            part_number, f"https://bucket.invalid/{key}?uploadId={multipart_upload_id}&partNumber={part_number}"
        )

    async def received_parts(self, key: str, multipart_upload_id: str | None) -> list[ReceivedPart] | None:
        await self._call("received_parts", key)
        if multipart_upload_id is None:
            found = self.objects.get(key)
            return [] if found is None else [ReceivedPart(1, _etag(found.data), len(found.data))]
        if multipart_upload_id not in self.multipart:
            return None
        received = self.multipart[multipart_upload_id][1]
        return [ReceivedPart(number, _etag(data), len(data)) for number, data in sorted(received.items())]

    async def create_multipart(self, key: str, *, content_type: str) -> str:
        await self._call("create_multipart", key)
        upload_id = f"mpu-{next(self._ids)}"
        self.multipart[upload_id] = (key, {})
        return upload_id

    async def complete_multipart(self, key: str, multipart_upload_id: str, parts: Sequence[CompletedPart]) -> None:
        await self._call("complete_multipart", key)
        if multipart_upload_id not in self.multipart:  # completed by an earlier attempt
            return
        received = self.multipart[multipart_upload_id][1]
        if any(
            received.get(part.part_number) is None or _etag(received[part.part_number]) != part.etag for part in parts
        ):
            raise Conflict("some parts are missing or their ETags do not match", code="not_uploaded")
        del self.multipart[multipart_upload_id]
        if key not in self.objects:  # If-None-Match: *
            self.put(key, b"".join(received[part.part_number] for part in parts))

    async def abort_multipart(self, key: str, multipart_upload_id: str) -> None:
        await self._call("abort_multipart", key)
        self.multipart.pop(multipart_upload_id, None)

    async def size_of(self, key: str) -> int | None:
        await self._call("size_of", key)
        found = self.objects.get(key)
        return len(found.data) if found else None

    async def measure(self, key: str) -> StoredBlob | None:
        await self._call("measure", key)
        found = self.objects.get(key)
        if found is None:
            return None
        return StoredBlob(size_bytes=len(found.data), sha256=hashlib.sha256(found.data).hexdigest())

    async def delete(self, key: str) -> None:
        await self._call("delete", key)
        self.objects.pop(key, None)

    # -- compensation ObjectStore --
    async def copy(self, source: str, target: str) -> bool:
        await self._call("copy", source)
        if source not in self.objects:
            return False
        self.objects[target] = FakeObject(self.objects[source].data, self._clock())
        return True

    async def keys_older_than(self, prefix: str, cutoff: datetime) -> list[str]:
        return sorted(key for key, found in self.objects.items() if key.startswith(prefix) and found.modified < cutoff)


def _etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'  # noqa: S324 - S3's ETag of a part, not a security hash


async def _once(data: bytes) -> AsyncGenerator[bytes, None]:
    yield data
