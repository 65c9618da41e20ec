"""Reading stored bytes back: which documents a run verifies, how fast, and the streamed hash.

Reading every byte of a bucket is expensive, so ``content_mismatch`` runs only when asked
(``--verify-content``: every ``stored`` document; ``--verify-sample F``: a random share F)
and reads at most ``DEPOT_RECONCILE_VERIFY_BYTES_PER_S`` (:class:`Pacer`). An object is
read in chunks of :data:`HASH_CHUNK` bytes, so memory stays flat whatever its size
(:func:`hash_object`).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from depot_common.s3 import is_not_found

#: Bytes read and hashed per step; about the most of one object held in memory at once.
HASH_CHUNK = 1024 * 1024
#: The most unused reading time a pacer lets accumulate: after an idle spell it reads at
#: full speed for at most this long before pacing again.
BURST_S = 1.0


@dataclass(frozen=True, slots=True)
class Verification:
    """What a run reads back: a share ``sample`` (0 < sample ≤ 1) of the ``stored`` documents, at ``bytes_per_s``.

    ``seed`` makes the sample reproducible (a run uses its own id).
    """

    sample: float
    bytes_per_s: int
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.sample <= 1:
            raise ValueError(f"a verification sample is a share in (0, 1], not {self.sample}")
        if self.bytes_per_s <= 0:
            raise ValueError(f"a verification pace is a positive number of bytes per second, not {self.bytes_per_s}")

    def sampler(self) -> Callable[[], bool]:
        """Draws, one per document in turn, whether it is verified: true with probability ``sample``."""
        rng = random.Random(self.seed)  # noqa: S311 - a sample, not a secret
        return lambda: rng.random() < self.sample


class Pacer:
    """Keeps reading at ``bytes_per_s`` on average: ``spend(n)`` after reading ``n`` bytes sleeps until they are due.

    Unused time accumulates for at most :data:`BURST_S`, so an idle spell (a page of
    unsampled documents) does not buy a burst at full speed later.
    """

    def __init__(
        self,
        bytes_per_s: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._rate = float(bytes_per_s)
        self._clock = clock
        self._sleep = sleep
        self._due = clock()  # when the bytes spent so far are paid for

    async def spend(self, size: int) -> None:
        now = self._clock()
        self._due = max(self._due, now - BURST_S) + size / self._rate
        if self._due > now:
            await self._sleep(self._due - now)


@dataclass(frozen=True, slots=True)
class Hashed:
    """An object as read back: its size, and its SHA-256 (``None`` when its size already differs, so not read)."""

    size: int
    sha256: str | None


async def hash_object(
    s3: Any, bucket: str, key: str, *, expected_size: int | None, pacer: Pacer | None = None
) -> Hashed | None:
    """Stream the object through SHA-256, ``HASH_CHUNK`` bytes at a time, paced; ``None`` when it does not exist.

    An object whose size is not ``expected_size`` is not read (its bytes cannot match).
    """
    try:
        response = await s3.get_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if is_not_found(error):
            return None
        raise
    size = int(response["ContentLength"])
    body = response["Body"]
    async with body:  # releases the connection however the read ends (the body itself reads, not what it yields)
        if size != expected_size:
            return Hashed(size, None)
        digest = hashlib.sha256()
        async for chunk in body.iter_chunks(HASH_CHUNK):
            digest.update(chunk)
            if pacer is not None:
                await pacer.spend(len(chunk))
    return Hashed(size, digest.hexdigest())
