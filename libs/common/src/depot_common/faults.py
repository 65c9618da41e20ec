"""Fault injection for crash-safety tests: die at a named step of a write path, a relay or a worker.

``DEPOT_CRASH_AT=<point>`` makes the process exit abruptly (``os._exit``, no clean-up, like
a ``kill -9``) when it reaches that point. Never set it in production. One list for every
service (tests/integration/test_crash_safety.py kills each at its points):

* streamed upload (upload-api): ``after_pending``, ``after_part`` (a multipart stream with
  some parts in S3), ``after_object``, ``after_stored``; delete: ``after_delete_commit``
  (``deleted`` committed, the object not yet removed);
* presigned upload (upload-api): ``after_session`` (session committed, no S3 upload yet),
  ``after_multipart_created`` (S3 upload created, its id not recorded), ``before_upload_stored``
  (complete verified the bytes, ``stored`` not committed);
* outbox relay (every service): ``after_send`` (the broker acked the batch, not marked published);
* upload-api's compensation worker: ``after_quarantine_copy`` (an orphan copied to
  ``quarantine/`` and recorded, the original not yet deleted).
"""

from __future__ import annotations

import os
from typing import Literal

import structlog

log = structlog.get_logger(__name__)

CrashPoint = Literal[
    "after_pending",
    "after_part",
    "after_object",
    "after_stored",
    "after_delete_commit",
    "after_session",
    "after_multipart_created",
    "before_upload_stored",
    "after_send",
    "after_quarantine_copy",
]
CRASH_EXIT_CODE = 70


class CrashPoints:
    def __init__(self, armed: CrashPoint | None = None) -> None:
        self._armed = armed

    def reached(self, point: CrashPoint, **context: object) -> None:
        if point == self._armed:
            log.warning("fault.crash", point=point, **context)
            os._exit(CRASH_EXIT_CODE)
