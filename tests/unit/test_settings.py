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
    """A complete environment loads, with SPEC defaults for the rest (100 MiB, 3600 s TTL, json logs)."""
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
