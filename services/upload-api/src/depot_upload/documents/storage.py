"""S3 adapter: streams an upload into one object, hashing as the bytes pass.

Up to one part size is buffered; a smaller file is one ``PutObject``, a larger one an S3
multipart upload. Both are conditional (``If-None-Match: *``) so an existing object is
never overwritten. Memory per upload is bounded by the part size whatever the file size.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any
from urllib.parse import quote

import structlog
from botocore.exceptions import ClientError

from depot_common.errors import Conflict, PayloadTooLarge, Unavailable
from depot_common.faults import CrashPoints
from depot_common.s3 import error_code, is_not_found
from depot_upload.domain import StoredBlob

log = structlog.get_logger(__name__)


class S3BlobStore:
    def __init__(self, client: Any, *, bucket: str, part_size: int, crash_points: CrashPoints | None = None) -> None:
        self._crash = crash_points or CrashPoints()
        self._s3 = client
        self._bucket = bucket
        self._part_size = part_size

    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int, content_type: str
    ) -> StoredBlob:
        digest = hashlib.sha256()
        size = 0
        buffer = io.BytesIO()  # handed to botocore as a stream: no copy of the part is ever made
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        in_flight: asyncio.Task[dict[str, Any]] | None = None  # one part uploads while the next arrives
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"file exceeds the {max_bytes}-byte limit", max_bytes=max_bytes)
                digest.update(chunk)
                buffer.write(chunk)
                if buffer.tell() >= self._part_size:
                    if upload_id is None:
                        created = await self._s3.create_multipart_upload(
                            Bucket=self._bucket, Key=key, ContentType=content_type
                        )
                        upload_id = created["UploadId"]
                    if in_flight is not None:
                        parts.append(await in_flight)
                        self._crash.reached("after_part", key=key, parts=len(parts))
                    in_flight = asyncio.create_task(self._upload_part(key, upload_id, len(parts) + 1, buffer))
                    buffer = io.BytesIO()
            if upload_id is None:
                await self._s3.put_object(
                    Bucket=self._bucket,
                    Key=key,
                    Body=_rewound(buffer),
                    ContentType=content_type,
                    IfNoneMatch="*",
                    ChecksumSHA256=base64.b64encode(digest.digest()).decode(),
                )
            else:
                if in_flight is not None:
                    parts.append(await in_flight)
                    in_flight = None
                if buffer.tell():
                    parts.append(await self._upload_part(key, upload_id, len(parts) + 1, buffer))
                await self._s3.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    IfNoneMatch="*",
                )
                upload_id = None
        except ClientError as error:
            await self._abort(key, upload_id, in_flight)
            if error_code(error) == "PreconditionFailed":
                raise Conflict("object already exists", code="object_exists") from None
            raise Unavailable(f"S3 write failed: {error_code(error)}") from error
        except BaseException:
            await self._abort(key, upload_id, in_flight)
            raise
        return StoredBlob(size_bytes=size, sha256=digest.hexdigest())

    async def _upload_part(self, key: str, upload_id: str, number: int, body: io.BytesIO) -> dict[str, Any]:
        # a CRC32 per part: S3 refuses a part damaged in transit (the client computes checksums only when asked)
        response = await self._s3.upload_part(
            Bucket=self._bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=_rewound(body),
            ChecksumAlgorithm="CRC32",
        )
        return {"PartNumber": number, "ETag": response["ETag"]}

    async def _abort(self, key: str, upload_id: str | None, in_flight: asyncio.Task[Any] | None = None) -> None:
        if in_flight is not None:
            in_flight.cancel()
            with contextlib.suppress(BaseException):
                await in_flight
        if upload_id is None:
            return
        try:
            await self._s3.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=upload_id)
        except ClientError as error:  # the reconciler finds what is left
            log.warning("blob.abort_failed", key=key, error=error_code(error))

    async def delete(self, key: str) -> None:
        try:
            await self._s3.delete_object(Bucket=self._bucket, Key=key)
        except ClientError as error:
            if not is_not_found(error):
                raise Unavailable(f"S3 delete failed: {error_code(error)}") from error

    async def open(self, key: str) -> AsyncGenerator[bytes, None]:
        try:
            response = await self._s3.get_object(Bucket=self._bucket, Key=key)
        except ClientError as error:
            raise Unavailable(
                f"document content cannot be read: {error_code(error)}", code="content_unavailable"
            ) from error
        return _stream_body(response["Body"])

    async def presign_get(self, key: str, *, filename: str, content_type: str, expires_in: int) -> str:
        url: str = await self._s3.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self._bucket,
                "Key": key,
                "ResponseContentType": content_type,
                "ResponseContentDisposition": content_disposition(filename),
            },
            ExpiresIn=expires_in,
        )
        return url


def _rewound(buffer: io.BytesIO) -> io.BytesIO:
    buffer.seek(0)
    return buffer


async def _stream_body(body: Any, chunk_size: int = 256 * 1024) -> AsyncGenerator[bytes, None]:
    try:
        while chunk := await body.read(chunk_size):
            yield chunk
    finally:
        body.close()


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback name and the exact UTF-8 name (RFC 6266/5987)."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
