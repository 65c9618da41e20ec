"""PostgreSQL: an asyncpg pool, and SQL migrations applied in order and recorded.

Each service owns one schema and ships ``migrations/NNNN_name.sql`` files in its package
(plus, through :class:`Migrations`, scripts generated in code, such as a library's
``outbox_ddl``); ``migrate`` applies the ones not yet recorded in
``<schema>.schema_migrations`` inside one transaction holding an advisory lock, so
concurrent start-ups never race.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from typing import Any, TypeAlias

import asyncpg
import pydantic_core
import structlog
from asyncpg.pool import PoolConnectionProxy

log = structlog.get_logger(__name__)

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")

#: A connection of our own or one borrowed from a pool: both run queries the same way.
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


def identifier(name: str) -> str:
    """A schema or table name we own, checked so it is safe to splice into SQL."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


async def init_connection(conn: asyncpg.Connection) -> None:
    """``json`` and ``jsonb`` read as Python objects (decoded by pydantic-core's JSON parser: a sixth of
    ``json.loads``'s CPU on the outbox relay's headers) and written from them (``json.dumps``)."""
    for json_type in ("json", "jsonb"):
        await conn.set_type_codec(json_type, encoder=json.dumps, decoder=pydantic_core.from_json, schema="pg_catalog")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10, **kwargs: Any) -> asyncpg.Pool:
    """A connection pool whose jsonb columns read and write Python objects."""
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=init_connection, **kwargs)
    assert pool is not None
    return pool


async def keep_session(conn: asyncpg.Connection) -> None:
    """A pool ``reset`` that sends nothing: for a pool whose users leave no session state behind.

    asyncpg still rolls back a transaction left open and drops listeners; what this skips is
    its reset query (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``), one
    round trip on every release. Only for pools on which nothing takes a session-level
    advisory lock, LISTENs, SETs a session parameter or opens a cursor ``WITH HOLD``.
    """


def advisory_key(name: str) -> int:
    """A stable 32-bit advisory lock key for ``name``."""
    return zlib.crc32(name.encode())


@dataclass(frozen=True)
class Migrations:
    """A schema's migrations: the ``*.sql`` files of a package directory and scripts generated in
    code (name → SQL), applied together in name order."""

    files: Traversable
    generated: Mapping[str, str] = field(default_factory=dict)

    def scripts(self) -> list[tuple[str, str]]:
        """``(name, SQL)`` of every migration, in the order they apply."""
        scripts = {entry.name: entry for entry in self.files.iterdir() if entry.name.endswith(".sql")}
        clash = scripts.keys() & self.generated.keys()
        if clash:
            raise ValueError(f"migrations defined twice: {sorted(clash)}")
        texts = {name: entry.read_text() for name, entry in scripts.items()} | dict(self.generated)
        return sorted(texts.items())


#: What :func:`migrate` accepts: a package's migrations directory, or :class:`Migrations`.
MigrationSource: TypeAlias = "Traversable | Migrations"


async def migrate(pool: asyncpg.Pool, schema: str, migrations: MigrationSource) -> list[str]:
    """Apply the migrations not yet recorded for ``schema``; return the applied names."""
    schema = identifier(schema)
    scripts = (migrations if isinstance(migrations, Migrations) else Migrations(migrations)).scripts()
    applied: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", advisory_key(f"migrate:{schema}"))
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}.schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["name"] for row in await conn.fetch(f"SELECT name FROM {schema}.schema_migrations")}
        for name, script in scripts:
            if name in done:
                continue
            await conn.execute(script)
            await conn.execute(f"INSERT INTO {schema}.schema_migrations (name) VALUES ($1)", name)
            applied.append(name)
    if applied:
        log.info("db.migrated", schema=schema, applied=applied)
    return applied
