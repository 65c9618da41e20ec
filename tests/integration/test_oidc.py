"""OIDC tokens (docs/api.md, "Authentication") against a JWKS served by a local HTTP server, through the real APIs."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from depot_common.auth import JwksKeys, TokenVerifier, mint_token
from depot_common.errors import Unauthorized, Unavailable
from depot_devstack import servers
from depot_reconciler.bootstrap import build_app as build_reconciler_app
from depot_reconciler.settings import ReconcilerSettings
from depot_upload.bootstrap import build_app
from depot_upload.settings import UploadSettings
from tests.conftest import serve
from tests.oidc import AUDIENCE, ISSUER, Issuer, SigningKey, claims, serve_jwks, unsigned

KEYCLOAK_ROLES = "realm_access.roles"


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return SigningKey.rsa("rsa-1")


@pytest.fixture(scope="module")
def ec_key() -> SigningKey:
    return SigningKey.ec("ec-1")


@pytest.fixture(scope="module")
def issuer(rsa_key: SigningKey, ec_key: SigningKey) -> Iterator[Issuer]:
    with serve_jwks(rsa_key, ec_key) as served:
        yield served


def oidc_settings(issuer: Issuer) -> dict[str, Any]:
    """Settings of a service trusting ``issuer`` (roles where Keycloak puts them; a 1 s refresh cooldown)."""
    return {
        "jwt_jwks_url": issuer.url,
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        "jwt_roles_claim": KEYCLOAK_ROLES,
        "jwt_jwks_refresh_cooldown": 1,
    }


@pytest.fixture(scope="module")
async def oidc_api(issuer: Issuer, make_settings: Callable[..., Any]) -> AsyncIterator[str]:
    """An upload API that trusts the local issuer (its DEPOT_JWT_SECRET is set too, and must not matter)."""
    async with serve(build_app(make_settings(UploadSettings, **oidc_settings(issuer)))) as url:
        yield url


async def upload(http: httpx.AsyncClient, url: str, token: str) -> httpx.Response:
    data = f"oidc {secrets.token_hex(16)}\n".encode()
    return await http.post(
        f"{url}/v1/documents", headers={"Authorization": f"Bearer {token}"}, files={"file": ("a.txt", data)}
    )


def owner() -> str:
    return f"oidc-{secrets.token_hex(4)}"


async def test_issuer_tokens_signed_with_rsa_or_ec_keys_are_accepted(
    http: httpx.AsyncClient, oidc_api: str, rsa_key: SigningKey, ec_key: SigningKey
) -> None:
    """An RS256 and an ES256 token from the issuer, for this audience, in date, act as their sub."""
    alice = owner()
    created = await upload(http, oidc_api, rsa_key.sign(claims(alice)))
    assert created.status_code == 201, created.text
    document = f"{oidc_api}/v1/documents/{created.json()['id']}"
    read = await http.get(document, headers={"Authorization": f"Bearer {ec_key.sign(claims(alice))}"})
    assert read.status_code == 200, read.text
    other = await http.get(document, headers={"Authorization": f"Bearer {ec_key.sign(claims(owner()))}"})
    assert other.status_code == 404


async def test_a_little_clock_skew_is_tolerated(http: httpx.AsyncClient, oidc_api: str, rsa_key: SigningKey) -> None:
    """A token that expired 5 s ago, or becomes valid in 5 s, is still within the leeway."""
    now = int(time.time())
    assert (await upload(http, oidc_api, rsa_key.sign(claims(owner(), exp=now - 5)))).status_code == 201
    assert (await upload(http, oidc_api, rsa_key.sign(claims(owner(), nbf=now + 5)))).status_code == 201


def _without_audience(rsa_key: SigningKey, ec_key: SigningKey, secret: str) -> str:
    token_claims = claims(owner())
    del token_claims["aud"]
    return rsa_key.sign(token_claims)


REFUSED: dict[str, tuple[Callable[[SigningKey, SigningKey, str], str], str]] = {
    "wrong audience": (lambda rsa, ec, secret: rsa.sign(claims(owner(), aud="another-api")), "invalid_token"),
    "wrong issuer": (lambda rsa, ec, secret: ec.sign(claims(owner(), iss="https://evil.test")), "invalid_token"),
    "no audience": (_without_audience, "invalid_token"),
    "expired": (lambda rsa, ec, secret: rsa.sign(claims(owner(), ttl=-120)), "token_expired"),
    "not yet valid": (lambda rsa, ec, secret: ec.sign(claims(owner(), nbf=int(time.time()) + 120)), "invalid_token"),
    "alg none": (lambda rsa, ec, secret: unsigned({"alg": "none", "kid": rsa.kid}, claims(owner())), "invalid_token"),
    "HS256 keyed with the public key": (
        lambda rsa, ec, secret: unsigned({"alg": "HS256", "kid": rsa.kid}, claims(owner()), hmac_key=rsa.public_pem),
        "invalid_token",
    ),
    "HS256 with the service's own secret": (
        lambda rsa, ec, secret: mint_token(secret, owner(), issuer=ISSUER, audience=AUDIENCE),
        "invalid_token",
    ),
    "unknown kid": (lambda rsa, ec, secret: SigningKey.ec("stranger").sign(claims(owner())), "invalid_token"),
    "known kid, another key": (
        lambda rsa, ec, secret: SigningKey.ec("x").sign(claims(owner()), kid=ec.kid),
        "invalid_token",
    ),
    "ES256 under the RSA key's kid": (
        lambda rsa, ec, secret: SigningKey.ec("x").sign(claims(owner()), kid=rsa.kid),
        "invalid_token",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_tokens_not_meant_for_this_api_get_401(
    http: httpx.AsyncClient,
    oidc_api: str,
    rsa_key: SigningKey,
    ec_key: SigningKey,
    stack_env: dict[str, str],
    case: str,
) -> None:
    """A token for another audience or issuer, out of date, unsigned, HMAC-forged or under an unknown key → 401."""
    make, code = REFUSED[case]
    response = await upload(http, oidc_api, make(rsa_key, ec_key, stack_env["DEPOT_JWT_SECRET"]))
    assert response.status_code == 401, response.text
    assert response.json()["error"] == code


async def test_roles_at_the_configured_claim_path_grant_admin(
    http: httpx.AsyncClient, issuer: Issuer, rsa_key: SigningKey, make_settings: Callable[..., Any]
) -> None:
    """With DEPOT_JWT_ROLES_CLAIM=realm_access.roles an admin there reaches an admin endpoint; elsewhere 403."""
    settings = make_settings(ReconcilerSettings, reconcile_interval=0, **oidc_settings(issuer))
    async with serve(build_reconciler_app(settings)) as url:

        async def runs(token_claims: dict[str, Any]) -> int:
            headers = {"Authorization": f"Bearer {rsa_key.sign(token_claims)}"}
            return (await http.get(f"{url}/v1/reconcile/runs", headers=headers)).status_code

        assert await runs(claims("ops", realm_access={"roles": ["offline_access", "admin"]})) == 200
        assert await runs(claims("ops", roles=["admin"])) == 403
        assert await runs(claims("ops", realm_access={"roles": ["offline_access"]})) == 403
        assert await runs(claims("ops")) == 403


async def test_a_rotated_in_key_is_accepted_without_a_restart(
    http: httpx.AsyncClient, oidc_api: str, issuer: Issuer, rsa_key: SigningKey, ec_key: SigningKey
) -> None:
    """A key the issuer starts publishing under a new kid is fetched on its first token: 201, no restart."""
    assert (await upload(http, oidc_api, rsa_key.sign(claims(owner())))).status_code == 201
    rotated = SigningKey.rsa("rsa-2")
    assert (await upload(http, oidc_api, rotated.sign(claims(owner())))).status_code == 401
    issuer.publish(rsa_key, ec_key, rotated)
    await asyncio.sleep(1.1)  # the API's refresh cooldown (1 s) since its last fetch
    fetches = issuer.fetches
    response = await upload(http, oidc_api, rotated.sign(claims(owner())))
    assert response.status_code == 201, response.text
    assert issuer.fetches == fetches + 1


async def test_an_issuer_never_reached_gives_503_not_401(
    http: httpx.AsyncClient, rsa_key: SigningKey, make_settings: Callable[..., Any]
) -> None:
    """While the issuer's keys have never been fetched, a token gets 503 issuer_unavailable (retry), not 401."""
    closed = f"http://127.0.0.1:{servers.free_port()}/certs"
    settings = make_settings(UploadSettings, **oidc_settings(Issuer(url=closed)))
    async with serve(build_app(settings)) as url:
        response = await upload(http, url, rsa_key.sign(claims(owner())))
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "issuer_unavailable"


