"""``depot-upload serve|relay|compensate``: run the HTTP API, the outbox relay or the compensation worker."""

from __future__ import annotations

import asyncio

from depot_common.entrypoint import run_command, serve_http
from depot_upload.bootstrap import build_app, run_compensations, run_relay
from depot_upload.settings import UploadSettings


def _serve(settings: UploadSettings) -> None:
    serve_http(build_app(settings), host=settings.http_host, port=settings.http_port)


def _relay(settings: UploadSettings) -> None:
    asyncio.run(run_relay(settings))


def _compensate(settings: UploadSettings) -> None:
    asyncio.run(run_compensations(settings))


def main(argv: list[str] | None = None) -> int:
    return run_command(
        argv,
        prog="depot-upload",
        service="upload-api",
        settings_class=UploadSettings,
        commands={
            "serve": ("the upload HTTP API on DEPOT_HTTP_HOST:DEPOT_HTTP_PORT", _serve),
            "relay": ("publish the upload outbox to Kafka", _relay),
            "compensate": ("execute the reconciler's upload compensations, purge the quarantine", _compensate),
        },
    )


if __name__ == "__main__":
    raise SystemExit(main())
