"""Check a presigned S3 URL's SigV4 signature the way S3 does on receipt (AWS Signature Version 4, query auth).

Written from the AWS specification, independently of botocore, so a test can show which
request headers a URL binds: S3 (AWS, MinIO) answers 403 ``SignatureDoesNotMatch`` to a
request whose signed headers are missing or carry other values. moto does not check
presigned signatures, so tests check them here.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qsl, quote, urlsplit


def signed_headers(url: str) -> list[str]:
    """The header names ``url`` is signed with (``X-Amz-SignedHeaders``)."""
    return dict(parse_qsl(urlsplit(url).query))["X-Amz-SignedHeaders"].split(";")


def signature_matches(url: str, *, method: str, headers: dict[str, str], secret_key: str) -> bool:
    """True when ``url``'s signature is valid for a request sending exactly ``headers`` (plus ``Host``)."""
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    query = dict(params)
    given = {name.lower(): value.strip() for name, value in headers.items()}
    given["host"] = parts.netloc
    names = query["X-Amz-SignedHeaders"].split(";")
    if any(name not in given for name in names):
        return False
    canonical_query = "&".join(
        f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}"
        for name, value in sorted(params)
        if name != "X-Amz-Signature"
    )
    canonical_request = "\n".join(
        [
            method,
            parts.path,
            canonical_query,
            "".join(f"{name}:{given[name]}\n" for name in names),
            ";".join(names),
            "UNSIGNED-PAYLOAD",
        ]
    )
    timestamp = query["X-Amz-Date"]
    _, scope = query["X-Amz-Credential"].split("/", 1)
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", timestamp, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = ("AWS4" + secret_key).encode()
    for element in scope.split("/"):
        key = hmac.new(key, element.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, query["X-Amz-Signature"])
