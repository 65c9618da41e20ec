"""`depot token` mints tokens the services accept."""

from __future__ import annotations

import subprocess
import sys

import pytest

from depot_common.auth import TokenVerifier
from depot_common.errors import Unauthorized

SECRET = "k" * 40


def run(*args: str, secret: str | None = SECRET, api_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin", **({"DEPOT_JWT_SECRET": secret} if secret else {})}
    env.update({"DEPOT_API_URL": api_url} if api_url else {})
    return subprocess.run([sys.executable, "-m", "depot_common.cli", *args], env=env, capture_output=True, text=True)


async def test_token_names_the_owner_and_roles() -> None:
    """`depot token --owner alice --admin` prints a token whose sub is alice with the admin role."""
    result = run("token", "--owner", "alice", "--admin", "--ttl", "60")
    assert result.returncode == 0
    principal = await TokenVerifier(secret=SECRET).verify(result.stdout.strip())
    assert principal.owner_id == "alice"
    assert principal.is_admin


async def test_token_without_admin_is_not_admin_and_other_secrets_reject_it() -> None:
    """A plain token has no admin role and fails verification under another secret."""
    token = run("token", "--owner", "bob").stdout.strip()
    assert not (await TokenVerifier(secret=SECRET).verify(token)).is_admin
    with pytest.raises(Unauthorized):
        await TokenVerifier(secret="x" * 40).verify(token)


def test_token_needs_the_secret_and_a_positive_ttl() -> None:
    """Without DEPOT_JWT_SECRET, or with --ttl 0, the command explains and exits 2."""
    missing = run("token", "--owner", "alice", secret=None)
    assert missing.returncode == 2
    assert "DEPOT_JWT_SECRET is not set" in missing.stderr
    assert run("token", "--owner", "alice", "--ttl", "0").returncode == 2
    assert "--owner" in run("token", "--help").stdout


async def test_token_link_puts_the_token_in_the_fragment_of_the_console_address() -> None:
    """`depot token --link` prints DEPOT_API_URL/#token=<jwt> (a fragment, never a query) with a valid token."""
    result = run("token", "--owner", "carol", "--link", api_url="http://127.0.0.1:8123/")
    assert result.returncode == 0, result.stderr
    link = result.stdout.strip()
    prefix = "http://127.0.0.1:8123/#token="
    assert link.startswith(prefix)
    assert "?" not in link
    assert (await TokenVerifier(secret=SECRET).verify(link.removeprefix(prefix))).owner_id == "carol"


def test_token_link_needs_the_console_address() -> None:
    """Without DEPOT_API_URL, `depot token --link` says which setting it needs and exits 2."""
    result = run("token", "--owner", "carol", "--link")
    assert result.returncode == 2
    assert "DEPOT_API_URL" in result.stderr


async def test_token_carries_the_configured_issuer_audience_and_roles_path() -> None:
    """With DEPOT_JWT_ISSUER/AUDIENCE/ROLES_CLAIM set, the minted token passes a verifier configured the same way."""
    env = {
        "PATH": "/usr/bin",
        "DEPOT_JWT_SECRET": SECRET,
        "DEPOT_JWT_ISSUER": "https://depot.test",
        "DEPOT_JWT_AUDIENCE": "depot-api",
        "DEPOT_JWT_ROLES_CLAIM": "realm_access.roles",
    }
    result = subprocess.run(
        [sys.executable, "-m", "depot_common.cli", "token", "--owner", "ops", "--admin"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    check = TokenVerifier(
        secret=SECRET, issuer="https://depot.test", audience="depot-api", roles_claim="realm_access.roles"
    )
    principal = await check.verify(result.stdout.strip())
    assert principal.owner_id == "ops"
    assert principal.is_admin