# --- the key cache on its own -----------------------------------------------------------------


def verifier(url: str, *, max_age: float = 300, cooldown: float = 30) -> TokenVerifier:
    keys = JwksKeys(url, max_age=max_age, refresh_cooldown=cooldown, timeout=2)
    return TokenVerifier(jwks=keys, issuer=ISSUER, audience=AUDIENCE)


async def test_unknown_kids_cannot_hammer_the_issuer(ec_key: SigningKey) -> None:
    """20 concurrent tokens on a cold cache cause one JWKS fetch, and 50 made-up kids after it none."""
    with serve_jwks(ec_key) as issuer:
        check = verifier(issuer.url)
        principals = await asyncio.gather(*(check.verify(ec_key.sign(claims(f"u{i}"))) for i in range(20)))
        assert {principal.owner_id for principal in principals} == {f"u{i}" for i in range(20)}
        assert issuer.fetches == 1
        for _ in range(50):
            with pytest.raises(Unauthorized, match="unknown signing key"):
                await check.verify(ec_key.sign(claims("mallory"), kid=secrets.token_hex(8)))
        assert issuer.fetches == 1


async def test_a_slow_issuer_does_not_block_the_event_loop(ec_key: SigningKey) -> None:
    """While the JWKS takes 0.5 s to arrive, other coroutines keep running."""
    with serve_jwks(ec_key) as issuer:
        issuer.delay = 0.5
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.02)
                ticks += 1

        ticking = asyncio.create_task(ticker())
        try:
            principal = await verifier(issuer.url).verify(ec_key.sign(claims("alice")))
        finally:
            ticking.cancel()
        assert principal.owner_id == "alice"
        assert ticks >= 10


