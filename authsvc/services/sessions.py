"""A user's own sessions: list them, revoke one, change the password (revoking the others)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.errors import InvalidCredentials, InvalidToken, NotFound
from authsvc.security.passwords import PasswordHasher
from authsvc.services.access import AccessService, Presented
from authsvc.services.context import RequestContext
from authsvc.services.ratelimit import RateLimiter
from authsvc.services.users import UserService
from authsvc.store.account import UserSessionRepository
from authsvc.store.db import Database
from authsvc.store.models import Session
from authsvc.store.repositories import SessionRepository, UserRepository


async def live_session(db: AsyncSession, session_id: str, now: datetime) -> Session:
    """A live session by its id as a client sent it; NotFound for a malformed, unknown,
    revoked or expired one alike (the user's own revoke and the admin's share this)."""
    try:
        target = uuid.UUID(session_id)
    except ValueError as exc:
        raise NotFound("No such session.") from exc
    session = await SessionRepository(db).live(target, now)
    if session is None:
        raise NotFound("No such live session.")
    return session


@dataclass(frozen=True)
class SessionView:
    id: uuid.UUID
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    ip: str | None
    user_agent: str | None
    client_id: str | None
    current: bool


class SessionService:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        access: AccessService,
        passwords: PasswordHasher,
        limiter: RateLimiter,
        users: UserService,
    ) -> None:
        self.settings = settings
        self.database = database
        self.access = access
        self.passwords = passwords
        self.limiter = limiter
        self.users = users

    async def list(
        self, db: AsyncSession, token: Presented, ctx: RequestContext
    ) -> Sequence[SessionView]:
        claims = (await self.access.authenticate(db, token, ctx.now)).claims
        rows = await UserSessionRepository(db).live_for_user(uuid.UUID(claims.sub), ctx.now)
        return [
            SessionView(
                id=s.id,
                created_at=s.created_at,
                last_used_at=s.last_used_at,
                expires_at=s.expires_at,
                ip=s.client_ip,
                user_agent=s.user_agent,
                client_id=s.client_id,
                current=str(s.id) == claims.sid,
            )
            for s in rows
        ]

    async def revoke(
        self, db: AsyncSession, token: Presented, session_id: str, ctx: RequestContext
    ) -> None:
        """Revoke one of the caller's own live sessions; anyone else's is 404, not 403, so
        session ids cannot be probed."""
        now = ctx.now
        claims = (await self.access.authenticate(db, token, now)).claims
        session = await live_session(db, session_id, now)
        if str(session.user_id) != claims.sub:
            raise NotFound("No such live session.")  # as if it did not exist
        await SessionRepository(db).revoke(
            [session.id],
            now,
            "revoked_by_user",
            tokens_valid_until=now + self.settings.access_token_horizon,
        )

    async def change_password(
        self, db: AsyncSession, token: Presented, current: str, new: str, ctx: RequestContext
    ) -> None:
        """Check the current password, set the new one, revoke every other session.

        The hashing happens in a short read-only transaction first, so no write lock is held
        while argon2 runs; the write then only lands if the hash did not change meanwhile.
        """
        now = ctx.now
        async with self.database.read() as reader:
            claims = (await self.access.authenticate(reader, token, now)).claims
            user = await UserRepository(reader).by_id(uuid.UUID(claims.sub))
            if user is None or not user.is_active:
                raise InvalidToken()
            old_hash = user.password_hash
        # Guessing the current password with a stolen access token is throttled like login.
        async with self.limiter.login_attempt(user.username, now):
            ok, _ = await self.passwords.verify(current, old_hash)
            if not ok:
                raise InvalidCredentials("The current password is wrong.")
        self.users.check_password_policy(new)
        new_hash = await self.passwords.hash(new)
        if not await UserSessionRepository(db).replace_password_hash(
            user.id, old_hash, new_hash, now
        ):
            raise InvalidCredentials("The password changed meanwhile; try again.")
        await self.users.password_changed(
            db, user, now, keep_session=uuid.UUID(claims.sid), actor="self"
        )
