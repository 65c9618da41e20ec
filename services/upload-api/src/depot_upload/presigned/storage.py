"""S3 adapter for presigned uploads: URLs, multipart bookkeeping and verification reads.

The bytes never pass through the API on the way in; on completion they are streamed back
once, in bounded chunks, to measure their size and SHA-256 (hashing runs in a worker
thread so large objects do not stall the event loop).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Sequence
from typing import Any

import structlog
from botocore.exceptions import ClientError

from depot_common.errors import Conflict, Unavailable
from depot_common.s3 import error_code, is_not_found
from depot_upload.domain import StoredBlob
from depot_upload.presigned.domain import CompletedPart, PartUrl, ReceivedPart

log = structlog.get_logger(__name__)

#: Bytes hashed per step while verifying an object; also the most held in memory.
HASH_CHUNK = 1024 * 1024
_MISSING_PARTS = {"InvalidPart", "InvalidPartOrder", "EntityTooSmall"}


class S3PresignStore:
    def __init__(self, client: Any, *, bucket: str) -> None:
        self._s3 = client
        self._bucket = bucket

    async def presign_put(self, key: str, *, sha256: str, expires_in: int) -> PartUrl:
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode()
        url: str = await self._s3.generate_presigned_url(
            "put_object",
            Params={"Bucket": self._bucket, "Key": key, "IfNoneMatch": "*", "ChecksumSHA256": checksum},
            ExpiresIn=expires_in,
        )
        # both are in X-Amz-SignedHeaders: a PUT without them, or with other values, fails the signature
        return PartUrl(1, url, {"If-None-Match": "*", "x-amz-checksum-sha256": checksum})

    async def presign_part(self, key: str, multipart_upload_id: str, part_number: int, *, expires_in: int) -> PartUrl:
        url: str = await self._s3.generate_presigned_url(
            "upload_part",
            Params={"Bucket": self._bucket, "Key": key, "UploadId": multipart_upload_id, "PartNumber": part_number},
            ExpiresIn=expires_in,
        )
        return PartUrl(part_number, url)

    async def received_parts(self, key: str, multipart_upload_id: str | None) -> list[ReceivedPart] | None:
        if multipart_upload_id is None:
            try:
                head = await self._s3.head_object(Bucket=self._bucket, Key=key)
            except ClientError as error:
                if is_not_found(error):
                    return []
                raise Unavailable(f"S3 HeadObject failed: {error_code(error)}") from error
            return [ReceivedPart(1, str(head["ETag"]), int(head["ContentLength"]))]
        parts: list[ReceivedPart] = []
        paginator = self._s3.get_paginator("list_parts")
        try:
            async for page in paginator.paginate(Bucket=self._bucket, Key=key, UploadId=multipart_upload_id):
                parts.extend(
                    ReceivedPart(int(part["PartNumber"]), str(part["ETag"]), int(part["Size"]))
                    for part in page.get("Parts", ())
                )
        except ClientError as error:
            if error_code(error) == "NoSuchUpload":
                return None
            raise Unavailable(f"S3 ListParts failed: {error_code(error)}") from error
        return parts

    async def create_multipart(self, key: str, *, content_type: str) -> str:
        try:
            created = await self._s3.create_multipart_upload(Bucket=self._bucket, Key=key, ContentType=content_type)
        except ClientError as error:
            raise Unavailable(f"S3 CreateMultipartUpload failed: {error_code(error)}") from error
        return str(created["UploadId"])

    async def complete_multipart(self, key: str, multipart_upload_id: str, parts: Sequence[CompletedPart]) -> None:
        try:
            await self._s3.complete_multipart_upload(
                Bucket=self._bucket,
                Key=key,
                UploadId=multipart_upload_id,
                MultipartUpload={"Parts": [{"PartNumber": p.part_number, "ETag": p.etag} for p in parts]},
                IfNoneMatch="*",
            )
        except ClientError as error:
            code = error_code(error)
            if code in _MISSING_PARTS:
                raise Conflict(
                    "some parts are missing, too small, or their ETags do not match what S3 received",
                    code="not_uploaded",
                    s3_error=code,
                ) from None
            if code == "NoSuchUpload":  # completed by an earlier attempt: the object speaks for itself
                return
            if code == "PreconditionFailed":  # the object exists already; these parts are not needed
                log.warning("upload.object_exists", key=key)
                await self.abort_multipart(key, multipart_upload_id)
                return
            raise Unavailable(f"S3 CompleteMultipartUpload failed: {code}") from error

    async def abort_multipart(self, key: str, multipart_upload_id: str) -> None:
        try:
            await self._s3.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=multipart_upload_id)
        except ClientError as error:
            if error_code(error) != "NoSuchUpload" and not is_not_found(error):
                raise Unavailable(f"S3 AbortMultipartUpload failed: {error_code(error)}") from error

    async def size_of(self, key: str) -> int | None:
        try:
            head = await self._s3.head_object(Bucket=self._bucket, Key=key)
        except ClientError as error:
            if is_not_found(error):
                return None
            raise Unavailable(f"S3 HeadObject failed: {error_code(error)}") from error
        return int(head["ContentLength"])

    async def measure(self, key: str) -> StoredBlob | None:
        try:
            response = await self._s3.get_object(Bucket=self._bucket, Key=key)
        except ClientError as error:
            if is_not_found(error):
                return None
            raise Unavailable(f"S3 GetObject failed: {error_code(error)}") from error
        digest = hashlib.sha256()
        size = 0
        pending = bytearray()
        body = response["Body"]
        try:
            async with body:  # releases the connection however the read ends
                async for chunk in body.iter_chunks(HASH_CHUNK):
                    pending += chunk
                    if len(pending) >= HASH_CHUNK:
                        size += len(pending)
                        await asyncio.to_thread(digest.update, pending)
                        pending.clear()
        except Exception as error:  # the transport (aiohttp or httpx) failed mid-stream
            raise Unavailable(f"S3 read of {key} failed: {error!r}") from error
        size += len(pending)
        digest.update(pending)
        return StoredBlob(size_bytes=size, sha256=digest.hexdigest())

    async def delete(self, key: str) -> None:
        try:
            await self._s3.delete_object(Bucket=self._bucket, Key=key)
        except ClientError as error:
            if not is_not_found(error):
                raise Unavailable(f"S3 DeleteObject failed: {error_code(error)}") from error
