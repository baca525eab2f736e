"""The schema, as SQLAlchemy models. Alembic revisions in migrations/ are what create it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    text,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on SQLite (which keeps no zone) and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(255))
    # Optional; stored normalised (services/users.py normalize_email), unique when set.
    email: Mapped[str | None] = mapped_column(String(320))
    # When the owner of `email` proved it by following a verification link (None: never).
    email_verified_at: Mapped[datetime | None]
    password_hash: Mapped[str] = mapped_column(Text)
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # When a self sign-up (POST /auth/signup) created the account; cleared for good when the
    # account is first switched on (its address verified, or an operator enabling it). Never set
    # for accounts an operator made. Housekeeping deletes accounts still pending after
    # AUTHSVC_UNVERIFIED_SIGNUP_TTL, so a sign-up nobody confirms does not hold its name and
    # address forever.
    signup_pending_since: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("username", name="uq_users_username"),
        UniqueConstraint("email", name="uq_users_email"),
        Index("ix_users_signup_pending_since", "signup_pending_since"),
    )


class Session(Base):
    """A login session: one family of refresh tokens. Its id is the `sid` claim."""

    __tablename__ = "sessions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(64))
    client_ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    # The OAuth client that opened the session (None: the first-party JSON API), and the scope
    # it was granted; a refresh must come from the same client and never widen the scope.
    client_id: Mapped[str | None] = mapped_column(String(64))
    scope: Mapped[str | None] = mapped_column(String(512))
    # RFC 9449 section 5: the thumbprint of the DPoP key a public client's session (its refresh
    # tokens) is bound to; NULL when unbound.
    dpop_jkt: Mapped[str | None] = mapped_column(String(64))
    # When the user last proved who they are for this session (OpenID Connect `auth_time`).
    auth_time: Mapped[datetime | None]
    # RFC 8176 authentication method references, space-separated ("pwd", "pwd otp mfa"); NULL
    # for sessions opened before they were recorded, read as "pwd".
    amr: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_sessions_user_id", "user_id"),
        Index("ix_sessions_expires_at", "expires_at"),
        Index("ix_sessions_client_id", "client_id"),
    )


class RefreshToken(Base):
    """One link in a session's rotation chain. Only the keyed digest of the token is kept."""

    __tablename__ = "refresh_tokens"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    # The token this one replaced. Not a foreign key: pruning an expired parent must not take
    # its (still live) successors with it.
    parent_id: Mapped[int | None] = mapped_column(BigIntPK)
    digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_refresh_tokens_session_id", "session_id"),
        Index("ix_refresh_tokens_parent_id", "parent_id"),
        Index("ix_refresh_tokens_expires_at", "expires_at"),
        UniqueConstraint("digest", name="uq_refresh_tokens_digest"),
    )


class DeniedAccessToken(Base):
    """The jti denylist: access tokens refused until they would have expired anyway."""

    __tablename__ = "denied_access_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime]

    __table_args__ = (Index("ix_denied_access_tokens_expires_at", "expires_at"),)


class SigningKey(Base):
    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    private_key_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
    activates_at: Mapped[datetime]
    retires_at: Mapped[datetime | None]


