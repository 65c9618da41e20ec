"""``depot-indexer serve|consume``: run the search API or the index consumer."""

from __future__ import annotations

import asyncio

from depot_common.entrypoint import run_command, serve_http
from depot_indexer.bootstrap import build_app, run_consumer
from depot_indexer.settings import IndexerSettings


def _serve(settings: IndexerSettings) -> None:
    serve_http(build_app(settings), host=settings.http_host, port=settings.http_port)


def _consume(settings: IndexerSettings) -> None:
    asyncio.run(run_consumer(settings))


def main(argv: list[str] | None = None) -> int:
    return run_command(
        argv,
        prog="depot-indexer",
        service="indexer",
        settings_class=IndexerSettings,
        commands={
            "serve": ("the search API on DEPOT_HTTP_HOST:DEPOT_HTTP_PORT", _serve),
            "consume": ("index the events of depot.documents.v1", _consume),
        },
    )


if __name__ == "__main__":
    raise SystemExit(main())
