"""`depot dlq list|show|redrive` against a real broker, with the dead letters of a real EventConsumer."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import ConsumerRecord
from aiokafka.structs import RecordMetadata

from depot_common.cli import main
from depot_common.consumer import EventConsumer, dlq_topic
from depot_common.db import Connection
from depot_common.dlq import REDRIVEN_FROM
from depot_common.errors import BadRequest, Unavailable
from depot_common.events import CONTENT_TYPE, CloudEvent, DocumentDeleted, DocumentStored, encode
from depot_common.kafka import ensure_topics, make_producer
from depot_common.tracing import new_traceparent
from tests.conftest import background
from tests.consumer_helpers import Scratch, note, running_consumer, scratch_world, wait_for_effects
from tests.kafka_helpers import read_until

EVENTS_DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"


@dataclass
class Cli:
    """Runs `depot …` in-process (in a thread: it runs its own event loop) and captures its output."""

    capsys: pytest.CaptureFixture[str]

    async def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = await asyncio.to_thread(main, list(args))
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, kafka_bootstrap: str) -> Cli:
    monkeypatch.setenv("DEPOT_KAFKA_BOOTSTRAP", kafka_bootstrap)
    return Cli(capsys)


@pytest.fixture
async def scratch(pg_pool: asyncpg.Pool, kafka_bootstrap: str) -> AsyncIterator[Scratch]:
    """A schema with an inbox and an effects table, a fresh two-partition topic and its DLQ."""
    async with scratch_world(pg_pool, kafka_bootstrap, prefix="dlq", partitions=2) as world:
        yield world


@pytest.fixture
async def running(scratch: Scratch, pg_pool: asyncpg.Pool, kafka_bootstrap: str) -> AsyncIterator[EventConsumer]:
    """An EventConsumer over the scratch topic recording each note's text; notes in `scratch.broken` fail."""

    async def record(conn: Connection, event: CloudEvent[Any]) -> None:
        text = event.data.text
        if text in scratch.broken:
            raise Unavailable("the effects store is down")
        if text.startswith("refused"):
            raise BadRequest("never acceptable")
        await conn.execute(f"INSERT INTO {scratch.schema}.effects (text) VALUES ($1)", text)

    async with running_consumer(scratch, pg_pool, kafka_bootstrap, record, max_attempts=2) as event_consumer:
        yield event_consumer


TRACEPARENT = new_traceparent()
HEADERS = [("content-type", CONTENT_TYPE.encode()), ("traceparent", TRACEPARENT.encode())]


async def send(scratch: Scratch, value: bytes, key: bytes) -> RecordMetadata:
    """Publish to the scratch topic; where it landed."""
    metadata: RecordMetadata = await scratch.producer.send_and_wait(
        scratch.topic, value=value, key=key, headers=HEADERS
    )
    return metadata


async def dead_letters(bootstrap: str, scratch: Scratch, count: int) -> list[ConsumerRecord[bytes, bytes]]:
    return await read_until(bootstrap, scratch.dlq, lambda records: len(records) >= count)


def redriven(records: list[ConsumerRecord[bytes, bytes]]) -> list[ConsumerRecord[bytes, bytes]]:
    return [record for record in records if REDRIVEN_FROM in dict(record.headers)]