async def test_an_unreachable_issuer_is_503_until_keys_are_known_then_they_are_kept(ec_key: SigningKey) -> None:
    """No keys yet and the issuer down → 503; keys once fetched stay usable while the issuer is down."""
    with serve_jwks(ec_key) as issuer:
        url = issuer.url
        warm = verifier(url, max_age=1, cooldown=1)
        assert (await warm.verify(ec_key.sign(claims("alice")))).owner_id == "alice"
    with pytest.raises(Unavailable):
        await verifier(url).verify(ec_key.sign(claims("alice")))
    await asyncio.sleep(1.1)  # keys older than max_age: a refresh is tried, fails, and the old keys serve
    assert (await warm.verify(ec_key.sign(claims("bob")))).owner_id == "bob"


async def test_a_key_the_issuer_withdrew_is_refused_once_the_keys_are_refreshed(
    rsa_key: SigningKey, ec_key: SigningKey
) -> None:
    """After max_age the key set is fetched again, and a kid no longer published gets 401."""
    with serve_jwks(rsa_key, ec_key) as issuer:
        check = verifier(issuer.url, max_age=1, cooldown=1)
        assert (await check.verify(rsa_key.sign(claims("alice")))).owner_id == "alice"
        issuer.publish(ec_key)
        await asyncio.sleep(1.1)
        with pytest.raises(Unauthorized, match="unknown signing key"):
            await check.verify(rsa_key.sign(claims("alice")))
        assert (await check.verify(ec_key.sign(claims("alice")))).owner_id == "alice"
        assert issuer.fetches == 2


async def test_a_remembered_token_under_a_withdrawn_key_is_refused_once_the_keys_are_refreshed(
    rsa_key: SigningKey, ec_key: SigningKey
) -> None:
    """A token accepted (and remembered) before its key was withdrawn gets 401 once the key set is refreshed."""
    with serve_jwks(rsa_key) as issuer:
        check = verifier(issuer.url, max_age=1, cooldown=1)
        token = rsa_key.sign(claims("alice"))
        assert (await check.verify(token)).owner_id == "alice"
        assert (await check.verify(token)).owner_id == "alice"
        issuer.publish(ec_key)
        await asyncio.sleep(1.1)
        with pytest.raises(Unauthorized, match="unknown signing key"):
            await check.verify(token)
        assert issuer.fetches == 2
