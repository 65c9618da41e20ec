"""``depot-upload serve|relay``: run the HTTP API or the outbox relay."""

from __future__ import annotations

import argparse
import asyncio

import uvicorn

from depot_common.logging import configure_logging
from depot_common.settings import load_settings
from depot_upload.bootstrap import build_app, run_relay
from depot_upload.settings import UploadSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="depot-upload", description="Depot upload-api processes.")
    parser.add_argument(
        "command",
        choices=["serve", "relay"],
        help="serve: the HTTP API (DEPOT_HTTP_HOST:DEPOT_HTTP_PORT); relay: the outbox relay",
    )
    args = parser.parse_args(argv)
    settings = load_settings(UploadSettings)
    configure_logging(settings.log_format, settings.log_level, service=f"upload-api.{args.command}")
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
        asyncio.run(run_relay(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
