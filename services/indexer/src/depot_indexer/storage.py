"""S3 adapter of :class:`~depot_indexer.ports.BlobReader`: a ranged ``GetObject`` through obstore.

obstore (Rust ``object_store``, the client the upload API PUTs with: ``depot_common.s3.object_store``)
signs the request (SigV4) and sends it from its own threads; the event loop only hands it over
and takes the bytes back. Presigning with the aiobotocore client and fetching the URL with
aiohttp cost the indexer about 2.5-3.5 ms of CPU per 1 KiB object on this machine (botocore's
endpoint rules and signer ~0.5 ms, aiohttp's request ~2 ms), obstore ~1.2 ms, of which ~0.25 ms
on the event loop (docs/architecture.md, Indexer throughput). The object's bytes are read in
full either way, every time.
"""

from __future__ import annotations

import re

import obstore
from obstore.exceptions import BaseError as ObstoreError
from obstore.store import S3Store

from depot_common import tracing
from depot_common.errors import Unavailable
from depot_indexer.ports import BlobNotFound

#: S3's answer to a range on an empty object (it has no byte 0): status 416, code ``InvalidRange``.
_INVALID_RANGE = re.compile(r"\b416\b|<Code>InvalidRange</Code>")


class S3BlobReader:
    """Reads object prefixes through ``store`` (an obstore ``S3Store`` of the bucket, shared by every task)."""

    def __init__(self, store: S3Store) -> None:
        self._store = store

    async def read(self, key: str, max_bytes: int) -> bytes:
        with tracing.s3_request("GetObject", "GET") as span:
            try:
                data = await obstore.get_range_async(self._store, key, start=0, end=max_bytes)
            except FileNotFoundError:  # obstore's NotFoundError: 404 NoSuchKey
                tracing.s3_answered(span, 404)
                raise BlobNotFound(key) from None
            except ObstoreError as error:
                if _INVALID_RANGE.search(str(error)):
                    tracing.s3_answered(span, 416)
                    return b""
                # an outage (unreachable, timed out, 5xx after the retries) is found through the cause
                raise Unavailable(f"S3 GetObject {key} failed: {type(error).__name__}") from error
            tracing.s3_answered(span, 206)
        return bytes(data)
