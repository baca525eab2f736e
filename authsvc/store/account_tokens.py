"""SQL for one-time account tokens (store/models.py AccountToken), the user rows they change,
and the self sign-ups whose address was never verified."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Table, update
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.store.batches import delete_batch, delete_batch_rows
from authsvc.store.models import AccountToken, User

_users: Table = User.__table__  # type: ignore[assignment]
_tokens: Table = AccountToken.__table__  # type: ignore[assignment]


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
        """Expired tokens, used or not, oldest first."""
        return await delete_batch(
            self.db, _tokens, AccountToken.expires_at <= now, AccountToken.expires_at, limit
        )

    async def verify_email(self, user_id: uuid.UUID, email: str, now: datetime) -> bool:
        """Compare-and-set: mark the user's address verified if it is still `email` and not yet
        verified; a sign-up account (never verified, inactive) is switched on with it."""
        result = await self.db.execute(
            update(User)
            .where(User.id == user_id, User.email == email, User.email_verified_at.is_(None))
            .values(
                email_verified_at=now, is_active=True, signup_pending_since=None, updated_at=now
            )
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0) == 1  # type: ignore[attr-defined]

    async def delete_unverified_signups(
        self, before: datetime, limit: int
    ) -> Sequence[tuple[uuid.UUID, str]]:
        """Delete up to `limit` self sign-ups still pending since before `before`, oldest first
        (their links and anything else of theirs go with them: ON DELETE CASCADE); the id and
        name of each."""
        rows = await delete_batch_rows(
            self.db,
            _users,
            User.signup_pending_since < before,
            User.signup_pending_since,
            limit,
            User.id,
            User.username,
        )
        return [(row.id, row.username) for row in rows]