async def test_list_and_show_describe_each_dead_letter(
    scratch: Scratch, running: EventConsumer, pg_pool: asyncpg.Pool, kafka_bootstrap: str, cli: Cli
) -> None:
    """`list` prints one line per dead letter with its origin and error, `--json` the full fields, `show` everything."""
    poison = await send(scratch, b"not json at all", key=b"key-poison")
    refused = await send(scratch, encode(note("refused-1")), key=b"key-refused")
    await send(scratch, encode(note("next")), key=b"key-poison")
    assert await wait_for_effects(pg_pool, scratch.schema, ["next"]) == ["next"]
    await dead_letters(kafka_bootstrap, scratch, 2)

    code, out, err = await cli("dlq", "list", "--topic", scratch.topic, "--group", scratch.group)
    assert code == 0, err
    first, second = out.splitlines()
    assert first.startswith("partition=0 offset=0 status=pending key=key-poison attempts=1 ")
    assert f"original={scratch.topic}:{poison.partition}:{poison.offset} " in first
    assert 'error=PermanentError("not a CloudEvent' in first
    assert len(first.split(" error=", 1)[1]) <= 100
    assert second.startswith("partition=0 offset=1 status=pending key=key-refused attempts=1 ")
    assert f"original={scratch.topic}:{refused.partition}:{refused.offset} " in second
    assert second.endswith("error=BadRequest('never acceptable')")
    assert f"2 message(s) in {scratch.dlq}, 2 not redriven" in err

    code, out, _ = await cli("dlq", "list", "--topic", scratch.topic, "--group", scratch.group, "--json")
    assert code == 0
    rows = [json.loads(row) for row in out.splitlines()]
    assert [(row["offset"], row["key"], row["status"]) for row in rows] == [
        (0, "key-poison", "pending"),
        (1, "key-refused", "pending"),
    ]
    assert rows[0]["original_topic"] == scratch.topic
    assert rows[0]["original_offset"] == poison.offset
    assert len(rows[0]["error"]) > 100  # the full pydantic error, not the shortened one

    code, out, _ = await cli("dlq", "show", "--topic", scratch.topic, "--group", scratch.group, "--offset", "1")
    assert code == 0
    assert f"dlq:       {scratch.dlq}:0:1" in out
    assert "key:       key-refused" in out
    assert f"  traceparent: {TRACEPARENT}\n" in out
    assert "  x-error: BadRequest('never acceptable')\n" in out
    assert "  x-attempts: 1\n" in out
    assert '  "type": "test.note",\n' in out
    assert '    "text": "refused-1"\n' in out

    code, out, _ = await cli("dlq", "show", "--topic", scratch.topic, "--group", scratch.group, "--offset", "0")
    assert code == 0
    assert out.endswith("value:\nnot json at all\n")

    code, out, err = await cli("dlq", "show", "--topic", scratch.topic, "--group", scratch.group, "--offset", "5")
    assert code == 1
    assert out == ""
    assert "no message at offset 5" in err


async def test_redrive_republishes_once_and_the_consumer_applies_it_once(
    scratch: Scratch, running: EventConsumer, pg_pool: asyncpg.Pool, kafka_bootstrap: str, cli: Cli
) -> None:
    """A dead letter redriven after the fix returns to its partition, is applied once, and is never redriven again."""
    scratch.broken.add("fixme")
    event = note("fixme")
    original = await send(scratch, encode(event), key=b"doc-1")
    await send(scratch, encode(note("ok")), key=b"doc-2")
    assert await wait_for_effects(pg_pool, scratch.schema, ["ok"]) == ["ok"]
    [dead] = await dead_letters(kafka_bootstrap, scratch, 1)
    assert dict(dead.headers)["x-attempts"] == b"2"

    scratch.broken.clear()  # the fix
    code, out, err = await cli("dlq", "redrive", "--topic", scratch.topic, "--group", scratch.group, "--all")
    assert code == 0, err
    assert out == f"redriven 1 message(s) from {scratch.dlq} partition 0 (offsets 0..0) to {scratch.topic}\n"

    [back] = redriven(await read_until(kafka_bootstrap, scratch.topic, lambda rs: bool(redriven(rs))))
    assert (back.key, back.value, back.partition) == (b"doc-1", encode(event), original.partition)
    assert list(back.headers) == [*HEADERS, (REDRIVEN_FROM, f"{scratch.dlq}:0:0".encode())]
    assert await wait_for_effects(pg_pool, scratch.schema, ["fixme", "ok"]) == ["fixme", "ok"]

    for again in (["--all"], ["--offset", "0"]):
        code, out, err = await cli("dlq", "redrive", "--topic", scratch.topic, "--group", scratch.group, *again)
        assert code == 0, err
        assert out.startswith(f"nothing to redrive in {scratch.dlq}")
    code, out, _ = await cli("dlq", "list", "--topic", scratch.topic, "--group", scratch.group)
    assert " status=redriven " in out
    code, out, _ = await cli("dlq", "list", "--topic", scratch.topic, "--group", scratch.group, "--pending")
    assert out == ""

    await send(scratch, encode(event), key=b"doc-1")  # a duplicate delivery of the redriven event
    await send(scratch, encode(note("last")), key=b"doc-1")
    assert await wait_for_effects(pg_pool, scratch.schema, ["fixme", "last", "ok"]) == ["fixme", "last", "ok"]
    assert len(redriven(await read_until(kafka_bootstrap, scratch.topic, lambda rs: False, timeout=1))) == 1


