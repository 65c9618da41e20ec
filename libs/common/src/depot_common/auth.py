"""Bearer-token authentication: ``sub`` is the owner, the roles claim may contain ``admin``.

Tokens are HS256 JWTs signed with ``DEPOT_JWT_SECRET``, or RS256/ES256 JWTs from an OIDC
issuer whose keys are published at ``DEPOT_JWT_JWKS_URL`` (docs/api.md, "Authentication"). With a JWKS only the
asymmetric algorithms are accepted, so neither ``alg: none`` nor an HS256 token "signed" with
a public key gets in; ``iss`` and ``aud`` are required and checked (for HS256 too, when
``DEPOT_JWT_ISSUER``/``DEPOT_JWT_AUDIENCE`` are set), ``exp`` always, ``nbf`` when present,
each with ``DEPOT_JWT_LEEWAY`` seconds of clock skew. PyJWT does the parsing and the crypto;
:class:`JwksKeys` only decides when to fetch the key set.

A token that verified is remembered for up to :data:`VERIFIED_TOKEN_TTL` seconds (a client sends
the same one with every request; verifying it again cost ~0.1 ms of CPU per request): the
remembered principal is used only while the token is in date (``exp`` plus the leeway) and, for
a JWKS token, while the issuer still publishes the very key it verified with, so a withdrawn key
is refused at the same moment as without the cache.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import structlog

from depot_common.errors import Unauthorized, Unavailable
from depot_common.settings import DepotSettings

ADMIN_ROLE = "admin"
JWKS_ALGORITHMS = ["RS256", "ES256"]
SECRET_ALGORITHMS = ["HS256"]
#: How long a verified token's principal is remembered (capped by the token's own ``exp``).
VERIFIED_TOKEN_TTL = 60.0
#: How many verified tokens are remembered at most (the oldest is forgotten first).
VERIFIED_TOKEN_LIMIT = 4096

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    owner_id: str
    roles: frozenset[str]
    expires_at: float | None = None
    """The token's ``exp`` (seconds since the epoch): what outlives one request (a stream) ends there."""

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles


def mint_token(
    secret: str,
    owner: str,
    *,
    admin: bool = False,
    ttl: int = 3600,
    issuer: str = "",
    audience: str = "",
    roles_claim: str = "roles",
) -> str:
    """An HS256 token for ``owner`` valid ``ttl`` seconds (development and operations), with
    ``iss``/``aud`` when given and the roles at ``roles_claim`` (a dotted path)."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": owner, "iat": now, "exp": now + ttl}
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    *parents, leaf = roles_claim.split(".")
    target = claims
    for name in parents:
        target = target.setdefault(name, {})
    target[leaf] = [ADMIN_ROLE] if admin else []
    return jwt.encode(claims, secret, algorithm="HS256")


class JwksKeys:
    """The signing keys an OIDC issuer publishes, fetched without blocking the event loop.

    The key set is fetched on first use, again once it is ``max_age`` seconds old, and at once
    when a token names a ``kid`` it does not hold (key rotation) — but never twice within
    ``refresh_cooldown`` seconds, so tokens with made-up kids cannot hammer the issuer. One
    fetch at a time; callers arriving meanwhile share its result. When a fetch fails the keys
    already held stay in use (the issuer being briefly down does not lock everyone out); with
    no keys at all the caller gets 503. httpx does the fetching, on the event loop.
    """

    def __init__(self, url: str, *, max_age: float, refresh_cooldown: float, timeout: float = 5.0) -> None:
        self._url = url
        self._max_age = max_age
        self._cooldown = refresh_cooldown
        self._timeout = timeout
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -math.inf
        self._attempted_at = -math.inf
        self._fetching: asyncio.Task[None] | None = None

    async def key(self, kid: str) -> jwt.PyJWK:
        """The signing key ``kid`` (401 when the issuer does not publish it)."""
        if kid not in self._keys or time.monotonic() - self._fetched_at >= self._max_age:
            await self._refresh()
        if self._fetched_at == -math.inf:
            raise Unavailable("the token issuer's signing keys cannot be fetched", code="issuer_unavailable")
        key = self._keys.get(kid)
        if key is None:
            raise Unauthorized("invalid token: unknown signing key", code="invalid_token")
        return key

    async def _refresh(self) -> None:
        """Join the fetch in flight, or start one unless the last began under ``refresh_cooldown`` ago."""
        if self._fetching is None:
            if time.monotonic() - self._attempted_at < self._cooldown:
                return
            self._attempted_at = time.monotonic()
            self._fetching = asyncio.create_task(self._fetch())
        await asyncio.shield(self._fetching)  # a caller that gives up does not cancel the others' fetch

    async def _fetch(self) -> None:
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                response = await client.get(self._url, headers={"Accept": "application/json"})
                response.raise_for_status()
                key_set = jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as error:
            log.warning("auth.jwks.fetch_failed", url=self._url, error=str(error), keys_kept=len(self._keys))
            return
        finally:
            self._fetching = None
        self._keys = {key.key_id: key for key in key_set.keys if key.key_id and key.public_key_use in ("sig", None)}
        self._fetched_at = time.monotonic()
        log.info("auth.jwks.fetched", url=self._url, kids=sorted(self._keys))


@dataclass(frozen=True)
class _IssuerKey:
    """The issuer's key a token verified with, as :class:`JwksKeys` held it then."""

    keys: JwksKeys
    kid: str
    key: jwt.PyJWK


