"""The one settings object. Read from the environment (prefix AUTHSVC_) and an optional .env."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

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
        # Error messages never echo a value: it may be a URL with a password in it.
        hide_input_in_errors=True,
    )

    env: Literal["development", "production"] = "development"
    database_url: str | None = None
    data_dir: Path = Path(".authsvc")
    issuer: str = "http://127.0.0.1:8000"
    audience: str = "authsvc"
    default_scope: str = "api"
    key_encryption_key: SecretStr | None = None
    # Earlier key-encryption keys (commas): they still decrypt what was written under them
    # until `authsvc keys rewrap` has re-encrypted it under the current one.
    previous_key_encryption_keys: SecretStr | None = None

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
    # What the rate limiter does when its store (Redis) fails: let the request through without
    # limits (open) or refuse it with 503 (closed). See docs/operations.md#failure-policies.
    rate_limit_failure_mode: Literal["open", "closed"] = "open"
    revocation_poll_after: int = Field(5, ge=0, le=3600)

    # Browser (SPA) mode: where the refresh token travels unless a request asks otherwise, and
    # the origins (besides the issuer's own) whose cookie-carrying requests are accepted.
    refresh_token_transport: Literal["body", "cookie"] = "body"  # noqa: S105 - a mode
    allowed_origins: str = ""
    # How long the hosted login page's sign-in cookie spares the user their password, seconds.
    login_session_ttl: int = Field(12 * 3600, ge=60)
    # Development only: serve this directory (the example SPA) under /spa/ on the same origin.
    spa_dir: Path | None = None
    # Rate limits and login backoff (authsvc/services/ratelimit.py).
    rate_limit_window_seconds: int = Field(60, ge=1, le=3600)
    rate_limit_login_per_ip: int = Field(30, ge=1)
    rate_limit_refresh_per_ip: int = Field(300, ge=1)
    rate_limit_login_per_username: int = Field(10, ge=1)
    rate_limit_key_prefix: str = "authsvc:rl:"
    login_backoff_free_failures: int = Field(3, ge=0)
    login_backoff_base_seconds: float = Field(1.0, gt=0)
    login_backoff_max_seconds: float = Field(60.0, gt=0, le=3600)
    login_failure_memory_seconds: int = Field(900, ge=1)
    # Client addresses: X-Forwarded-For is believed only from these peers (CIDRs, commas).
    trusted_proxies: str = ""
    # CORS: allowed origins (commas); empty means no CORS headers at all.
    cors_origins: str = ""
    cors_allow_credentials: bool = False
    # Largest accepted request header block, bytes (431 above it).
    max_header_bytes: int = Field(16 * 1024, ge=1024, le=1024 * 1024)
    # The interactive API docs (/docs, /redoc): pages that load their scripts from a CDN.
    # Default: on in development, off in production.
    api_docs_enabled: bool | None = None
    # Slow and idle clients (authsvc/server.py): how long a request's header block and its body
    # may take to arrive, how long an idle keep-alive connection stays open, connection caps.
    header_timeout_seconds: float = Field(10.0, gt=0, le=300)
    body_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    keepalive_timeout_seconds: int = Field(5, ge=1, le=3600)
    max_connections: int = Field(1000, ge=1)
    max_connections_per_client: int = Field(100, ge=0)

    # DPoP (RFC 9449, docs/dpop.md): how old a proof's iat may be, and where proof jtis are
    # remembered (Redis when AUTHSVC_REDIS_URL is set, under this prefix; else this many per
    # process).
    dpop_proof_max_age_seconds: int = Field(60, ge=1, le=3600)
    dpop_replay_key_prefix: str = "authsvc:dpop:"
    dpop_replay_cache_size: int = Field(100_000, ge=100)
    # RFC 9449 sections 8 and 9: require proofs to carry a nonce the server hands out.
    dpop_nonce: bool = False

    # Observability and housekeeping (docs/operations.md).
    log_format: Literal["json", "text"] | None = None
    metrics_token: SecretStr | None = None
    prune_interval: int = Field(3600, ge=0)
    prune_batch: int = Field(1000, ge=1)
    # Audit events older than this many days are pruned; 0 keeps them forever.
    audit_retention_days: int = Field(365, ge=0)
    # Scheduled signing-key rotation, on by default: 30 days; 0 turns it off.
    key_rotation_interval: int = Field(30 * 86400, ge=0)

    # Sign-up, email verification and password reset by email (docs/accounts.md).
    signup_enabled: bool = False
    # smtp://host:port (plain, or STARTTLS with ?starttls=true), smtps://host:port (TLS from the
    # first byte); user and password in the URL or in the two settings below. Unset: mails are
    # written to the log (development only).
    smtp_url: SecretStr | None = None
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = Field(10.0, gt=0, le=300)
    # PEM file of the CAs the SMTP relay's TLS certificate must lead to (those alone); unset:
    # the system's CAs (OpenSSL honours SSL_CERT_FILE and SSL_CERT_DIR for those).
    smtp_ca_file: Path | None = None
    mail_from: str = "authsvc <noreply@localhost>"
    # Where the links in mails point: this base URL plus /verify-email?token=... or
    # /reset-password?token=... Default: the issuer.
    public_base_url: str | None = None
    email_verification_ttl: int = Field(24 * 3600, ge=60)
    # Seconds a self sign-up may stay unverified before housekeeping deletes it (freeing its
    # name and address); 0 keeps them. At least AUTHSVC_EMAIL_VERIFICATION_TTL.
    unverified_signup_ttl: int = Field(7 * 86400, ge=0)
    password_reset_ttl: int = Field(30 * 60, ge=60, le=24 * 3600)
    # The outgoing mail queue: at most this many mails wait; each is tried this many times.
    mail_queue_size: int = Field(1000, ge=1)
    mail_max_attempts: int = Field(5, ge=1, le=20)
    mail_retry_base_seconds: float = Field(2.0, gt=0, le=3600)
    # Requests to the sign-up and recovery endpoints per client address per rate-limit window,
    # and mails to one account (or address) per mail window.
    rate_limit_account_per_ip: int = Field(10, ge=1)
    rate_limit_mail_per_account: int = Field(3, ge=1)
    rate_limit_mail_window_seconds: int = Field(3600, ge=1)
    # Passkeys (WebAuthn, docs/passkeys.md): the relying party id (a domain; default: the
    # issuer's host) and name, the origins a ceremony may come from (commas; default: the
    # issuer's origin), and how long a ceremony's challenge stays usable, seconds.
    passkey_rp_id: str | None = None
    passkey_rp_name: str = "authsvc"
    passkey_origins: str = ""
    passkey_challenge_ttl: int = Field(300, ge=30, le=3600)
    # TOTP second factor (docs/accounts.md#two-factor-authentication): how long an mfa_token
    # (the step between password and code) lasts, seconds, and how many codes it may try; how
    # many consecutive wrong codes lock the factor, and for how many seconds. The bounds keep
    # guessing a 6-digit code out of reach: at most 20 tries per lock period.
    mfa_token_ttl: int = Field(300, ge=60, le=900)
    mfa_attempts_per_token: int = Field(5, ge=1, le=10)
    mfa_failures_before_lock: int = Field(10, ge=3, le=20)
    mfa_lock_seconds: int = Field(900, ge=60, le=86400)

    @field_validator("issuer")
    @classmethod
    def _issuer_is_url(cls, value: str) -> str:
        # RFC 8414 section 2: the issuer is an https URL with no query or fragment; plain http is
        # tolerated for local development and refused in production (_production_needs_secrets).
        if not value.startswith(("https://", "http://")) or "?" in value or "#" in value:
            raise ValueError("issuer must be an http(s) URL without query or fragment")
        return value.rstrip("/")

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_cidrs(cls, value: str) -> str:
        for item in _split(value):
            ipaddress.ip_network(item, strict=False)  # ValueError names the bad entry
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_is_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parts = urlsplit(value.get_secret_value())
            if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
                # The value may hold a password: never echo it.
                raise ValueError("AUTHSVC_SMTP_URL must be smtp://host[:port] or smtps://...")
        return value

    @field_validator("smtp_ca_file")
    @classmethod
    def _ca_file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"AUTHSVC_SMTP_CA_FILE is not a file: {value}")
        return value

    @field_validator("public_base_url")
    @classmethod
    def _base_is_url(cls, value: str | None) -> str | None:
        if value is not None and (
            not value.startswith(("https://", "http://")) or "?" in value or "#" in value
        ):
            raise ValueError("public_base_url must be an http(s) URL without query or fragment")
        return value.rstrip("/") if value is not None else None

    @property
    def link_base_url(self) -> str:
        """The base of the links in mails: AUTHSVC_PUBLIC_BASE_URL, else the issuer."""
        return self.public_base_url or self.issuer

    @model_validator(mode="after")
    def _cors_is_explicit(self) -> Settings:
        # Fetch standard: a wildcard origin cannot carry credentials, and we never want it to.
        if "*" in self.cors_origin_list and self.cors_allow_credentials:
            raise ValueError("AUTHSVC_CORS_ORIGINS='*' cannot be combined with credentials")
        return self

    @property
    def trusted_proxy_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(item, strict=False) for item in _split(self.trusted_proxies)]

    @property
    def previous_kek_list(self) -> list[str]:
        keys = self.previous_key_encryption_keys
        return _split(keys.get_secret_value()) if keys is not None else []

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.rstrip("/") for origin in _split(self.cors_origins)]

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
            if self.spa_dir is not None:
                raise ValueError("AUTHSVC_SPA_DIR serves the example SPA in development only")
            if self.signup_enabled and self.smtp_url is None:
                # Without SMTP, mails are only logged: nobody could verify or recover.
                raise ValueError(
                    "AUTHSVC_SMTP_URL is required when AUTHSVC_SIGNUP_ENABLED=true and "
                    "AUTHSVC_ENV=production"
                )
            if self.issuer.startswith("http://") and not _is_loopback_url(self.issuer):
                # RFC 8414 section 2 / RFC 6749 section 3.1: tokens and the browser cookie
                # travel to this origin; only a loopback address may do without TLS.
                raise ValueError(
                    f"AUTHSVC_ISSUER must be an https:// URL when AUTHSVC_ENV=production "
                    f"(got {self.issuer!r})"
                )
        return self

    @model_validator(mode="after")
    def _signups_outlive_their_links(self) -> Settings:
        # An account deleted while its verification link still works would turn a prompt
        # click into an invalid link.
        if 0 < self.unverified_signup_ttl < self.email_verification_ttl:
            raise ValueError(
                "AUTHSVC_UNVERIFIED_SIGNUP_TTL must be 0 (keep) or at least "
                f"AUTHSVC_EMAIL_VERIFICATION_TTL ({self.email_verification_ttl} s)"
            )
        return self

    @model_validator(mode="after")
    def _rotation_after_publish_ahead(self) -> Settings:
        # Each key must get to sign before the next is published, or keys never activate.
        if 0 < self.key_rotation_interval <= self.publish_ahead:
            raise ValueError(
                "AUTHSVC_KEY_ROTATION_INTERVAL must be 0 (off) or longer than the publish-ahead "
                f"time ({self.publish_ahead} s)"
            )
        return self

    @property
    def publish_ahead(self) -> int:
        """Seconds a new key is published before it signs: caches must see it first."""
        return self.jwks_max_age if self.key_publish_ahead is None else self.key_publish_ahead

    @property
    def access_token_horizon(self) -> timedelta:
        """No access token issued now can be accepted after now + this (TTL plus leeway)."""
        return timedelta(seconds=self.access_token_ttl + self.token_leeway_seconds)

    @property
    def allowed_origin_set(self) -> frozenset[str]:
        """The issuer's own origin plus AUTHSVC_ALLOWED_ORIGINS (comma separated)."""
        scheme, _, rest = self.issuer.partition("://")
        own = f"{scheme}://{rest.split('/', 1)[0]}"
        extra = (o.strip().rstrip("/") for o in self.allowed_origins.split(","))
        return frozenset({own, *(o for o in extra if o)})

    @property
    def passkey_relying_party_id(self) -> str:
        return self.passkey_rp_id or urlsplit(self.issuer).hostname or "localhost"

    @property
    def passkey_origin_list(self) -> list[str]:
        """WebAuthn L3 section 7.1 step 9: the origins clientDataJSON may name."""
        listed = [origin.rstrip("/") for origin in _split(self.passkey_origins)]
        if listed:
            return listed
        scheme, _, rest = self.issuer.partition("://")
        return [f"{scheme}://{rest.split('/', 1)[0]}"]

    @property
    def docs_enabled(self) -> bool:
        if self.api_docs_enabled is not None:
            return self.api_docs_enabled
        return self.env != "production"

    @property
    def resolved_log_format(self) -> str:
        """JSON lines in production (for log shippers), readable text in development."""
        if self.log_format is not None:
            return self.log_format
        return "json" if self.env == "production" else "text"

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


def _is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