async def test_redrive_goes_in_order_and_resumes_where_it_stopped(kafka_bootstrap: str, cli: Cli) -> None:
    """`--offset N` redrives the pending messages up to N, the next `--all` the rest, per partition, and no more."""
    topic, group = f"test.resume_{secrets.token_hex(4)}", "g"
    dlq = dlq_topic(topic, group)
    await ensure_topics([kafka_bootstrap], {topic: 1, dlq: 2})
    producer = make_producer([kafka_bootstrap])
    await producer.start()
    try:
        for partition, count in ((0, 3), (1, 2)):
            for n in range(count):
                await producer.send_and_wait(
                    dlq,
                    value=f"v{partition}{n}".encode(),
                    key=f"k{partition}{n}".encode(),
                    partition=partition,
                    headers=[
                        *HEADERS,
                        ("x-error", b"Unavailable('down')"),
                        ("x-original-topic", topic.encode()),
                        ("x-original-partition", b"0"),
                        ("x-original-offset", str(n).encode()),
                        ("x-attempts", b"5"),
                    ],
                )
    finally:
        await producer.stop()

    code, out, _ = await cli("dlq", "redrive", "--topic", topic, "--group", group, "--offset", "1")
    assert (code, out) == (0, f"redriven 2 message(s) from {dlq} partition 0 (offsets 0..1) to {topic}\n")
    code, out, _ = await cli("dlq", "list", "--topic", topic, "--group", group, "--pending")
    assert [line.split(" status=")[0] for line in out.splitlines()] == [
        "partition=0 offset=2",
        "partition=1 offset=0",
        "partition=1 offset=1",
    ]
    code, out, err = await cli("dlq", "redrive", "--topic", topic, "--group", group, "--offset", "9")
    assert code == 1
    assert "no message at offset 9" in err
    code, out, _ = await cli("dlq", "redrive", "--topic", topic, "--group", group, "--all")
    assert code == 0
    assert out.splitlines() == [
        f"redriven 1 message(s) from {dlq} partition 0 (offsets 2..2) to {topic}",
        f"redriven 2 message(s) from {dlq} partition 1 (offsets 0..1) to {topic}",
    ]
    code, out, _ = await cli("dlq", "redrive", "--topic", topic, "--group", group, "--all")
    assert (code, out) == (0, f"nothing to redrive in {dlq}\n")

    records = await read_until(kafka_bootstrap, topic, lambda rs: len(rs) >= 5)
    assert [record.value for record in records] == [b"v00", b"v01", b"v02", b"v10", b"v11"]
    assert [dict(record.headers)[REDRIVEN_FROM] for record in records] == [
        f"{dlq}:{partition}:{n}".encode() for partition, n in ((0, 0), (0, 1), (0, 2), (1, 0), (1, 1))
    ]