@dataclass(frozen=True)
class _Verified:
    principal: Principal
    key: _IssuerKey | None
    until: float
    """``time.monotonic()`` after which the token is verified again."""


class TokenVerifier:
    """Checks a bearer token and returns its :class:`Principal`."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        jwks: JwksKeys | None = None,
        issuer: str = "",
        audience: str = "",
        roles_claim: str = "roles",
        leeway: int = 30,
    ) -> None:
        if jwks is None and not secret:
            raise ValueError("a JWT secret or a JWKS is required")
        if jwks is not None and not (issuer and audience):
            raise ValueError("an OIDC issuer and audience are required with a JWKS")
        self._secret = secret or ""
        self._jwks = jwks
        self._issuer = issuer or None
        self._audience = audience or None
        self._roles_path = roles_claim.split(".")
        self._leeway = leeway
        self._required = ["sub", "exp", *(["iss"] if issuer else []), *(["aud"] if audience else [])]
        self._verified: dict[str, _Verified] = {}

    @classmethod
    def from_settings(cls, settings: DepotSettings) -> TokenVerifier:
        jwks = None
        if settings.jwt_jwks_url:
            jwks = JwksKeys(
                settings.jwt_jwks_url,
                max_age=settings.jwt_jwks_max_age,
                refresh_cooldown=settings.jwt_jwks_refresh_cooldown,
            )
        return cls(
            secret=settings.jwt_secret.get_secret_value() if settings.jwt_secret else None,
            jwks=jwks,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            roles_claim=settings.jwt_roles_claim,
            leeway=settings.jwt_leeway,
        )

    async def verify(self, token: str) -> Principal:
        """The token's principal: remembered from an earlier verification while that still holds, else verified."""
        remembered = self._verified.get(token)
        if remembered is not None:
            if await self._still_valid(remembered):
                return remembered.principal
            self._verified.pop(token, None)
        principal, key = await self._verify(token)
        if len(self._verified) >= VERIFIED_TOKEN_LIMIT:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = _Verified(principal, key, until=time.monotonic() + VERIFIED_TOKEN_TTL)
        return principal

    async def _still_valid(self, remembered: _Verified) -> bool:
        principal = remembered.principal
        if time.monotonic() >= remembered.until:
            return False
        if principal.expires_at is None or time.time() >= principal.expires_at + self._leeway:
            return False
        if remembered.key is not None:  # the issuer must still publish that key (a refresh may be due)
            try:
                return await remembered.key.keys.key(remembered.key.kid) is remembered.key.key
            except (Unauthorized, Unavailable):
                return False
        return True

    async def _verify(self, token: str) -> tuple[Principal, _IssuerKey | None]:
        issuer_key: _IssuerKey | None = None
        try:
            if self._jwks is not None:
                header = jwt.get_unverified_header(token)
                if header.get("alg") not in JWKS_ALGORITHMS:  # refused before any key lookup
                    raise jwt.InvalidAlgorithmError(f"algorithm {header.get('alg')!r} is not accepted")
                kid = header.get("kid")
                if not isinstance(kid, str) or not kid:
                    raise jwt.InvalidTokenError("no kid in the token header")
                issuer_key = _IssuerKey(self._jwks, kid, await self._jwks.key(kid))
                key: jwt.PyJWK | str = issuer_key.key
                algorithms = JWKS_ALGORITHMS
            else:
                key, algorithms = self._secret, SECRET_ALGORITHMS
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={"require": self._required},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired", code="token_expired") from None
        except (jwt.PyJWTError, ValueError) as error:
            raise Unauthorized(f"invalid token: {error}", code="invalid_token") from None
        owner = claims.get("sub")
        roles = self._roles(claims)
        if not isinstance(owner, str) or not owner or roles is None:
            raise Unauthorized("token has no usable sub/roles claims", code="invalid_token")
        expires = claims.get("exp")
        principal = Principal(
            owner_id=owner, roles=roles, expires_at=float(expires) if isinstance(expires, int | float) else None
        )
        return principal, issuer_key

    def _roles(self, claims: dict[str, Any]) -> frozenset[str] | None:
        """The roles at the configured claim path: none when absent, ``None`` when malformed."""
        value: Any = claims
        for name in self._roles_path:
            if not isinstance(value, dict) or name not in value:
                return frozenset()
            value = value[name]
        if not isinstance(value, list) or not all(isinstance(role, str) for role in value):
            return None
        return frozenset(value)
