"""Process life cycle: run a long-lived coroutine until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger(__name__)


async def run_until_signalled(work: Awaitable[Any], *, on_signal: Callable[[], None] | None = None) -> None:
    """Run ``work`` until it ends; a signal calls ``on_signal`` (graceful) or cancels it."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        if on_signal is not None and not task.done():
            on_signal()
            loop.call_later(10, task.cancel)  # graceful stop gets 10 s, then cancel
        else:
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def every(interval: float, job: Callable[[], Awaitable[Any]], *, name: str) -> None:
    """Run ``job`` every ``interval`` seconds until cancelled; a failing run is logged, not fatal."""
    while True:
        try:
            await job()
        except Exception as error:  # the next run tries again
            log.warning("job.failed", job=name, error=repr(error))
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def background_task(work: Awaitable[Any]) -> AsyncIterator[asyncio.Task[Any]]:
    """Run ``work`` as a task for the block, and cancel it on the way out."""
    task = asyncio.ensure_future(work)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
