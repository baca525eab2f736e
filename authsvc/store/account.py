"""SQL for the self-service account API: a user's own sessions and password change."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.store.models import Session, User
from authsvc.store.rules import session_live


class UserSessionRepository:
    """A user's own sessions, as the sessions API shows them."""

    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def live_for_user(self, user_id: uuid.UUID, now: datetime) -> Sequence[Session]:
        result = await self.db.execute(
            select(Session)
            .where(Session.user_id == user_id, *session_live(now))
            .order_by(Session.created_at.desc())
        )
        return result.scalars().all()

    async def replace_password_hash(
        self, user_id: uuid.UUID, old_hash: str, new_hash: str, now: datetime
    ) -> bool:
        """Compare-and-set: only if the hash is still the one the caller verified against."""
        result = await self.db.execute(
            update(User)
            .where(User.id == user_id, User.password_hash == old_hash)
            .values(password_hash=new_hash, updated_at=now)
        )
        return int(result.rowcount or 0) == 1  # type: ignore[attr-defined]
