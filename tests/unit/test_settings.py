"""Settings fail fast with one line naming the setting."""

from __future__ import annotations

import subprocess
import sys

import pytest

from depot_common.settings import load_settings
from depot_upload.settings import UploadSettings

VALID = {
    "DEPOT_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/x",
    "DEPOT_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
    "DEPOT_S3_BUCKET": "depot",
    "DEPOT_JWT_SECRET": "s" * 32,
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in list(__import__("os").environ):
        if key.startswith("DEPOT_"):
            monkeypatch.delenv(key)
    for key, value in VALID.items():
        monkeypatch.setenv(key, value)
    return monkeypatch


def test_valid_environment_loads_with_defaults(env: pytest.MonkeyPatch) -> None:
    """A complete environment loads, with the README's defaults for the rest (100 MiB, 3600 s TTL, json logs)."""
    settings = load_settings(UploadSettings)
    assert settings.max_upload_bytes == 100 * 1024 * 1024
    assert settings.upload_ttl == 3600
    assert settings.log_format == "json"
    assert settings.kafka_servers == ["127.0.0.1:9092"]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DEPOT_DATABASE_URL", None, "DEPOT_DATABASE_URL is required but not set"),
        ("DEPOT_DATABASE_URL", "mysql://x", "DEPOT_DATABASE_URL must be a postgresql:// URL"),
        ("DEPOT_KAFKA_BOOTSTRAP", "nohost", "DEPOT_KAFKA_BOOTSTRAP must be a comma list of host:port"),
        ("DEPOT_MAX_UPLOAD_BYTES", "lots", "DEPOT_MAX_UPLOAD_BYTES Input should be a valid integer"),
        ("DEPOT_UPLOAD_TTL", "1.5", "DEPOT_UPLOAD_TTL Input should be a valid integer"),
        ("DEPOT_LOG_FORMAT", "xml", "DEPOT_LOG_FORMAT Input should be 'json' or 'console'"),
        ("DEPOT_JWT_SECRET", "short", "DEPOT_JWT_SECRET must be at least 32 characters"),
        ("DEPOT_JWT_SECRET", None, "set DEPOT_JWT_SECRET (HS256) or DEPOT_JWT_JWKS_URL"),
    ],
)
def test_a_missing_or_malformed_setting_stops_with_one_line(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str | None, message: str
) -> None:
    """The process exits with code 2 and one stderr line that names the variable."""
    if value is None:
        env.delenv(name)
    else:
        env.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        load_settings(UploadSettings)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert message in err


def test_the_service_refuses_to_start_half_configured() -> None:
    """`depot-upload serve` with no settings exits 2 naming what is missing, before doing anything."""
    result = subprocess.run(
        [sys.executable, "-m", "depot_upload", "serve"], env={"PATH": "/usr/bin"}, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.startswith("depot: configuration error: DEPOT_DATABASE_URL is required but not set")


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"DEPOT_JWT_AUDIENCE": "depot"}, "DEPOT_JWT_ISSUER is required when DEPOT_JWT_JWKS_URL is set"),
        ({"DEPOT_JWT_ISSUER": "https://id.test"}, "DEPOT_JWT_AUDIENCE is required when DEPOT_JWT_JWKS_URL is set"),
        ({}, "DEPOT_JWT_ISSUER and DEPOT_JWT_AUDIENCE are required when DEPOT_JWT_JWKS_URL is set"),
    ],
)
def test_a_jwks_url_without_issuer_or_audience_stops_with_one_line(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], given: dict[str, str], message: str
) -> None:
    """With DEPOT_JWT_JWKS_URL set, a missing DEPOT_JWT_ISSUER or DEPOT_JWT_AUDIENCE is named on one line."""
    env.setenv("DEPOT_JWT_JWKS_URL", "https://id.test/certs")
    for name, value in given.items():
        env.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        load_settings(UploadSettings)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert message in err


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DEPOT_JWT_JWKS_URL", "file:///etc/keys.json", "DEPOT_JWT_JWKS_URL must be an https:// (or http://) URL"),
        ("DEPOT_JWT_ROLES_CLAIM", "realm_access..roles", "DEPOT_JWT_ROLES_CLAIM must be a dotted claim path"),
        ("DEPOT_JWT_LEEWAY", "3600", "DEPOT_JWT_LEEWAY Input should be less than or equal to 300"),
        ("DEPOT_JWT_JWKS_REFRESH_COOLDOWN", "0", "DEPOT_JWT_JWKS_REFRESH_COOLDOWN Input should be greater than 0"),
    ],
)
def test_malformed_oidc_settings_stop_with_one_line(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str, message: str
) -> None:
    """A JWKS URL that is not http(s), a broken roles path or an out-of-range duration is named on one line."""
    env.setenv("DEPOT_JWT_ISSUER", "https://id.test")
    env.setenv("DEPOT_JWT_AUDIENCE", "depot")
    env.setenv(name, value)
    with pytest.raises(SystemExit):
        load_settings(UploadSettings)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert message in err


def test_a_complete_oidc_configuration_loads(env: pytest.MonkeyPatch) -> None:
    """A JWKS URL, issuer, audience and Keycloak roles path load; defaults 30 s leeway, 300 s age, 30 s cooldown."""
    env.delenv("DEPOT_JWT_SECRET")
    env.setenv("DEPOT_JWT_JWKS_URL", "https://id.test/certs")
    env.setenv("DEPOT_JWT_ISSUER", "https://id.test")
    env.setenv("DEPOT_JWT_AUDIENCE", "depot")
    env.setenv("DEPOT_JWT_ROLES_CLAIM", "realm_access.roles")
    settings = load_settings(UploadSettings)
    assert (settings.jwt_roles_claim, settings.jwt_leeway) == ("realm_access.roles", 30)
    assert (settings.jwt_jwks_max_age, settings.jwt_jwks_refresh_cooldown) == (300, 30)
