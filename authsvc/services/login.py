"""Login: check the password, open a session, issue its first tokens."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.errors import (
    InvalidCredentials,
    InvalidGrant,
    InvalidUsername,
    MfaRequired,
    RateLimited,
)
from authsvc.observability.metrics import Metrics
from authsvc.security.passwords import PasswordHasher
from authsvc.services import audit
from authsvc.services.context import RequestContext
from authsvc.services.issuer import Grant, TokenIssuer, TokenPair, session_amr
from authsvc.services.mfa import METHODS, PASSWORD_ONLY, PURPOSE_LOGIN, MfaService
from authsvc.services.ratelimit import RateLimiter
from authsvc.services.users import normalize_username
from authsvc.store.db import Database
from authsvc.store.models import RefreshToken, Session, User
from authsvc.store.repositories import RefreshTokenRepository, SessionRepository, UserRepository


class LoginService:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        passwords: PasswordHasher,
        issuer: TokenIssuer,
        limiter: RateLimiter,
        metrics: Metrics,
        mfa: MfaService,
    ) -> None:
        self.settings = settings
        self.database = database
        self.passwords = passwords
        self.issuer = issuer
        self.limiter = limiter
        self.metrics = metrics
        self.mfa = mfa

    async def login(
        self,
        db: AsyncSession,
        username: str,
        password: str,
        ctx: RequestContext,
        grant: Grant,
        *,
        second_factor: Literal["challenge", "refuse"],
    ) -> TokenPair:
        """Rate limits (per address, per name, backoff after failures), the password check,
        then a new session and its first tokens.

        The grant comes from the OAuth adapter (already checked there); the JSON API passes
        FIRST_PARTY and gets the defaults. For a user with a second factor there are no tokens
        yet: the JSON API ("challenge") answers MfaRequired with an mfa_token for `finish`;
        the OAuth password grant ("refuse"), which has no second step, refuses the grant."""
        async with self._attempt(username, ctx):
            user = await self._check_password(db, username, password, ctx)
            if await self.mfa.enabled(db, user.id):
                if second_factor == "refuse":
                    raise InvalidGrant(
                        "This account uses two-factor authentication: sign in with the "
                        "authorization code flow."
                    )
                token = await self.mfa.challenge(db, user, PURPOSE_LOGIN, ctx)
                raise MfaRequired(token, METHODS)
            session, token, expires_at = await self.open_session(
                db,
                user,
                ctx,
                grant,
                auth_time=ctx.now,
                max_age=self.settings.session_max_age,
                amr=PASSWORD_ONLY,
            )
            await self.record_login(db, user, session, ctx)
            return await self.sign(db, user, session, token, expires_at, ctx, grant)

    async def finish(
        self,
        db: AsyncSession,
        mfa_token: str,
        code: str | None,
        recovery_code: str | None,
        ctx: RequestContext,
        grant: Grant,
    ) -> TokenPair:
        """The second step of `login` for a user with a second factor: the code spends the
        mfa_token, and the session opens with the methods used (RFC 8176 amr)."""
        verified = await self.mfa.verify(db, mfa_token, code, recovery_code, PURPOSE_LOGIN, ctx)
        user = verified.user
        session, token, expires_at = await self.open_session(
            db,
            user,
            ctx,
            grant,
            auth_time=ctx.now,
            max_age=self.settings.session_max_age,
            amr=verified.amr,
        )
        await self.record_login(db, user, session, ctx)
        return await self.sign(db, user, session, token, expires_at, ctx, grant)

    async def verify(
        self, db: AsyncSession, username: str, password: str, ctx: RequestContext
    ) -> User:
        """The password check of `login`, under the same rate limits and backoff, for callers
        that open their own session (the hosted login page)."""
        async with self._attempt(username, ctx):
            return await self._check_password(db, username, password, ctx)

    @asynccontextmanager
    async def _attempt(self, username: str, ctx: RequestContext) -> AsyncIterator[None]:
        try:
            await self.limiter.check_address("login", ctx.ip, ctx.now)
            async with self.limiter.login_attempt(username, ctx.now):
                yield
        except RateLimited:
            self.metrics.rate_limited("login")
            raise

    async def _check_password(
        self,
        db: AsyncSession,
        username: str,
        password: str,
        ctx: RequestContext,
    ) -> User:
        """The active user with this name and password, loaded in `db`.

        Unknown user, wrong password and disabled user give the same error after the same
        work (a dummy hash is checked for unknown names). The user is read in a short read-only
        transaction so that no write lock or pooled connection is held during hashing.
        """
        now = ctx.now
        try:
            name = normalize_username(username)
        except InvalidUsername:
            name = None
        stored_hash: str | None = None
        user_id: uuid.UUID | None = None
        disabled_id: uuid.UUID | None = None
        if name is not None:
            async with self.database.read() as reader:
                found = await UserRepository(reader).by_username(name)
                if found is not None:
                    stored_hash = found.password_hash
                    if found.is_active:
                        user_id = found.id
                    else:
                        disabled_id = found.id
        ok, new_hash = await self.passwords.verify(password, stored_hash)
        # A disabled user fails here too, before any further work: a right password for a
        # disabled account must not take measurably longer than a wrong one.
        if disabled_id is not None:
            raise self._login_failed(ctx, disabled_id, name, "disabled")
        if not ok or user_id is None:
            raise self._login_failed(
                ctx, user_id, name, "bad_password" if user_id else "unknown_user"
            )
        user = await UserRepository(db).by_id(user_id)
        if user is None or not user.is_active:
            raise self._login_failed(ctx, user_id, name, "disabled")
        if new_hash is not None and user.password_hash == stored_hash:
            user.password_hash = new_hash
            user.updated_at = now
        self.metrics.login("success")
        return user

    async def open_session(
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
        """A new session for an authenticated user (`auth_time`: when they proved it, `amr`:
        how, RFC 8176), ending after `max_age` seconds, and its first refresh token with that
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

    async def sign(
        self,
        db: AsyncSession,
        user: User,
        session: Session,
        token: str,
        expires_at: datetime,
        ctx: RequestContext,
        grant: Grant,
    ) -> TokenPair:
        """The first access token of a session opened by open_session, with its refresh token."""
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
    async def record_login(
        db: AsyncSession, user: User, session: Session, ctx: RequestContext
    ) -> None:
        await audit.record(
            db,
            ctx.now,
            audit.Entry(audit.LOGIN_SUCCEEDED, user.id, user.username, session.id, ctx.ip),
        )

    def _login_failed(
        self,
        ctx: RequestContext,
        user_id: uuid.UUID | None,
        name: str | None,
        reason: str,
    ) -> InvalidCredentials:
        """The client learns nothing; the audit trail (committed alone) learns the reason."""
        self.metrics.login("failure")
        error = InvalidCredentials()
        entry = audit.Entry(
            audit.LOGIN_FAILED,
            user_id=user_id,
            # An unknown name is not kept: it is often a password typed in the wrong field.
            username=name if user_id is not None else None,
            ip=ctx.ip,
            details={"reason": reason},
        )
        error.failure_writes.append(audit.writer(ctx.now, entry))
        return error
