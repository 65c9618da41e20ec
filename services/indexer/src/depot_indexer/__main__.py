"""``depot-indexer serve|consume``: run the search API or the index consumer."""

from __future__ import annotations

import argparse
import asyncio

import uvicorn

from depot_common.logging import configure_logging
from depot_common.settings import load_settings
from depot_indexer.bootstrap import build_app, run_consumer
from depot_indexer.settings import IndexerSettings


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, load settings, and run the chosen process."""
    parser = argparse.ArgumentParser(prog="depot-indexer", description="Depot indexer processes.")
    parser.add_argument(
        "command",
        choices=["serve", "consume"],
        help="serve: the search API (DEPOT_HTTP_HOST:DEPOT_HTTP_PORT); consume: index depot.documents.v1",
    )
    args = parser.parse_args(argv)
    settings = load_settings(IndexerSettings)
    configure_logging(settings.log_format, settings.log_level, service=f"indexer.{args.command}")
    if args.command == "serve":
        uvicorn.run(
            build_app(settings),
            host=settings.http_host,
            port=settings.http_port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=10,
        )
    else:
        asyncio.run(run_consumer(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
