"""S3: an aiobotocore client factory and the object operations Depot needs.

Only the standard S3 protocol is used (AWS S3, MinIO, or any compatible server).
Checksums are computed only where S3 requires one (``when_required``): Depot sends its own
``x-amz-checksum-sha256`` where its invariants need one (single-part uploads, presigned
single PUTs) and verifies multipart objects by re-reading them, so botocore's default
CRC32 of every request and response body would be CPU spent twice (docs/architecture.md, S3).

:func:`object_store` is the second client, obstore's (Rust ``object_store``), used for one call
only: the upload API's single-object conditional PUT, where aiobotocore cost ~2.8 ms of CPU
per 64 KiB upload (docs/architecture.md, S3: why obstore for this one call).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError
from obstore.store import S3Store

from depot_common.settings import DepotSettings
from depot_common.tracing import instrument_s3

if TYPE_CHECKING:
    from obstore.store import S3Credential


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


def object_store(settings: DepotSettings) -> S3Store:
    """An obstore store of the configured bucket, set up as :func:`s3_client`'s client: same endpoint, region,
    credentials (the settings' own; none there = the usual AWS chain), path-style addressing, no plain HTTP
    unless the endpoint is ``http://``, ``s3_timeout`` to connect and for each attempt, 3 attempts at most
    (obstore's default retries for minutes: an outage would hang the request). Every PUT carries the
    body's ``x-amz-checksum-sha256``. One per process, shared by every task (it holds the connection pool)."""
    timeout = timedelta(seconds=settings.s3_timeout)
    endpoint = settings.s3_endpoint.rstrip("/")
    config: dict[str, Any] = {
        "region": settings.s3_region,
        "virtual_hosted_style_request": False,
        "checksum_algorithm": "sha256",
        "conditional_put": "etag",
        "skip_signature": False,
        "unsigned_payload": False,
    }
    if endpoint:  # set both: AWS_ENDPOINT_URL_S3 in the environment would otherwise take precedence
        config["endpoint"] = config["aws_endpoint_url_s3"] = endpoint
    key, secret = settings.aws_access_key_id, settings.aws_secret_access_key
    credentials = None
    if key is not None and secret is not None:
        credentials = _StaticCredentials(key.get_secret_value(), secret.get_secret_value())
    return S3Store(
        settings.s3_bucket,
        config=config,  # type: ignore[arg-type]  # the keys are S3Config's, built as a dict to add the endpoint
        client_options={
            "allow_http": endpoint.startswith("http://"),
            "connect_timeout": timeout,
            "read_timeout": timeout,
            "timeout": timeout,
        },
        retry_config={
            "max_retries": 2,
            "retry_timeout": timeout,
            "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=2), "base": 2},
        },
        credential_provider=credentials,
    )


class _StaticCredentials:
    """The settings' keys as obstore's credential provider: never a session token from the environment."""

    def __init__(self, access_key_id: str, secret_access_key: str) -> None:
        self._credential: S3Credential = {
            "access_key_id": access_key_id,
            "secret_access_key": secret_access_key,
            "token": None,
            "expires_at": None,
        }

    def __call__(self) -> S3Credential:
        return self._credential


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
