"""``depot-indexer serve|consume|relay``: run the search API, the index consumer or its outbox relay."""

from __future__ import annotations

import asyncio

from depot_common.entrypoint import run_command, serve_http
from depot_indexer.bootstrap import build_app, run_consumer, run_relay
from depot_indexer.settings import IndexerSettings


def _serve(settings: IndexerSettings) -> None:
    serve_http(build_app(settings), host=settings.http_host, port=settings.http_port)


def _consume(settings: IndexerSettings) -> None:
    asyncio.run(run_consumer(settings))


def _relay(settings: IndexerSettings) -> None:
    asyncio.run(run_relay(settings))


def main(argv: list[str] | None = None) -> int:
    return run_command(
        argv,
        prog="depot-indexer",
        service="indexer",
        settings_class=IndexerSettings,
        commands={
            "serve": ("the search API on DEPOT_HTTP_HOST:DEPOT_HTTP_PORT", _serve),
            "consume": ("index the events of depot.documents.v1", _consume),
            "relay": ("publish the search outbox (document.indexed|index_failed) to depot.index.v1", _relay),
        },
    )


if __name__ == "__main__":
    raise SystemExit(main())
