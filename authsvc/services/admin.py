"""The operator's user management: delete a user, set roles, list and revoke sessions.

Every revocation goes through SessionRepository.revoke, as logout and disabling do: the session
ends, its access tokens are refused by /auth/me and introspection at once, and its `sid` goes on
the revocation feed so that resource servers refuse them within one poll.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.errors import NotFound
from authsvc.services import audit
from authsvc.services.users import UserService, normalize_roles
from authsvc.store.account import UserSessionRepository
from authsvc.store.admin import UserAdminRepository
from authsvc.store.models import Session, User
from authsvc.store.repositories import SessionRepository, UserRepository

DELETED = "user_deleted"
REVOKED = "revoked_by_admin"


@dataclass(frozen=True)
class RolesChange:
    user: User
    previous: list[str]
    sessions_revoked: int


class UserAdmin:
    def __init__(self, settings: Settings, users: UserService) -> None:
        self.settings = settings
        self.users = users

    async def _revoke(
        self, db: AsyncSession, ids: Sequence[uuid.UUID], now: datetime, reason: str
    ) -> int:
        return await SessionRepository(db).revoke(
            ids, now, reason, tokens_valid_until=now + self.settings.access_token_horizon
        )

    async def _revoke_all(self, db: AsyncSession, user: User, now: datetime, reason: str) -> int:
        live = await SessionRepository(db).live_ids_for_user(user.id, now)
        return await self._revoke(db, live, now, reason)

    async def delete(
        self, db: AsyncSession, username: str, now: datetime, actor: str
    ) -> tuple[User, int]:
        """Delete a user for good; returns them and how many live sessions were revoked.

        The sessions are revoked first, so that the feed carries their `sid`s for as long as
        any of their access tokens could be presented; then the row goes, and with it (ON
        DELETE CASCADE) the sessions and refresh tokens. The name becomes free again; the audit
        trail keeps the user's events under the old id and name."""
        user = await self.users.get(db, username)
        revoked = await self._revoke_all(db, user, now, DELETED)
        await audit.record(
            db,
            now,
            audit.Entry(
                audit.USER_DELETED,
                user.id,
                user.username,
                actor=actor,
                details={"sessions_revoked": revoked, "roles": list(user.roles or [])},
            ),
        )
        await UserAdminRepository(db).delete(user.id)
        return user, revoked

    async def set_roles(
        self,
        db: AsyncSession,
        username: str,
        roles: Sequence[str],
        now: datetime,
        actor: str,
        *,
        revoke_sessions: bool = False,
    ) -> RolesChange:
        """Replace a user's roles. Tokens minted from now on (a refresh included) carry the new
        ones; access tokens already out keep the old ones until they expire, unless
        `revoke_sessions` ends the user's sessions as well."""
        cleaned = normalize_roles(roles)
        user = await self.users.get(db, username)
        previous = list(user.roles or [])
        user.roles = cleaned
        user.updated_at = now
        revoked = await self._revoke_all(db, user, now, REVOKED) if revoke_sessions else 0
        await audit.record(
            db,
            now,
            audit.Entry(
                audit.ROLES_CHANGED,
                user.id,
                user.username,
                actor=actor,
                details={"roles": cleaned, "previous": previous, "sessions_revoked": revoked},
            ),
        )
        await db.flush()
        return RolesChange(user, previous, revoked)

    async def sessions(
        self, db: AsyncSession, username: str, now: datetime
    ) -> tuple[User, Sequence[Session]]:
        """A user's live sessions, newest first."""
        user = await self.users.get(db, username)
        return user, await UserSessionRepository(db).live_for_user(user.id, now)

    async def revoke_session(
        self, db: AsyncSession, session_id: str, now: datetime, actor: str
    ) -> User:
        """Revoke one live session, whoever's it is; returns its user."""
        try:
            target = uuid.UUID(session_id)
        except ValueError as exc:
            raise NotFound("No such session.") from exc
        sessions = SessionRepository(db)
        session = await sessions.get(target)
        if session is None or not await sessions.is_live(target, now):
            raise NotFound("No such live session.")
        user = await UserRepository(db).by_id(session.user_id)
        if user is None:  # the foreign key rules this out
            raise NotFound("No such live session.")
        revoked = await self._revoke(db, [target], now, REVOKED)
        await audit.record(
            db,
            now,
            audit.Entry(
                audit.SESSIONS_REVOKED,
                user.id,
                user.username,
                target,
                actor=actor,
                details={"sessions_revoked": revoked},
            ),
        )
        return user

    async def revoke_sessions(
        self, db: AsyncSession, username: str, now: datetime, actor: str
    ) -> tuple[User, int]:
        """Revoke every live session of a user (who may log in again)."""
        user = await self.users.get(db, username)
        revoked = await self._revoke_all(db, user, now, REVOKED)
        await audit.record(
            db,
            now,
            audit.Entry(
                audit.SESSIONS_REVOKED,
                user.id,
                user.username,
                actor=actor,
                details={"sessions_revoked": revoked},
            ),
        )
        return user, revoked

    async def usernames(self, db: AsyncSession, user_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
        return await UserAdminRepository(db).usernames(user_ids)

    async def user_id(self, db: AsyncSession, username: str) -> uuid.UUID | None:
        """A user's id, or a deleted user's as the audit trail recorded it."""
        user = await UserRepository(db).by_username(username)
        if user is not None:
            return user.id
        return await UserAdminRepository(db).recorded_user_id(username)
