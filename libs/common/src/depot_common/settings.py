"""Settings shared by every service, read from ``DEPOT_*`` environment variables.

``load_settings`` turns a missing or malformed setting into one line naming the
variable, and stops the process: a service never starts half-configured.
"""

from __future__ import annotations

import sys
from typing import Annotated, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from depot_common.faults import CrashPoint

MIB = 1024 * 1024


class DepotSettings(BaseSettings):
    """Configuration every Depot process needs (README, "Configuration")."""

    model_config = SettingsConfigDict(env_prefix="DEPOT_", extra="ignore", frozen=True)

    database_url: str
    kafka_bootstrap: str
    s3_bucket: str
    s3_endpoint: str = ""
    s3_region: str = "us-east-1"
    aws_access_key_id: SecretStr | None = Field(default=None, validation_alias="AWS_ACCESS_KEY_ID")
    aws_secret_access_key: SecretStr | None = Field(default=None, validation_alias="AWS_SECRET_ACCESS_KEY")
    jwt_secret: SecretStr | None = None
    crash_at: CrashPoint | None = Field(default=None, description="fault injection for tests only")
    jwt_jwks_url: str = ""
    # OIDC (docs/api.md, "Authentication"): required with a JWKS URL, checked for HS256 tokens too when set
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwt_roles_claim: str = Field(default="roles", description="dotted path of the roles list in a token")
    jwt_leeway: int = Field(default=30, ge=0, le=300, description="seconds of clock skew allowed on exp/nbf/iat")
    jwt_jwks_max_age: int = Field(default=300, gt=0, description="seconds fetched signing keys are used unrefreshed")
    jwt_jwks_refresh_cooldown: int = Field(
        default=30, gt=0, description="minimum seconds between two fetches of the JWKS (unknown kid, failures)"
    )
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    allowed_origins: Annotated[list[str], NoDecode] = []
    http_host: str = "127.0.0.1"
    # the outbox relay of the services that own an outbox (upload-api, reconciler)
    relay_batch_size: int = Field(default=2000, gt=0, description="outbox events per Kafka batch")
    relay_poll_interval: int = Field(default=1, gt=0, description="seconds between outbox polls")
    ops_port: int = Field(default=0, ge=0, lt=65536, description="worker processes: /healthz, /readyz, /metrics")
    replica_id: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9._-]{0,200}$",
        description="a stable name of this replica (the pod name): static Kafka consumer-group membership",
    )
    s3_timeout: int = Field(default=10, gt=0, description="seconds to connect to S3, and to wait for its answer")

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError("must be a comma list of host:port")
        return value

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (HS256 key)")
        return value

    @field_validator("jwt_jwks_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("https://", "http://")):
            raise ValueError("must be an https:// (or http://) URL")
        return value

    @field_validator("jwt_roles_claim")
    @classmethod
    def _dotted_path(cls, value: str) -> str:
        if not all(part.strip() for part in value.split(".")):
            raise ValueError("must be a dotted claim path such as roles or realm_access.roles")
        return value

    @model_validator(mode="after")
    def _one_jwt_source(self) -> DepotSettings:
        if self.jwt_secret is None and not self.jwt_jwks_url:
            raise ValueError("set DEPOT_JWT_SECRET (HS256) or DEPOT_JWT_JWKS_URL (RS256/ES256)")
        if self.jwt_jwks_url:
            missing = [
                name
                for name, value in (("DEPOT_JWT_ISSUER", self.jwt_issuer), ("DEPOT_JWT_AUDIENCE", self.jwt_audience))
                if not value
            ]
            if missing:
                verb = "is" if len(missing) == 1 else "are"
                raise ValueError(f"{' and '.join(missing)} {verb} required when DEPOT_JWT_JWKS_URL is set")
        return self

    @property
    def kafka_servers(self) -> list[str]:
        return [server.strip() for server in self.kafka_bootstrap.split(",")]


S = TypeVar("S", bound=BaseSettings)


def describe_errors(cls: type[BaseSettings], error: ValidationError) -> str:
    """Render a validation error as one line naming the environment variables."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    parts = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else ""
        info = cls.model_fields.get(field)
        alias = info.validation_alias if info is not None else None
        name = alias if isinstance(alias, str) else (prefix + field).upper() if field else ""
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "is required but not set"
        parts.append(f"{name} {message}" if name else message)
    return "; ".join(parts)


def load_settings(cls: type[S]) -> S:
    """Build ``cls`` from the environment, or exit with one line naming the bad setting."""
    try:
        return cls()
    except ValidationError as error:
        sys.stderr.write(f"depot: configuration error: {describe_errors(cls, error)}\n")
        raise SystemExit(2) from None
