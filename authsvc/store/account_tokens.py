"""SQL for one-time account tokens (store/models.py AccountToken) and the user rows they
change."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.store.models import AccountToken, User


class AccountTokenRepository:
    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def add(self, token: AccountToken) -> None:
        self.db.add(token)
        await self.db.flush()

    async def redeem(self, digest: bytes, purpose: str, now: datetime) -> AccountToken | None:
        """Compare-and-set: mark the unused, unexpired token with this digest used, and return
        it; None if there is none. Of two requests with the same token exactly one gets it, on
        SQLite and on PostgreSQL (the UPDATE's condition is re-checked under the row lock)."""
        result = await self.db.execute(
            update(AccountToken)
            .where(
                AccountToken.digest == digest,
                AccountToken.purpose == purpose,
                AccountToken.used_at.is_(None),
                AccountToken.expires_at > now,
            )
            .values(used_at=now)
            .returning(AccountToken.id)
            .execution_options(synchronize_session=False)
        )
        token_id = result.scalar_one_or_none()
        if token_id is None:
            return None
        return await self.db.get(AccountToken, token_id, populate_existing=True)

    async def void_for_user(self, user_id: uuid.UUID, purpose: str | None, now: datetime) -> int:
        """Mark a user's outstanding tokens (of one purpose, or all) used: an older link dies
        when a newer one is redeemed, or when an operator disables the account."""
        query = update(AccountToken).where(
            AccountToken.user_id == user_id, AccountToken.used_at.is_(None)
        )
        if purpose is not None:
            query = query.where(AccountToken.purpose == purpose)
        result = await self.db.execute(
            query.values(used_at=now).execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def delete_expired(self, now: datetime, limit: int) -> int:
        ids = select(AccountToken.id).where(AccountToken.expires_at <= now).limit(limit)
        result = await self.db.execute(delete(AccountToken).where(AccountToken.id.in_(ids)))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def verify_email(self, user_id: uuid.UUID, email: str, now: datetime) -> bool:
        """Compare-and-set: mark the user's address verified if it is still `email` and not yet
        verified; a sign-up account (never verified, inactive) is switched on with it."""
        result = await self.db.execute(
            update(User)
            .where(User.id == user_id, User.email == email, User.email_verified_at.is_(None))
            .values(email_verified_at=now, is_active=True, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0) == 1  # type: ignore[attr-defined]
