"""The audit trail: who did what, when, from where.

Each event is written in the transaction of the action it records, so an action and its audit
row commit (or vanish) together. Two events record a *failed* request and must survive it:
- refresh-token reuse: the family revocation is committed on purpose (`persist_writes`), and
  its audit row rides in that same transaction;
- a failed login: nothing else is written, so the request scope rolls the request back whole
  and then commits only the audit rows the error carries (`AuthError.failure_writes`).

Rows never hold a secret: no password, no token, not even a digest. For an unknown username
the attempted name is not stored either (people type passwords into the name field).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.store.audit import AuditRepository
from authsvc.store.models import AuditEvent

LOGIN_SUCCEEDED: Final = "login_succeeded"
LOGIN_FAILED: Final = "login_failed"
REFRESH_REUSE_DETECTED: Final = "refresh_reuse_detected"
AUTHORIZATION_CODE_REUSED: Final = "authorization_code_reused"
LOGOUT: Final = "logout"
PASSWORD_CHANGED: Final = "password_changed"  # noqa: S105 (an event name)
KEY_ROTATED: Final = "key_rotated"
KEK_REWRAPPED: Final = "kek_rewrapped"
USER_CREATED: Final = "user_created"
USER_DISABLED: Final = "user_disabled"
USER_ENABLED: Final = "user_enabled"
USER_DELETED: Final = "user_deleted"
ROLES_CHANGED: Final = "roles_changed"
SESSIONS_REVOKED: Final = "sessions_revoked"
EMAIL_CHANGED: Final = "email_changed"
SIGNUP_REFUSED: Final = "signup_refused"
EMAIL_VERIFIED: Final = "email_verified"
PASSWORD_RESET_REQUESTED: Final = "password_reset_requested"  # noqa: S105 (an event name)
CLIENT_CREATED: Final = "client_created"
CLIENT_DELETED: Final = "client_deleted"
PASSKEY_REGISTERED: Final = "passkey_registered"
PASSKEY_REGISTRATION_FAILED: Final = "passkey_registration_failed"
PASSKEY_REMOVED: Final = "passkey_removed"
# An otherwise valid assertion whose signature counter did not increase: possibly a cloned
# authenticator (WebAuthn L3 section 6.1.1); the login is refused.
PASSKEY_COUNTER_REGRESSED: Final = "passkey_counter_regressed"
CLIENT_SECRET_ROTATED: Final = "client_secret_rotated"  # noqa: S105 (an event name)
MFA_ENROLLMENT_STARTED: Final = "mfa_enrollment_started"
MFA_ENABLED: Final = "mfa_enabled"
MFA_DISABLED: Final = "mfa_disabled"
MFA_RESET: Final = "mfa_reset"
MFA_CHALLENGED: Final = "mfa_challenged"
MFA_VERIFIED: Final = "mfa_verified"
MFA_FAILED: Final = "mfa_failed"


def _ip(value: str | None) -> str | None:
    return value[:64] if value else None


@dataclass(frozen=True)
class Entry:
    """One audit event, built by a service and written by `record`."""

    event: str
    user_id: uuid.UUID | None = None
    username: str | None = None
    session_id: uuid.UUID | None = None
    ip: str | None = None
    actor: str | None = None
    details: dict[str, Any] | None = None


async def record(db: AsyncSession, now: datetime, entry: Entry) -> None:
    """Add an event to the caller's transaction (flushed, committed by the caller's scope)."""
    await AuditRepository(db).add(
        AuditEvent(
            at=now,
            event=entry.event,
            actor=entry.actor[:64] if entry.actor else None,
            user_id=entry.user_id,
            username=entry.username,
            session_id=entry.session_id,
            ip=_ip(entry.ip),
            details=entry.details or None,
        )
    )


def writer(now: datetime, entry: Entry) -> Any:
    """`record` deferred: for AuthError.failure_writes, run after the request rolled back."""

    async def write(db: AsyncSession) -> None:
        await record(db, now, entry)

    return write


async def find(
    db: AsyncSession,
    *,
    user_id: uuid.UUID | None = None,
    username: str | None = None,
    event: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before: tuple[datetime, int] | None = None,
    limit: int = 100,
) -> Sequence[AuditEvent]:
    """Newest first; `before` is the (at, id) the previous page ended with."""
    return await AuditRepository(db).find(
        user_id=user_id,
        username=username,
        event=event,
        since=since,
        until=until,
        before=before,
        limit=limit,
    )
