"""SQL for the second factor: TOTP credentials, recovery codes and mfa challenges.

Every one-time thing is spent by a compare-and-set UPDATE (one statement: of two concurrent
requests exactly one changes the row, on PostgreSQL by its row lock and re-check, on SQLite by
its serialised writers), and every counter is raised the same way, below its limit only.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, Table, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.store.batches import delete_batch
from authsvc.store.models import MfaChallenge, RecoveryCode, TotpCredential

_challenges: Table = MfaChallenge.__table__  # type: ignore[assignment]


def _changed(result: object) -> bool:
    return int(getattr(result, "rowcount", 0) or 0) == 1


class TotpRepository:
    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def get(self, user_id: uuid.UUID) -> TotpCredential | None:
        result = await self.db.execute(
            select(TotpCredential)
            .where(TotpCredential.user_id == user_id)
            .execution_options(populate_existing=True)
        )
        return result.scalars().first()

    async def enabled_for(self, user_id: uuid.UUID) -> bool:
        result = await self.db.execute(
            select(TotpCredential.user_id).where(
                TotpCredential.user_id == user_id, TotpCredential.confirmed_at.is_not(None)
            )
        )
        return result.first() is not None

    async def replace_pending(self, user_id: uuid.UUID, sealed: bytes, now: datetime) -> None:
        """A new, unconfirmed secret (a confirmed one is never replaced here)."""
        await self.db.execute(
            delete(TotpCredential).where(
                TotpCredential.user_id == user_id, TotpCredential.confirmed_at.is_(None)
            )
        )
        self.db.add(
            TotpCredential(user_id=user_id, secret_encrypted=sealed, created_at=now, failures=0)
        )
        await self.db.flush()

    async def claim_step(self, user_id: uuid.UUID, step: int, now: datetime) -> bool:
        """Accept the code of time step `step` once: only if no code of this or a later step
        was accepted before (RFC 6238 section 5.2). Clears the failure count."""
        result = await self.db.execute(
            update(TotpCredential)
            .where(
                TotpCredential.user_id == user_id,
                or_(TotpCredential.last_step.is_(None), TotpCredential.last_step < step),
            )
            .values(last_step=step, failures=0, locked_until=None)
            .execution_options(synchronize_session=False)
        )
        return _changed(result)

    async def confirm(self, user_id: uuid.UUID, now: datetime) -> bool:
        result = await self.db.execute(
            update(TotpCredential)
            .where(TotpCredential.user_id == user_id, TotpCredential.confirmed_at.is_(None))
            .values(confirmed_at=now)
            .execution_options(synchronize_session=False)
        )
        return _changed(result)

    async def succeeded(self, user_id: uuid.UUID) -> None:
        await self.db.execute(
            update(TotpCredential)
            .where(TotpCredential.user_id == user_id)
            .values(failures=0, locked_until=None)
            .execution_options(synchronize_session=False)
        )

    async def failed(self, user_id: uuid.UUID, limit: int, lock_until: datetime) -> None:
        """One more consecutive failure; the `limit`-th locks the factor until `lock_until`."""
        await self.db.execute(
            update(TotpCredential)
            .where(TotpCredential.user_id == user_id)
            .values(failures=TotpCredential.failures + 1)
            .execution_options(synchronize_session=False)
        )
        await self.db.execute(
            update(TotpCredential)
            .where(TotpCredential.user_id == user_id, TotpCredential.failures >= limit)
            .values(failures=0, locked_until=lock_until)
            .execution_options(synchronize_session=False)
        )

    async def all_sealed(self) -> list[tuple[uuid.UUID, bytes]]:
        """Every stored secret, sealed: what `authsvc keys rewrap` re-encrypts."""
        result = await self.db.execute(
            select(TotpCredential.user_id, TotpCredential.secret_encrypted).order_by(
                TotpCredential.user_id
            )
        )
        return [(row[0], row[1]) for row in result.all()]

    async def replace_sealed(self, user_id: uuid.UUID, sealed: bytes) -> None:
        await self.db.execute(
            update(TotpCredential)
            .where(TotpCredential.user_id == user_id)
            .values(secret_encrypted=sealed)
            .execution_options(synchronize_session=False)
        )

    async def remove(self, user_id: uuid.UUID) -> bool:
        result = await self.db.execute(
            delete(TotpCredential).where(TotpCredential.user_id == user_id)
        )
        await self.db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
        return _changed(result)


class RecoveryCodeRepository:
    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def replace(self, user_id: uuid.UUID, digests: Sequence[bytes], now: datetime) -> None:
        await self.db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
        self.db.add_all(RecoveryCode(user_id=user_id, digest=d, created_at=now) for d in digests)
        await self.db.flush()

    async def spend(self, user_id: uuid.UUID, digest: bytes, now: datetime) -> bool:
        """Compare-and-set: the user's unspent code with this digest, spent once."""
        result = await self.db.execute(
            update(RecoveryCode)
            .where(
                RecoveryCode.user_id == user_id,
                RecoveryCode.digest == digest,
                RecoveryCode.used_at.is_(None),
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        return _changed(result)

    async def remaining(self, user_id: uuid.UUID) -> int:
        result = await self.db.execute(
            select(RecoveryCode.id).where(
                RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None)
            )
        )
        return len(result.all())


def _live(
    digest: bytes, purpose: str, now: datetime, max_attempts: int
) -> tuple[ColumnElement[bool], ...]:
    """The challenge with this digest and purpose that may still be answered: unspent,
    unexpired, attempts left. `attempt` counts on it; `live` reads it without counting."""
    return (
        MfaChallenge.digest == digest,
        MfaChallenge.purpose == purpose,
        MfaChallenge.used_at.is_(None),
        MfaChallenge.expires_at > now,
        MfaChallenge.attempts < max_attempts,
    )


class MfaChallengeRepository:
    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def add(self, challenge: MfaChallenge) -> None:
        self.db.add(challenge)
        await self.db.flush()

    async def attempt(
        self, digest: bytes, purpose: str, now: datetime, max_attempts: int
    ) -> MfaChallenge | None:
        """Count one attempt on the live challenge with this digest and purpose, and return it;
        None (nothing counted) when it is unknown, spent, expired or out of attempts."""
        result = await self.db.execute(
            update(MfaChallenge)
            .where(*_live(digest, purpose, now, max_attempts))
            .values(attempts=MfaChallenge.attempts + 1)
            .execution_options(synchronize_session=False)
        )
        if not _changed(result):
            return None
        found = await self.db.execute(
            select(MfaChallenge)
            .where(MfaChallenge.digest == digest)
            .execution_options(populate_existing=True)
        )
        return found.scalars().first()

    async def live(
        self, digest: bytes, purpose: str, now: datetime, max_attempts: int
    ) -> MfaChallenge | None:
        """The challenge `attempt` would count on, without counting."""
        found = await self.db.execute(
            select(MfaChallenge).where(*_live(digest, purpose, now, max_attempts))
        )
        return found.scalars().first()

    async def spend(self, challenge_id: int, now: datetime) -> bool:
        result = await self.db.execute(
            update(MfaChallenge)
            .where(MfaChallenge.id == challenge_id, MfaChallenge.used_at.is_(None))
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        return _changed(result)

    async def delete_expired(self, before: datetime, limit: int) -> int:
        return await delete_batch(
            self.db, _challenges, MfaChallenge.expires_at <= before, MfaChallenge.expires_at, limit
        )
