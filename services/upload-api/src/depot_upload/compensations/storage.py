"""S3 adapter of the compensation worker: presigned uploads' verification reads plus copy and listing."""

from __future__ import annotations

from datetime import datetime

from botocore.exceptions import ClientError

from depot_common.errors import Unavailable
from depot_common.s3 import error_code, is_not_found
from depot_upload.presigned.storage import S3PresignStore


class S3CompensationObjects(S3PresignStore):
    """The compensation worker's object store: the verification reads plus copy and listing."""

    async def copy(self, source: str, target: str) -> bool:
        try:
            await self._s3.copy_object(
                Bucket=self._bucket, Key=target, CopySource={"Bucket": self._bucket, "Key": source}
            )
        except ClientError as error:
            if is_not_found(error):
                return False
            raise Unavailable(f"S3 CopyObject failed: {error_code(error)}") from error
        return True

    async def keys_older_than(self, prefix: str, cutoff: datetime) -> list[str]:
        keys: list[str] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        try:
            async for page in paginator.paginate(Bucket=self._bucket, Prefix=prefix):
                keys.extend(item["Key"] for item in page.get("Contents", ()) if item["LastModified"] < cutoff)
        except ClientError as error:
            raise Unavailable(f"S3 ListObjectsV2 failed: {error_code(error)}") from error
        return keys
