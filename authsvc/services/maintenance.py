"""Housekeeping: drop what can no longer matter, in small batches."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.services.keys import KeyService
from authsvc.services.revocations import retention
from authsvc.services.signup import delete_unverified
from authsvc.store.account_tokens import AccountTokenRepository
from authsvc.store.audit import AuditRepository
from authsvc.store.authorization_codes import AuthorizationCodeRepository
from authsvc.store.db import Database
from authsvc.store.mfa import MfaChallengeRepository
from authsvc.store.passkeys import PasskeyChallengeRepository
from authsvc.store.repositories import (
    DenylistRepository,
    RefreshTokenRepository,
    SessionRepository,
)
from authsvc.store.revocations import RevocationEventRepository

CODE_REUSE_MEMORY = timedelta(days=1)


@dataclass
class PruneReport:
    denylist: int = 0
    refresh_tokens: int = 0
    sessions: int = 0
    signing_keys: int = 0
    revocation_events: int = 0
    audit_events: int = 0
    authorization_codes: int = 0
    mfa_challenges: int = 0
    passkey_challenges: int = 0
    account_tokens: int = 0
    unverified_signups: int = 0


async def prune(
    database: Database, keys: KeyService, now: datetime, batch: int = 1000
) -> PruneReport:
    """Delete expired denylist entries, refresh tokens, sessions, authorization codes, mailed
    links, mfa and passkey challenges, feed entries and old keys, self sign-ups never verified
    within AUTHSVC_UNVERIFIED_SIGNUP_TTL, and audit events past AUTHSVC_AUDIT_RETENTION_DAYS (0
    keeps them).

    Each batch is its own short transaction so the tables are never locked for long. Sessions
    go last: a session row (and its used tokens) is what detects reuse until it expires.
    """
    report = PruneReport()
    steps: tuple[tuple[str, Callable[[AsyncSession], Awaitable[int]]], ...] = (
        ("denylist", lambda db: DenylistRepository(db).delete_expired(now, batch)),
        ("refresh_tokens", lambda db: RefreshTokenRepository(db).delete_expired(now, batch)),
        ("sessions", lambda db: SessionRepository(db).delete_expired(now, batch)),
        ("account_tokens", lambda db: AccountTokenRepository(db).delete_expired(now, batch)),
        (
            # Kept a day past expiry, so that a late replay still revokes what the code issued.
            "authorization_codes",
            lambda db: AuthorizationCodeRepository(db).delete_expired(
                now - CODE_REUSE_MEMORY, batch
            ),
        ),
        ("mfa_challenges", lambda db: MfaChallengeRepository(db).delete_expired(now, batch)),
        (
            "passkey_challenges",
            lambda db: PasskeyChallengeRepository(db).delete_expired(now, batch),
        ),
        (
            # Each deletion's audit row commits with it, in the same batch.
            "unverified_signups",
            lambda db: delete_unverified(db, keys.settings, now, batch),
        ),
        (
            "revocation_events",
            lambda db: RevocationEventRepository(db).delete_expired(
                now - retention(keys.settings), batch
            ),
        ),
    )
    retention_days = keys.settings.audit_retention_days
    if retention_days:
        cutoff = now - timedelta(days=retention_days)
        steps = (
            *steps,
            ("audit_events", lambda db: AuditRepository(db).delete_older_than(cutoff, batch)),
        )
    for field, step in steps:
        while True:
            async with database.transaction() as db:
                deleted = await step(db)
            setattr(report, field, getattr(report, field) + deleted)
            if deleted < batch:
                break
    async with database.transaction() as db:
        report.signing_keys = await keys.prune(db, now)
    return report
