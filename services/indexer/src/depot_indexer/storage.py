"""S3 adapter of :class:`~depot_indexer.ports.BlobReader`: a ranged ``GetObject``."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from depot_common.errors import Unavailable
from depot_common.s3 import error_code, is_not_found
from depot_indexer.ports import BlobNotFound


class S3BlobReader:
    """Reads object prefixes from ``bucket`` with an aiobotocore S3 client."""

    def __init__(self, client: Any, *, bucket: str) -> None:
        self._s3 = client
        self._bucket = bucket

    async def read(self, key: str, max_bytes: int) -> bytes:
        try:
            response = await self._s3.get_object(Bucket=self._bucket, Key=key, Range=f"bytes=0-{max_bytes - 1}")
            async with response["Body"] as body:
                data: bytes = await body.read()
        except ClientError as error:
            if is_not_found(error):
                raise BlobNotFound(key) from None
            if error_code(error) == "InvalidRange":  # an empty object has no byte 0
                return b""
            raise Unavailable(f"S3 GetObject {key} failed: {error_code(error)}") from error
        return data[:max_bytes]
