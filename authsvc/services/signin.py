"""Signing in: what happens once a user has proved who they are, however they proved it.

Every way in (password, password and second factor, passkey, the hosted page, the code a page
sign-in hands to a client) ends here, so the rule is written once: a new session carrying how
and when the user authenticated (RFC 8176 amr, OpenID Connect auth_time), its first refresh
token, the audit row of the sign-in, and the first access token.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.services import audit
from authsvc.services.context import RequestContext
from authsvc.services.issuer import Grant, TokenIssuer, TokenPair, session_amr
from authsvc.store.models import RefreshToken, Session, User
from authsvc.store.repositories import RefreshTokenRepository, SessionRepository


class SignInService:
    def __init__(self, settings: Settings, issuer: TokenIssuer) -> None:
        self.settings = settings
        self.issuer = issuer

    async def sign_in(
        self,
        db: AsyncSession,
        user: User,
        ctx: RequestContext,
        grant: Grant,
        *,
        amr: Sequence[str],
        details: Mapping[str, str] | None,
    ) -> TokenPair:
        """A user who authenticated just now (`amr`: how): a session, its audit row, its
        tokens. `details` go to the audit row (which method, which passkey)."""
        session, token, expires_at = await self._open(
            db, user, ctx, grant, auth_time=ctx.now, max_age=self.settings.session_max_age, amr=amr
        )
        await self._record(db, user, session, ctx, details)
        return await self._sign(db, user, session, token, expires_at, ctx, grant)

    async def browser(
        self, db: AsyncSession, user: User, ctx: RequestContext, grant: Grant, *, amr: Sequence[str]
    ) -> tuple[Session, str]:
        """The hosted page's sign-in: the same session and audit row, no access token; the
        refresh token is the page's cookie and lives `login_session_ttl` seconds."""
        session, token, _ = await self._open(
            db,
            user,
            ctx,
            grant,
            auth_time=ctx.now,
            max_age=self.settings.login_session_ttl,
            amr=amr,
        )
        await self._record(db, user, session, ctx, None)
        return session, token

    async def resume(
        self,
        db: AsyncSession,
        user: User,
        ctx: RequestContext,
        grant: Grant,
        *,
        amr: Sequence[str],
        auth_time: datetime,
    ) -> TokenPair:
        """A client's session for a sign-in made earlier on the hosted page (the code
        exchange): how and when the user authenticated there, no second audit row (the page
        wrote it)."""
        session, token, expires_at = await self._open(
            db,
            user,
            ctx,
            grant,
            auth_time=auth_time,
            max_age=self.settings.session_max_age,
            amr=amr,
        )
        return await self._sign(db, user, session, token, expires_at, ctx, grant)

    async def _open(
        self,
        db: AsyncSession,
        user: User,
        ctx: RequestContext,
        grant: Grant,
        *,
        auth_time: datetime,
        max_age: int,
        amr: Sequence[str],
    ) -> tuple[Session, str, datetime]:
        """A new session ending after `max_age` seconds, and its first refresh token with that
        token's expiry."""
        now = ctx.now
        session = Session(
            id=uuid.uuid4(),
            user_id=user.id,
            created_at=now,
            last_used_at=now,
            expires_at=now + timedelta(seconds=max_age),
            client_ip=(ctx.ip or None) and ctx.ip[:64],
            user_agent=(ctx.user_agent or None) and ctx.user_agent[:512],
            client_id=grant.client_id,
            scope=grant.scope,
            dpop_jkt=grant.session_jkt,
            auth_time=auth_time,
            amr=" ".join(amr),
        )
        await SessionRepository(db).add(session)
        token = self.issuer.refresh.new()
        expires_at = self.issuer.refresh_expiry(session.expires_at, now)
        await RefreshTokenRepository(db).add(
            RefreshToken(
                session_id=session.id,
                parent_id=None,
                digest=self.issuer.refresh.digest(token),
                issued_at=now,
                expires_at=expires_at,
            )
        )
        return session, token, expires_at

    async def _sign(
        self,
        db: AsyncSession,
        user: User,
        session: Session,
        token: str,
        expires_at: datetime,
        ctx: RequestContext,
        grant: Grant,
    ) -> TokenPair:
        return self.issuer.sign(
            await self.issuer.signing_ring(db, ctx.now),
            user.id,
            list(user.roles or []),
            session.id,
            token,
            expires_at,
            ctx.now,
            grant,
            session_amr(session.amr),
        )

    @staticmethod
    async def _record(
        db: AsyncSession,
        user: User,
        session: Session,
        ctx: RequestContext,
        details: Mapping[str, str] | None,
    ) -> None:
        await audit.record(
            db,
            ctx.now,
            audit.Entry(
                audit.LOGIN_SUCCEEDED,
                user.id,
                user.username,
                session.id,
                ctx.ip,
                details=dict(details) if details else None,
            ),
        )
