"""Bearer-token authentication: ``sub`` is the owner, ``roles`` may contain ``admin``.

Tokens are HS256 JWTs signed with ``DEPOT_JWT_SECRET``, or RS256/ES256 JWTs from an OIDC
issuer whose keys are published at ``DEPOT_JWT_JWKS_URL``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import jwt

from depot_common.errors import Unauthorized
from depot_common.settings import DepotSettings

ADMIN_ROLE = "admin"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    owner_id: str
    roles: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles


def mint_token(secret: str, owner: str, *, admin: bool = False, ttl: int = 3600) -> str:
    """An HS256 token for ``owner`` valid ``ttl`` seconds (development and operations)."""
    now = int(time.time())
    claims = {"sub": owner, "roles": [ADMIN_ROLE] if admin else [], "iat": now, "exp": now + ttl}
    return jwt.encode(claims, secret, algorithm="HS256")


class TokenVerifier:
    """Checks a bearer token and returns its :class:`Principal`."""

    def __init__(self, *, secret: str | None = None, jwks_url: str = "") -> None:
        if not secret and not jwks_url:
            raise ValueError("a JWT secret or a JWKS URL is required")
        self._secret = secret
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True) if jwks_url else None

    @classmethod
    def from_settings(cls, settings: DepotSettings) -> TokenVerifier:
        secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        return cls(secret=secret, jwks_url=settings.jwt_jwks_url)

    async def verify(self, token: str) -> Principal:
        try:
            if self._jwks is not None:
                key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
                claims = jwt.decode(
                    token,
                    key.key,
                    algorithms=["RS256", "ES256"],
                    options={"require": ["sub", "exp"], "verify_aud": False},
                )
            else:
                claims = jwt.decode(
                    token, self._secret or "", algorithms=["HS256"], options={"require": ["sub", "exp"]}
                )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired", code="token_expired") from None
        except (jwt.PyJWTError, ValueError) as error:
            raise Unauthorized(f"invalid token: {error}", code="invalid_token") from None
        owner = claims.get("sub")
        roles = claims.get("roles", [])
        if not isinstance(owner, str) or not owner or not isinstance(roles, list):
            raise Unauthorized("token has no usable sub/roles claims", code="invalid_token")
        return Principal(owner_id=owner, roles=frozenset(str(role) for role in roles))
