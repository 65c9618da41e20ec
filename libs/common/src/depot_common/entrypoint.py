"""The command line every Depot service process starts from.

``run_command`` parses ``<prog> COMMAND``, loads the settings (failing fast with one line),
configures logging and tracing (:mod:`depot_common.tracing`) for ``<service>.<command>`` and runs the chosen process.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import TypeVar

import uvicorn
from fastapi import FastAPI

from depot_common.logging import configure_logging
from depot_common.settings import DepotSettings, load_settings
from depot_common.tracing import configure_tracing

S = TypeVar("S", bound=DepotSettings)


def serve_http(app: FastAPI, *, host: str, port: int) -> None:
    """Serve ``app`` with uvicorn; logging is ours (structlog), not uvicorn's."""
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, timeout_graceful_shutdown=10)


def run_command(
    argv: list[str] | None,
    *,
    prog: str,
    service: str,
    settings_class: type[S],
    commands: Mapping[str, tuple[str, Callable[[S], None]]],
) -> int:
    """Run one of ``commands`` (name → (help, runner)) with the loaded settings."""
    parser = argparse.ArgumentParser(prog=prog, description=f"Depot {service} processes.")
    parser.add_argument(
        "command", choices=list(commands), help="; ".join(f"{name}: {text}" for name, (text, _) in commands.items())
    )
    args = parser.parse_args(argv)
    settings = load_settings(settings_class)
    configure_logging(settings.log_format, settings.log_level, service=f"{service}.{args.command}")
    configure_tracing(f"{service}.{args.command}")
    commands[args.command][1](settings)
    return 0
