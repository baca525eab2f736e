"""SQL for passkeys (WebAuthn credentials) and their one-time ceremony challenges."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Table, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.store.batches import delete_batch
from authsvc.store.models import Passkey, PasskeyChallenge

_challenges: Table = PasskeyChallenge.__table__  # type: ignore[assignment]


class PasskeyRepository:
    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def add(self, passkey: Passkey) -> bool:
        """Insert; False if the credential id is already registered (to anyone)."""
        try:
            async with self.db.begin_nested():
                self.db.add(passkey)
                await self.db.flush()
        except IntegrityError:
            return False
        return True

    async def by_credential_id(self, credential_id: bytes) -> Passkey | None:
        result = await self.db.execute(
            select(Passkey).where(Passkey.credential_id == credential_id)
        )
        return result.scalar_one_or_none()

    async def for_user(self, user_id: uuid.UUID) -> Sequence[Passkey]:
        result = await self.db.execute(
            select(Passkey).where(Passkey.user_id == user_id).order_by(Passkey.created_at)
        )
        return result.scalars().all()

    async def any_for_user(self, user_id: uuid.UUID) -> bool:
        found = await self.db.execute(select(Passkey.id).where(Passkey.user_id == user_id).limit(1))
        return found.first() is not None

    async def delete_for_user(self, passkey_id: uuid.UUID, user_id: uuid.UUID) -> Passkey | None:
        """Delete one of the user's passkeys; None if it is not theirs or does not exist."""
        found = await self.db.execute(
            select(Passkey).where(Passkey.id == passkey_id, Passkey.user_id == user_id)
        )
        passkey = found.scalar_one_or_none()
        if passkey is None:
            return None
        await self.db.execute(delete(Passkey).where(Passkey.id == passkey.id))
        return passkey

    async def advance_counter(
        self, passkey_id: uuid.UUID, seen: int, new: int, now: datetime
    ) -> bool:
        """Compare-and-set of the signature counter: only from the value the caller checked
        against, so two concurrent assertions with the same counter cannot both pass."""
        result = await self.db.execute(
            update(Passkey)
            .where(Passkey.id == passkey_id, Passkey.sign_count == seen)
            .values(sign_count=new, last_used_at=now)
        )
        return int(result.rowcount or 0) == 1  # type: ignore[attr-defined]


class PasskeyChallengeRepository:
    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def add(self, challenge: PasskeyChallenge) -> None:
        self.db.add(challenge)
        await self.db.flush()

    async def delete_expired(self, before: datetime, limit: int) -> int:
        """A batch of the expired challenges (the prune; a challenge is also deleted when used)."""
        return await delete_batch(
            self.db,
            _challenges,
            PasskeyChallenge.expires_at <= before,
            PasskeyChallenge.expires_at,
            limit,
        )

    async def take(self, digest: bytes, purpose: str, now: datetime) -> PasskeyChallenge | None:
        """Consume a live challenge: the row is deleted, and only the one request whose delete
        removed it gets it (one-time use, on SQLite and PostgreSQL alike)."""
        found = await self.db.execute(
            select(PasskeyChallenge).where(
                PasskeyChallenge.digest == digest, PasskeyChallenge.purpose == purpose
            )
        )
        challenge = found.scalar_one_or_none()
        if challenge is None:
            return None
        result = await self.db.execute(
            delete(PasskeyChallenge).where(PasskeyChallenge.digest == digest)
        )
        if int(result.rowcount or 0) != 1:  # type: ignore[attr-defined]
            return None
        if challenge.expires_at <= now:
            return None
        return challenge

    async def discard_for_mfa(self, mfa_challenge_id: int) -> None:
        await self.db.execute(
            delete(PasskeyChallenge).where(PasskeyChallenge.mfa_challenge_id == mfa_challenge_id)
        )

    async def discard(self, digest: bytes) -> None:
        await self.db.execute(delete(PasskeyChallenge).where(PasskeyChallenge.digest == digest))
