"""SQL for the operator's user management (`authsvc users`, `authsvc sessions`, `authsvc audit`
and the admin API)."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.store.models import AuditEvent, User


class UserAdminRepository:
    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def delete(self, user_id: uuid.UUID) -> bool:
        """Delete a user; the foreign keys' ON DELETE CASCADE removes their sessions and those
        sessions' refresh tokens. The audit trail and the revocation feed keep no foreign key
        to the user and stay."""
        result = await self.db.execute(
            delete(User).where(User.id == user_id).execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0) == 1  # type: ignore[attr-defined]

    async def search(
        self, name_part: str | None, email_part: str | None, after: str | None, limit: int
    ) -> Sequence[User]:
        """Users whose name contains `name_part` or whose email contains `email_part` (both
        given normalised; neither: everyone), by name, the page after the name `after` (keyset
        paging on the unique name)."""
        query = select(User)
        match = []
        if name_part:
            match.append(User.username.contains(name_part, autoescape=True))
        if email_part:
            match.append(User.email.contains(email_part, autoescape=True))
        if match:
            query = query.where(or_(*match))
        if after is not None:
            query = query.where(User.username > after)
        result = await self.db.execute(query.order_by(User.username).limit(limit))
        return result.scalars().all()

    async def set_email(self, user_id: uuid.UUID, email: str | None, now: datetime) -> bool:
        """Set (or clear) a user's email; False if another user has it (the unique
        constraint decides, in a savepoint so the request's transaction goes on)."""
        try:
            async with self.db.begin_nested():
                await self.db.execute(
                    update(User)
                    .where(User.id == user_id)
                    # A new address is not verified, whoever set it.
                    .values(email=email, email_verified_at=None, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
        except IntegrityError:
            return False
        return True

    async def usernames(self, user_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, str]:
        """The name of each user id: the user's own, or for a deleted user the name the audit
        trail last recorded for it."""
        if not user_ids:
            return {}
        result = await self.db.execute(select(User.id, User.username).where(User.id.in_(user_ids)))
        names: dict[uuid.UUID, str] = {row.id: row.username for row in result}
        gone = [i for i in user_ids if i not in names]
        if gone:
            recorded = await self.db.execute(
                select(AuditEvent.user_id, AuditEvent.username)
                .where(AuditEvent.user_id.in_(gone), AuditEvent.username.is_not(None))
                .order_by(AuditEvent.id)
            )
            for user_id, username in recorded:
                if user_id is not None and username is not None:
                    names[user_id] = username
        return names

    async def recorded_user_id(self, username: str) -> uuid.UUID | None:
        """The id the audit trail last recorded under a name (for a user since deleted)."""
        result = await self.db.execute(
            select(AuditEvent.user_id)
            .where(AuditEvent.username == username, AuditEvent.user_id.is_not(None))
            .order_by(AuditEvent.id.desc())
            .limit(1)
        )
        return result.scalar_one_or_none()
