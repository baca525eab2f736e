"""The one settings object. Read from the environment (prefix AUTHSVC_) and an optional .env."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigError(Exception):
    """A setting is missing or wrong; raised at start-up, never mid-request."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AUTHSVC_",
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
    )

    env: Literal["development", "production"] = "development"
    database_url: str | None = None
    data_dir: Path = Path(".authsvc")
    issuer: str = "http://127.0.0.1:8000"
    audience: str = "authsvc"
    default_scope: str = "api"
    key_encryption_key: SecretStr | None = None

    access_token_ttl: int = Field(300, ge=10, le=86400)
    refresh_token_ttl: int = Field(14 * 86400, ge=60)
    session_max_age: int = Field(30 * 86400, ge=60)
    refresh_reuse_grace_seconds: int = Field(10, ge=0, le=300)
    token_leeway_seconds: int = Field(5, ge=0, le=300)

    jwks_max_age: int = Field(300, ge=0, le=86400)
    key_publish_ahead: int | None = Field(None, ge=0)
    key_reload_interval: int = Field(10, ge=1)
    rsa_key_size: int = Field(2048, ge=2048, le=8192)

    argon2_time_cost: int = Field(3, ge=1)
    argon2_memory_cost: int = Field(65536, ge=8)
    argon2_parallelism: int = Field(4, ge=1)
    password_hash_concurrency: int | None = Field(None, ge=1)

    password_min_length: int = Field(8, ge=1)
    password_max_length: int = Field(1024, ge=8, le=4096)

    max_body_bytes: int = Field(64 * 1024, ge=1024)
    auto_migrate: bool | None = None
    db_pool_size: int = Field(10, ge=1)
    db_timeout_seconds: float = Field(5.0, gt=0)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    redis_url: str | None = None
    log_level: str = "info"
    access_log: bool = True
    rate_limit_enabled: bool = True

    @field_validator("issuer")
    @classmethod
    def _issuer_is_url(cls, value: str) -> str:
        # RFC 8414 section 2: the issuer is an https URL with no query or fragment; plain http is
        # tolerated for local development and checked in production below.
        if not value.startswith(("https://", "http://")) or "?" in value or "#" in value:
            raise ValueError("issuer must be an http(s) URL without query or fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _production_needs_secrets(self) -> Settings:
        if self.env == "production":
            if self.key_encryption_key is None:
                raise ValueError(
                    "AUTHSVC_KEY_ENCRYPTION_KEY is required when AUTHSVC_ENV=production "
                    "(make one with `authsvc keys new-kek`)"
                )
            if self.database_url is None:
                raise ValueError("AUTHSVC_DATABASE_URL is required when AUTHSVC_ENV=production")
        return self

    @property
    def publish_ahead(self) -> int:
        """Seconds a new key is published before it signs: caches must see it first."""
        return self.jwks_max_age if self.key_publish_ahead is None else self.key_publish_ahead

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'authsvc.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def should_auto_migrate(self) -> bool:
        # The embedded SQLite default migrates itself so that one command starts a server;
        # shared databases are migrated on purpose, with `authsvc migrate`.
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
