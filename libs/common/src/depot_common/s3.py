"""S3: an aiobotocore client factory and the object operations Depot needs.

Only the standard S3 protocol is used (AWS S3, MinIO, or any compatible server).
Checksums are computed only where S3 requires one (``when_required``): Depot sends its own
``x-amz-checksum-sha256`` where its invariants need one (single-part uploads, presigned
single PUTs) and verifies multipart objects by re-reading them, so botocore's default
CRC32 of every request and response body would be CPU spent twice (docs/architecture.md, S3).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from depot_common.settings import DepotSettings
from depot_common.tracing import instrument_s3


@contextlib.asynccontextmanager
async def s3_client(settings: DepotSettings) -> AsyncIterator[Any]:
    """An S3 client for the configured endpoint (empty endpoint = AWS); one per process, shared by every task."""
    async with get_session().create_client(
        "s3",
        endpoint_url=settings.s3_endpoint or None,
        region_name=settings.s3_region,
        aws_access_key_id=(settings.aws_access_key_id.get_secret_value() if settings.aws_access_key_id else None),
        aws_secret_access_key=(
            settings.aws_secret_access_key.get_secret_value() if settings.aws_secret_access_key else None
        ),
        config=AioConfig(
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=settings.s3_timeout,
            read_timeout=settings.s3_timeout,
            max_pool_connections=64,
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    ) as client:
        instrument_s3(client)
        yield client


def error_code(error: ClientError) -> str:
    """The S3 error code of a botocore ``ClientError`` (``NoSuchKey``, ``404``…)."""
    return str(error.response.get("Error", {}).get("Code", ""))


def is_not_found(error: ClientError) -> bool:
    return error_code(error) in {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


async def ensure_bucket(client: Any, bucket: str) -> None:
    """Create ``bucket`` unless it exists."""
    try:
        await client.head_bucket(Bucket=bucket)
    except ClientError as error:
        if not is_not_found(error):
            raise
        with contextlib.suppress(ClientError):
            await client.create_bucket(Bucket=bucket)
        await client.head_bucket(Bucket=bucket)


async def allow_browser_uploads(client: Any, bucket: str, origins: list[str]) -> None:
    """Let pages of ``origins`` PUT presigned URLs of ``bucket`` and read the ``ETag`` of each part.

    Written as the bucket's CORS rules (replacing any); every request header is allowed
    because a presigned PUT carries the signed headers its ticket lists (``If-None-Match``,
    ``x-amz-checksum-sha256``).
    """
    rule = {
        "AllowedOrigins": origins,
        "AllowedMethods": ["PUT", "GET", "HEAD"],
        "AllowedHeaders": ["*"],
        "ExposeHeaders": ["ETag"],
        "MaxAgeSeconds": 600,
    }
    await client.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [rule]})