class ServerSecret(Base):
    """A server-wide secret (the HMAC keys), encrypted under the key-encryption key.

    Written once, by whichever process first starts on the database; never changed except to be
    re-encrypted under a new key-encryption key (`authsvc keys rewrap`)."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]


class RevocationEvent(Base):
    """The revocation feed (GET /auth/revocations): one row per denylisted jti or revoked sid.

    `id` is the feed cursor. SQLite gets AUTOINCREMENT so that an id is never reused after
    `authsvc prune` deletes the newest rows: a poller's cursor must never skip a new event.
    """

    __tablename__ = "revocation_events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(8))  # "jti" or "sid"
    value: Mapped[str] = mapped_column(String(64))
    # No access token this entry covers can be valid after this time (plus verifier leeway).
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime]

    __table_args__ = (
        Index("ix_revocation_events_expires_at", "expires_at"),
        {"sqlite_autoincrement": True},
    )


class FeedState(Base):
    """The revocation feed's identity: one row, created by the migration.

    `epoch` names this feed; cursors carry it, so a cursor from another database (or from
    before `authsvc feed reset`) is answered with a resynchronisation. `low_water` is the
    highest event id that prune has deleted: a cursor below it may have skipped an event.
    """

    __tablename__ = "feed_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    epoch: Mapped[str] = mapped_column(String(32))
    low_water: Mapped[int] = mapped_column(BigInteger)
    reset_at: Mapped[datetime]


class OAuthClient(Base):
    """A registered OAuth 2 client (RFC 6749 section 2). Confidential ones keep a secret digest."""

    __tablename__ = "clients"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    client_type: Mapped[str] = mapped_column("type", String(16))  # public | confidential
    secret_digest: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    audience: Mapped[str | None] = mapped_column(String(255))
    grant_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Compared exactly (RFC 9700 section 4.1.3); never a prefix or a pattern.
    redirect_uris: Mapped[list[str]] = mapped_column(
        JSON, default=list, server_default=text("'[]'")
    )
    scopes: Mapped[list[str] | None] = mapped_column(JSON)  # None: any scope the server offers
    # First-party clients skip the consent screen of the authorization endpoint.
    first_party: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime]

    @property
    def is_confidential(self) -> bool:
        return self.client_type == "confidential"


class AuthorizationCode(Base):
    """An authorization code (RFC 6749 section 4.1.2): one-time, short-lived, kept only as a
    keyed digest, bound to the request that produced it. `session_id` is the session its
    exchange opened, revoked if the code is presented again."""

    __tablename__ = "authorization_codes"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    client_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    redirect_uri: Mapped[str] = mapped_column(Text)
    code_challenge: Mapped[str | None] = mapped_column(String(128))
    scope: Mapped[str] = mapped_column(String(512))
    nonce: Mapped[str | None] = mapped_column(String(512))
    auth_time: Mapped[datetime]
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    session_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # How the user signed in (sessions.amr), passed on to the session the exchange opens.
    amr: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        UniqueConstraint("digest", name="uq_authorization_codes_digest"),
        Index("ix_authorization_codes_expires_at", "expires_at"),
        Index("ix_authorization_codes_user_id", "user_id"),
    )


class AccountToken(Base):
    """A one-time link token mailed to a user (verify an address, reset a password). Only its
    keyed digest is kept; `used_at` is set once, by compare-and-set, when it is redeemed."""

    __tablename__ = "account_tokens"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    purpose: Mapped[str] = mapped_column(String(16))  # "verify_email" | "reset_password"
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # The address the link was mailed to: the link is void once the user's address changes.
    email: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("digest", name="uq_account_tokens_digest"),
        Index("ix_account_tokens_user_id", "user_id"),
        Index("ix_account_tokens_expires_at", "expires_at"),
    )


class TotpCredential(Base):
    """A user's TOTP secret (RFC 6238), encrypted under the KEK; on once `confirmed_at` is set.
    `last_step` is the last time step whose code was accepted: a code is accepted once, and
    never one of an earlier step. `failures`/`locked_until`: consecutive wrong codes."""

    __tablename__ = "totp_credentials"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
    confirmed_at: Mapped[datetime | None]
    last_step: Mapped[int | None] = mapped_column(BigInteger)
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    locked_until: Mapped[datetime | None]


class RecoveryCode(Base):
    """A one-time recovery code, kept as a keyed digest; spent when `used_at` is set."""

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime]
    used_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("digest", name="uq_recovery_codes_digest"),
        Index("ix_recovery_codes_user_id", "user_id"),
    )


class MfaChallenge(Base):
    """A password check waiting for its second factor (the mfa_token, kept as a keyed digest):
    short-lived, single-use, a bounded number of attempts. `purpose`: "login" (the JSON API)
    or "authorize" (the hosted login page); a token only finishes what it was issued for."""

    __tablename__ = "mfa_challenges"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    used_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("digest", name="uq_mfa_challenges_digest"),
        Index("ix_mfa_challenges_expires_at", "expires_at"),
        Index("ix_mfa_challenges_user_id", "user_id"),
    )


class AuditEvent(Base):
    """What happened to whom, from where: written in the transaction of the action itself."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    event: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(64))
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    username: Mapped[str | None] = mapped_column(String(255))
    session_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    ip: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (
        Index("ix_audit_events_at", "at"),
        Index("ix_audit_events_user_id", "user_id"),
        # The trail by user matches the id or the recorded name (store/audit.py).
        Index("ix_audit_events_username", "username"),
    )


class Passkey(Base):
    """A WebAuthn credential of a user (a passkey): its public key and signature counter."""

    __tablename__ = "passkeys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    credential_id: Mapped[bytes] = mapped_column(LargeBinary(1023))
    # The COSE_Key as the authenticator sent it at registration.
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    sign_count: Mapped[int] = mapped_column(BigInteger)
    transports: Mapped[list[str] | None] = mapped_column(JSON)
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_passkeys_user_id", "user_id"),
        UniqueConstraint("credential_id", name="uq_passkeys_credential_id"),
    )


class PasskeyChallenge(Base):
    """A ceremony's challenge, by its SHA-256 digest, until it is used once or expires.
    `user_id` binds a registration or second-factor challenge to its user; login challenges
    (discoverable credentials: the user is not known yet) have none. A second-factor challenge
    also names the mfa challenge (the mfa_token) it was issued for."""

    __tablename__ = "passkey_challenges"

    digest: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    expires_at: Mapped[datetime]
    mfa_challenge_id: Mapped[int | None] = mapped_column(
        BigIntPK,
        ForeignKey(
            "mfa_challenges.id",
            ondelete="CASCADE",
            name="fk_passkey_challenges_mfa_challenge_id",
        ),
    )

    __table_args__ = (
        Index("ix_passkey_challenges_expires_at", "expires_at"),
        Index("ix_passkey_challenges_user_id", "user_id"),
        Index("ix_passkey_challenges_mfa_challenge_id", "mfa_challenge_id"),
    )
