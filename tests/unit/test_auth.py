"""HS256 tokens: issuer and audience checked when configured; roles read at the configured claim path;
verified tokens remembered, never past their exp."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest

from depot_common import auth
from depot_common.auth import TokenVerifier, mint_token
from depot_common.errors import Unauthorized

SECRET = "k" * 40
ISSUER = "https://depot.test"
AUDIENCE = "depot-api"


async def test_hs256_with_issuer_and_audience_set_accepts_only_tokens_carrying_both() -> None:
    """With DEPOT_JWT_ISSUER/AUDIENCE set, an HS256 token needs exactly those iss and aud claims."""
    check = TokenVerifier(secret=SECRET, issuer=ISSUER, audience=AUDIENCE)
    right = mint_token(SECRET, "alice", issuer=ISSUER, audience=AUDIENCE)
    assert (await check.verify(right)).owner_id == "alice"
    for token in (
        mint_token(SECRET, "alice"),
        mint_token(SECRET, "alice", issuer=ISSUER),
        mint_token(SECRET, "alice", audience=AUDIENCE),
        mint_token(SECRET, "alice", issuer="https://other.test", audience=AUDIENCE),
        mint_token(SECRET, "alice", issuer=ISSUER, audience="other-api"),
    ):
        with pytest.raises(Unauthorized) as refused:
            await check.verify(token)
        assert refused.value.code == "invalid_token"


async def test_hs256_refuses_alg_none_and_other_algorithms() -> None:
    """An unsigned token, or one signed HS512 with the right secret, is refused."""
    check = TokenVerifier(secret=SECRET)
    claims = {"sub": "alice", "exp": int(time.time()) + 60, "roles": ["admin"]}
    for token in (jwt.encode(claims, None, algorithm="none"), jwt.encode(claims, SECRET * 2, algorithm="HS512")):
        with pytest.raises(Unauthorized):
            await check.verify(token)


async def test_roles_are_read_at_the_dotted_claim_path() -> None:
    """With roles_claim realm_access.roles the admin role there counts, a top-level roles claim does not."""
    check = TokenVerifier(secret=SECRET, roles_claim="realm_access.roles")
    nested = mint_token(SECRET, "ops", admin=True, roles_claim="realm_access.roles")
    assert jwt.decode(nested, SECRET, algorithms=["HS256"])["realm_access"] == {"roles": ["admin"]}
    assert (await check.verify(nested)).is_admin
    assert not (await check.verify(mint_token(SECRET, "ops", admin=True))).is_admin


async def test_malformed_roles_are_refused() -> None:
    """Roles that are not a list of strings make the token invalid rather than guessed at."""
    check = TokenVerifier(secret=SECRET)
    for roles in ("admin", [["admin"]], {"admin": True}):
        token = jwt.encode({"sub": "ops", "exp": int(time.time()) + 60, "roles": roles}, SECRET, algorithm="HS256")
        with pytest.raises(Unauthorized):
            await check.verify(token)


def test_a_jwks_verifier_needs_issuer_and_audience() -> None:
    """Building a JWKS verifier without an issuer or an audience is refused outright."""
    from depot_common.auth import JwksKeys

    keys = JwksKeys("https://issuer.test/certs", max_age=300, refresh_cooldown=30)
    with pytest.raises(ValueError, match="issuer and audience"):
        TokenVerifier(jwks=keys, issuer=ISSUER)


async def test_a_verified_token_is_remembered_instead_of_verified_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same token on later requests gets the same principal without another signature check."""
    decoded = count_decodes(monkeypatch)
    check = TokenVerifier(secret=SECRET)
    alice, bob = mint_token(SECRET, "alice"), mint_token(SECRET, "bob", admin=True)
    first = await check.verify(alice)
    assert await check.verify(alice) == first
    assert (await check.verify(bob)).is_admin
    assert (await check.verify(bob)).owner_id == "bob"
    assert decoded == [alice, bob]


async def test_a_remembered_token_is_refused_once_it_expires() -> None:
    """Remembering a token never stretches its exp: past exp (and the leeway) it is refused as expired."""
    check = TokenVerifier(secret=SECRET, leeway=0)
    expires = int(time.time()) + 2  # at least a second left for the first verification, however slow the machine
    token = jwt.encode({"sub": "alice", "exp": expires}, SECRET, algorithm="HS256")
    assert (await check.verify(token)).owner_id == "alice"
    await asyncio.sleep(max(0.0, expires - time.time()) + 0.05)
    with pytest.raises(Unauthorized) as refused:
        await check.verify(token)
    assert refused.value.code == "token_expired"


async def test_no_more_than_the_limit_of_tokens_is_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the limit the oldest remembered token is forgotten (and verified again when it comes back)."""
    monkeypatch.setattr(auth, "VERIFIED_TOKEN_LIMIT", 2)
    decoded = count_decodes(monkeypatch)
    check = TokenVerifier(secret=SECRET)
    tokens = [mint_token(SECRET, owner) for owner in ("a", "b", "c")]
    for token in (*tokens, tokens[2], tokens[1], tokens[0]):
        await check.verify(token)
    assert decoded == [*tokens, tokens[0]]


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens PyJWT decodes from now on, in order."""
    decoded: list[str] = []
    real_decode = jwt.decode

    def counting_decode(token: str, *args: Any, **kwargs: Any) -> Any:
        decoded.append(token)
        return real_decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    return decoded
