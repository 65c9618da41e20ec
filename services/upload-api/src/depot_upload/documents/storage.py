"""S3 adapter: streams an upload into one object, hashing as the bytes pass.

Up to one part size is buffered; a smaller file is one ``PutObject``, a larger one an S3
multipart upload. Both are conditional (``If-None-Match: *``) so an existing object is
never overwritten. Memory per upload is bounded by the part size whatever the file size.

The ``PutObject`` goes through obstore (Rust ``object_store``: ~0.5 ms of CPU per 64 KiB PUT
against ~2.8 ms with aiobotocore); the multipart upload and every other call stay on
aiobotocore (docs/architecture.md, S3: why obstore for this one call).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any
from urllib.parse import quote

import obstore
import structlog
from botocore.exceptions import ClientError
from obstore.exceptions import AlreadyExistsError
from obstore.exceptions import BaseError as ObstoreError
from obstore.store import S3Store

from depot_common.errors import Conflict, PayloadTooLarge, Unavailable
from depot_common.faults import CrashPoints
from depot_common.s3 import error_code, is_not_found
from depot_common.tracing import s3_answered, s3_request
from depot_upload.domain import StoredBlob

log = structlog.get_logger(__name__)


class S3BlobStore:
    def __init__(
        self,
        client: Any,
        objects: S3Store,
        *,
        bucket: str,
        part_size: int,
        crash_points: CrashPoints | None = None,
    ) -> None:
        """``client``: aiobotocore's, for every call but one; ``objects``: obstore's store of ``bucket``, for the
        single-object PUT."""
        self._crash = crash_points or CrashPoints()
        self._s3 = client
        self._objects = objects
        self._bucket = bucket
        self._part_size = part_size

    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int, content_type: str
    ) -> StoredBlob:
        digest = hashlib.sha256()
        size = 0
        # the chunks of the part being received, joined once when it is complete (one copy of each byte: a
        # BytesIO written chunk by chunk copied each of them and grew by copying again); a body that came in
        # one chunk is sent as it is
        held: list[bytes] = []
        held_size = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        in_flight: asyncio.Task[dict[str, Any]] | None = None  # one part uploads while the next arrives
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"file exceeds the {max_bytes}-byte limit", max_bytes=max_bytes)
                digest.update(chunk)
                held.append(chunk)
                held_size += len(chunk)
                if held_size >= self._part_size:
                    if upload_id is None:
                        created = await self._s3.create_multipart_upload(
                            Bucket=self._bucket, Key=key, ContentType=content_type
                        )
                        upload_id = created["UploadId"]
                    if in_flight is not None:
                        parts.append(await in_flight)
                        self._crash.reached("after_part", key=key, parts=len(parts))
                    part = b"".join(held)
                    held.clear()
                    held_size = 0
                    in_flight = asyncio.create_task(self._upload_part(key, upload_id, len(parts) + 1, part))
            if upload_id is None:
                await self._put_object(key, b"".join(held), content_type)
            else:
                if in_flight is not None:
                    parts.append(await in_flight)
                    in_flight = None
                if held_size:
                    parts.append(await self._upload_part(key, upload_id, len(parts) + 1, b"".join(held)))
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
        except AlreadyExistsError:  # the PutObject's If-None-Match: * failed (412)
            raise Conflict("object already exists", code="object_exists") from None
        except ObstoreError as error:  # an outage is found through the cause (depot_common.outages)
            raise Unavailable(f"S3 write failed: {type(error).__name__}") from error
        except BaseException:
            await self._abort(key, upload_id, in_flight)
            raise
        return StoredBlob(size_bytes=size, sha256=digest.hexdigest())

    async def _put_object(self, key: str, body: bytes, content_type: str) -> None:
        """One conditional ``PutObject`` (``If-None-Match: *``) of the buffered body, its ``x-amz-checksum-sha256``
        computed by obstore from the same bytes; never a multipart upload underneath (that would not be
        conditional), whatever obstore's own chunk size."""
        with s3_request("PutObject", "PUT") as span:
            try:
                await obstore.put_async(
                    self._objects,
                    key,
                    body,
                    mode="create",
                    attributes={"Content-Type": content_type},
                    use_multipart=False,
                )
            except AlreadyExistsError:
                s3_answered(span, 412)
                raise
            s3_answered(span, 200)

    async def _upload_part(self, key: str, upload_id: str, number: int, body: bytes) -> dict[str, Any]:
        # a CRC32 per part: S3 refuses a part damaged in transit (the client computes checksums only when asked)
        response = await self._s3.upload_part(
            Bucket=self._bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=io.BytesIO(body),  # shares the bytes (no copy); botocore reads it as a stream
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
