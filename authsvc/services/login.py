"""Login: check the password (and the second factor), then sign in (services/signin.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

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
from authsvc.services.issuer import Grant, TokenPair
from authsvc.services.mfa import PASSWORD_ONLY, PURPOSE_LOGIN, Factor, MfaService
from authsvc.services.ratelimit import RateLimiter
from authsvc.services.signin import SignInService
from authsvc.services.users import normalize_username
from authsvc.store.db import Database
from authsvc.store.models import User
from authsvc.store.repositories import UserRepository


class LoginService:
    def __init__(
        self,
        database: Database,
        passwords: PasswordHasher,
        signin: SignInService,
        limiter: RateLimiter,
        metrics: Metrics,
        mfa: MfaService,
    ) -> None:
        self.database = database
        self.passwords = passwords
        self.signin = signin
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
                raise MfaRequired(token, await self.mfa.methods(db, user))
            return await self.signin.sign_in(db, user, ctx, grant, amr=PASSWORD_ONLY, details=None)

    async def finish(
        self,
        db: AsyncSession,
        mfa_token: str,
        factor: Factor,
        ctx: RequestContext,
        grant: Grant,
    ) -> TokenPair:
        """The second step of `login` for a user with a second factor: the factor (a code, a
        recovery code or a passkey) spends the mfa_token, and the session opens with the
        methods used (RFC 8176 amr)."""
        verified = await self.mfa.verify(db, mfa_token, factor, PURPOSE_LOGIN, ctx)
        return await self.signin.sign_in(
            db, verified.user, ctx, grant, amr=verified.amr, details=None
        )

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
