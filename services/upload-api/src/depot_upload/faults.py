"""Fault injection for crash-safety tests: die at a named step of the write path.

``DEPOT_CRASH_AT=<point>`` makes the process exit abruptly (``os._exit``, no clean-up, like
a ``kill -9``) when an upload reaches that point. Never set it in production.
"""

from __future__ import annotations

import os
from typing import Literal

import structlog

log = structlog.get_logger(__name__)

CrashPoint = Literal[
    "after_pending", "after_object", "before_stored", "after_stored", "after_session", "after_multipart_created"
]
CRASH_EXIT_CODE = 70


class CrashPoints:
    def __init__(self, armed: CrashPoint | None = None) -> None:
        self._armed = armed

    def reached(self, point: CrashPoint) -> None:
        if point == self._armed:
            log.warning("fault.crash", point=point)
            os._exit(CRASH_EXIT_CODE)