async def test_dlq_commands_explain_bad_input(
    kafka_bootstrap: str, cli: Cli, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty DLQ exits 0; a missing topic, bootstrap or argument exits 2 saying why; --help says replay is safe."""
    code, out, err = await cli("dlq", "list", "--topic", "no.such.topic", "--group", "nobody")
    assert (code, out) == (2, "")
    assert "topic no.such.topic.nobody.dlq does not exist" in err

    empty = f"test.empty_{secrets.token_hex(4)}"
    await ensure_topics([kafka_bootstrap], {dlq_topic(empty, "g"): 1})
    assert await cli("dlq", "list", "--topic", empty, "--group", "g") == (
        0,
        "",
        f"0 message(s) in {empty}.g.dlq, 0 not redriven\n",
    )
    assert (await cli("dlq", "redrive", "--topic", empty, "--group", "g", "--all"))[:2] == (
        0,
        f"nothing to redrive in {empty}.g.dlq\n",
    )

    with pytest.raises(SystemExit) as usage:
        main(["dlq", "redrive", "--topic", "t", "--group", "g"])
    assert usage.value.code == 2
    assert "one of the arguments --offset --all is required" in capsys.readouterr().err

    with pytest.raises(SystemExit) as shown:
        main(["dlq", "redrive", "--help"])
    assert shown.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "consumers are idempotent" in help_text
    assert "x-redriven-from" in help_text

    monkeypatch.delenv("DEPOT_KAFKA_BOOTSTRAP")
    assert main(["dlq", "list", "--topic", "t", "--group", "g"]) == 2
    assert "DEPOT_KAFKA_BOOTSTRAP is not set" in capsys.readouterr().err


def documented(language: str) -> str:
    """The first ``language`` code block of docs/events.md."""
    match = re.search(rf"```{language}\n(.*?)```", EVENTS_DOC.read_text(encoding="utf-8"), re.DOTALL)
    assert match is not None
    return match.group(1)


async def test_the_documented_consumer_applies_a_redriven_event_once(
    pg_pool: asyncpg.Pool, kafka_bootstrap: str, cli: Cli
) -> None:
    """The example consumer of docs/events.md dead-letters an event while its table is missing, applies it once after
    the fix and a redrive, and its version checks keep a deletion over a stale or duplicate document.stored."""
    example: dict[str, Any] = {}
    exec(compile(documented("python"), str(EVENTS_DOC), "exec"), example)
    statements = [statement.strip() for statement in documented("sql").split(";") if statement.strip()]
    table = next(statement for statement in statements if "TABLE billing.documents" in statement)
    topic = f"test.billing_{secrets.token_hex(4)}"
    await ensure_topics([kafka_bootstrap], {topic: 1})
    for statement in statements:
        if statement != table:
            await pg_pool.execute(statement)
    producer = make_producer([kafka_bootstrap])
    await producer.start()

    async def publish(event: CloudEvent[Any]) -> None:
        await producer.send_and_wait(topic, value=encode(event), key=event.subject.encode(), headers=HEADERS)

    document = uuid.uuid4()
    stored = CloudEvent[DocumentStored](
        source="depot/upload-api",
        type="document.stored",
        subject=str(document),
        data=DocumentStored(
            document_id=document,
            owner_id="alice",
            filename="notes.txt",
            content_type="text/plain",
            size_bytes=39,
            sha256="ab" * 32,
            object_key=f"documents/{document}",
            version=2,
        ),
    )
    deleted = CloudEvent[DocumentDeleted](
        source="depot/upload-api",
        type="document.deleted",
        subject=str(document),
        data=DocumentDeleted(document_id=document, owner_id="alice", version=3),
    )

    async def row_once_inbox_holds(events: int) -> tuple[Any, ...] | None:
        """The document's row once the consumer has recorded ``events`` event ids in its inbox."""
        for _ in range(150):
            if await pg_pool.fetchval("SELECT count(*) FROM billing.processed_events") >= events:
                break
            await asyncio.sleep(0.1)
        record = await pg_pool.fetchrow(
            "SELECT size_bytes, deleted, version FROM billing.documents WHERE id = $1", document
        )
        return tuple(record) if record else None

    try:
        async with background(example["consume"]([kafka_bootstrap], pg_pool, topic, session_timeout_ms=2000)):
            await publish(stored)  # billing.documents does not exist yet: retried, then dead-lettered
            dlq = dlq_topic(topic, example["GROUP"])
            [dead] = await read_until(kafka_bootstrap, dlq, lambda records: len(records) >= 1, timeout=30)
            assert b"UndefinedTableError" in dict(dead.headers)["x-error"]

            await pg_pool.execute(table)  # the fix
            code, out, err = await cli("dlq", "redrive", "--topic", topic, "--group", example["GROUP"], "--all")
            assert code == 0, err
            assert await row_once_inbox_holds(1) == (39, False, 2)

            await publish(deleted)
            await publish(stored)  # a duplicate: the inbox drops it
            await publish(stored.model_copy(update={"id": uuid.uuid4()}))  # stale: the version check drops it
            await publish(deleted.model_copy(update={"id": uuid.uuid4()}))  # same version: no change
            assert await row_once_inbox_holds(4) == (None, True, 3)
            await asyncio.sleep(0.5)
            assert await pg_pool.fetchval("SELECT count(*) FROM billing.processed_events") == 4
            code, out, _ = await cli("dlq", "redrive", "--topic", topic, "--group", example["GROUP"], "--all")
            assert (code, out) == (0, f"nothing to redrive in {dlq}\n")
    finally:
        await producer.stop()
        await pg_pool.execute("DROP SCHEMA billing CASCADE")
