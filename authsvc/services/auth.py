"""Login, refresh rotation, logout and access-token checks: the token lifecycle's rules."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.errors import (
    InvalidCredentials,
    InvalidRefreshToken,
    InvalidRequest,
    InvalidScope,
    InvalidToken,
    InvalidUsername,
    RateLimited,
    RefreshTokenReused,
    ServiceUnavailable,
)
from authsvc.observability.metrics import Metrics
from authsvc.security.keys import KeyRing
from authsvc.security.passwords import PasswordHasher
from authsvc.security.tokens import AccessClaims, AccessTokens, RefreshTokens
from authsvc.services import audit
from authsvc.services.context import RequestContext
from authsvc.services.keys import KeyService
from authsvc.services.ratelimit import RateLimiter
from authsvc.services.users import normalize_username
from authsvc.store.access import access_user_in_session, access_values
from authsvc.store.db import Database
from authsvc.store.models import RefreshToken, Session, User
from authsvc.store.repositories import (
    DenylistRepository,
    RefreshTokenRepository,
    SessionRepository,
    UserRepository,
)
from authsvc.store.rotation import rotate_in_session, rotation_values

LogoutScope = Literal["local", "others", "global"]


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    session_id: uuid.UUID
    scope: str = ""


@dataclass(frozen=True, slots=True)
class Grant:
    """What an OAuth client's tokens carry besides the defaults (all None for the JSON API):
    the client, the audience of its resource servers, the scope granted."""

    client_id: str | None
    audience: str | None
    scope: str | None


@dataclass(frozen=True)
class Principal:
    """Who an access token speaks for, after every revocation check."""

    user_id: uuid.UUID
    username: str
    roles: list[str]
    claims: AccessClaims


def _subject(user: User) -> tuple[uuid.UUID, list[str]]:
    """What an access token says of its user: id and roles."""
    return user.id, list(user.roles or [])


class AuthService:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        keys: KeyService,
        passwords: PasswordHasher,
        access: AccessTokens,
        refresh_tokens: RefreshTokens,
        limiter: RateLimiter | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.limiter = limiter or RateLimiter.disabled(settings)
        self.settings = settings
        self.database = database
        self.keys = keys
        self.passwords = passwords
        self.access = access
        self.refresh_tokens = refresh_tokens
        self.metrics = metrics or Metrics()

    # -- login -------------------------------------------------------------------------------

    async def login(
        self,
        db: AsyncSession,
        username: str,
        password: str,
        ctx: RequestContext,
        *,
        client_id: str | None = None,
        audience: str | None = None,
        scope: str | None = None,
    ) -> TokenPair:
        """Rate limits (per address, per name, backoff after failures), then _login."""
        try:
            await self.limiter.check_address("login", ctx.ip, ctx.now)
            async with self.limiter.login_attempt(username, ctx.now):
                return await self._login(
                    db,
                    username,
                    password,
                    ctx,
                    client_id=client_id,
                    audience=audience,
                    scope=scope,
                )
        except RateLimited:
            self.metrics.rate_limited("login")
            raise

    async def _login(
        self,
        db: AsyncSession,
        username: str,
        password: str,
        ctx: RequestContext,
        *,
        client_id: str | None = None,
        audience: str | None = None,
        scope: str | None = None,
    ) -> TokenPair:
        """Check the password and open a session.

        `client_id`, `audience` and `scope` come from the OAuth adapter (already checked there);
        the JSON API passes none and gets the defaults.

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
        session = Session(
            id=uuid.uuid4(),
            user_id=user.id,
            created_at=now,
            last_used_at=now,
            expires_at=now + timedelta(seconds=self.settings.session_max_age),
            client_ip=(ctx.ip or None) and ctx.ip[:64],
            user_agent=(ctx.user_agent or None) and ctx.user_agent[:512],
            client_id=client_id,
            scope=scope,
        )
        await SessionRepository(db).add(session)
        token = self.refresh_tokens.new()
        expires_at = self._refresh_expiry(session, now)
        await RefreshTokenRepository(db).add(
            RefreshToken(
                session_id=session.id,
                parent_id=None,
                digest=self.refresh_tokens.digest(token),
                issued_at=now,
                expires_at=expires_at,
            )
        )
        await audit.record(
            db,
            now,
            audit.Entry(audit.LOGIN_SUCCEEDED, user.id, user.username, session.id, ctx.ip),
        )
        grant = Grant(session.client_id, audience, scope)
        pair = self._sign(
            await self._signing_ring(db, now),
            *_subject(user),
            session.id,
            token,
            expires_at,
            now,
            grant,
        )
        self.metrics.login("success")
        return pair

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

    # -- refresh -----------------------------------------------------------------------------

    async def refresh(
        self,
        db: AsyncSession,
        token: str,
        ctx: RequestContext,
        *,
        client_id: str | None = None,
        audience: str | None = None,
        scope: str | None = None,
    ) -> TokenPair:
        """Rate limit per address, then rotate; counts each outcome (see `_rotate`)."""
        try:
            await self.limiter.check_address("refresh", ctx.ip, ctx.now)
        except RateLimited:
            self.metrics.rate_limited("refresh")
            raise
        try:
            pair, outcome = await self._rotate(
                db,
                token,
                ctx,
                client_id=client_id,
                audience=audience,
                scope=scope,
            )
        except RefreshTokenReused:
            self.metrics.refresh("reuse_revoked")
            raise
        except InvalidRefreshToken:
            self.metrics.refresh("invalid")
            raise
        self.metrics.refresh(outcome)
        return pair

    async def _rotate(
        self,
        db: AsyncSession,
        token: str,
        ctx: RequestContext,
        *,
        client_id: str | None = None,
        audience: str | None = None,
        scope: str | None = None,
    ) -> tuple[TokenPair, str]:
        """Rotate a refresh token (one-time use), with reuse detection and a grace window.

        The rotation itself is store/rotation.py's one statement, on whichever path runs it
        (the fast lanes, or the request's transaction); it declines, writing nothing, any token
        that is not live. Then only the reason is decided here:
        - spent within the grace window while its successor is unused: an honest retry
          (another tab, a lost response), answered with that same successor;
        - spent otherwise: theft is assumed and the whole session is revoked, and that write
          is committed although the request fails;
        - anything else: invalid.

        One order on every path: the signing key is checked first (a 503 spends nothing), then
        the statement runs, then the access token is signed.

        A token only refreshes for the client it was issued to (RFC 6749 section 6; None is the
        first-party JSON API); `scope` may narrow, never widen, and is checked before the token
        is spent.
        """
        now = ctx.now
        if not self.refresh_tokens.well_formed(token):
            raise InvalidRefreshToken()
        ring = await self._signing_ring(db, now)
        digest = self.refresh_tokens.digest(token)
        successor = self.refresh_tokens.successor(token)
        tokens = RefreshTokenRepository(db)
        if scope is not None:
            found = await tokens.for_rotation(digest)
            if found is None or found[1].client_id != client_id:
                raise InvalidRefreshToken()
            granted = found[1].scope or self.settings.default_scope
            if not set(scope.split()) <= set(granted.split()):
                raise InvalidScope()
        values = rotation_values(
            digest,
            self.refresh_tokens.digest(successor),
            now,
            client_id,
            now + timedelta(seconds=self.settings.refresh_token_ttl),
        )
        lane = self.database.refresh_lane_for(db)
        fresh = await (lane.rotate(values) if lane is not None else rotate_in_session(db, values))
        if fresh is not None:
            grant = Grant(fresh.client_id, audience, scope or fresh.scope)
            pair = self._sign(
                ring,
                fresh.user_id,
                fresh.roles,
                fresh.session_id,
                successor,
                fresh.expires_at,
                now,
                grant,
            )
            return pair, "rotated"

        # Declined: find out why. A token spent a moment ago by a racing request is spent here
        # too (its statement waited for that request's commit).
        found = await tokens.for_rotation(digest)
        if found is None:
            raise InvalidRefreshToken()
        row, session, user = found
        if (
            not self.refresh_tokens.same_digest(row.digest, digest)
            or row.used_at is None
            or session.revoked_at is not None
            or session.expires_at <= now
            or row.expires_at <= now
            or not user.is_active
            or session.client_id != client_id
        ):
            raise InvalidRefreshToken()
        grant = Grant(session.client_id, audience, scope or session.scope)
        child = await tokens.child_of(row.id)
        grace = self.settings.refresh_reuse_grace_seconds
        if (
            grace > 0
            and now - row.used_at <= timedelta(seconds=grace)
            and child is not None
            and child.used_at is None
            and child.expires_at > now
        ):
            pair = self._sign(
                ring, *_subject(user), session.id, successor, child.expires_at, now, grant
            )
            return pair, "grace_retry"
        await SessionRepository(db).revoke(
            [session.id],
            now,
            "refresh_token_reused",
            tokens_valid_until=now + self.settings.access_token_horizon,
        )
        # Committed with the revocation (persist_writes): who logged in from where, and who
        # presented the spent token from where.
        await audit.record(
            db,
            now,
            audit.Entry(
                audit.REFRESH_REUSE_DETECTED,
                user.id,
                user.username,
                session.id,
                ctx.ip,
                details={
                    "session_ip": session.client_ip,
                    "reused_from_ip": ctx.ip,
                    "token_first_used_at": row.used_at.isoformat(),
                },
            ),
        )
        raise RefreshTokenReused()

    # -- access tokens -----------------------------------------------------------------------

    async def authenticate(self, db: AsyncSession, token: str, now: datetime) -> Principal:
        """An access token for our own audience: verified, then `principal`."""
        ring = await self.keys.ring_at(db, now)
        return await self.principal(db, self.access.verify(token, ring, now), now)

    async def me(self, db: AsyncSession, token: str, ctx: RequestContext) -> Principal:
        return await self.authenticate(db, token, ctx.now)

    async def principal(self, db: AsyncSession, claims: AccessClaims, now: datetime) -> Principal:
        """The one access check (store/access.py), from verified claims to whom they speak for:
        the session is live and the subject's (logout and the sessions API act on the subject's
        sessions), the subject active, the jti not denied. InvalidToken otherwise.

        On PostgreSQL, unless the request's transaction has begun, on the fast lane: no
        transaction, one round trip."""
        try:
            sid, sub = uuid.UUID(claims.sid), uuid.UUID(claims.sub)
        except ValueError as exc:
            raise InvalidToken() from exc
        values = access_values(sid, sub, claims.jti, now)
        lane = self.database.fast_lane
        if lane is not None and not db.in_transaction():
            found = await lane.access_user(values)
        else:
            found = await access_user_in_session(db, values)
        if found is None:
            raise InvalidToken()
        return Principal(found.id, found.username, found.roles, claims)

    # -- logout ------------------------------------------------------------------------------

    async def logout(
        self,
        db: AsyncSession,
        ctx: RequestContext,
        *,
        access_token: str | None,
        refresh_token: str | None,
        scope: LogoutScope,
    ) -> None:
        """Revoke the caller's session (local), their other sessions (others) or all (global).

        The presented access token's jti is denylisted unless its session stays alive (others);
        every other access token of a revoked session is refused through its sid.
        """
        now = ctx.now
        claims: AccessClaims | None = None
        session_id: uuid.UUID | None = None
        user_id: uuid.UUID | None = None
        session_revoked = False
        if access_token is not None:
            principal = await self.authenticate(db, access_token, now)
            claims = principal.claims
            session_id, user_id = uuid.UUID(claims.sid), principal.user_id
        if refresh_token is not None:
            found = (
                await RefreshTokenRepository(db).by_digest(
                    self.refresh_tokens.digest(refresh_token)
                )
                if self.refresh_tokens.well_formed(refresh_token)
                else None
            )
            if found is None or found[1].expires_at <= now:
                raise InvalidRefreshToken()
            _, session, _ = found
            if session_id is not None and session.id != session_id:
                raise InvalidRequest("The tokens belong to different sessions.")
            session_id, user_id = session.id, session.user_id
            session_revoked = session.revoked_at is not None
        if session_id is None or user_id is None:
            raise InvalidToken("No access or refresh token was given.", missing=True)
        if session_revoked:
            # Logging out twice is not an error, but a revoked session's token carries no
            # authority over the user's other sessions.
            if scope == "local":
                return
            raise InvalidRefreshToken()

        sessions = SessionRepository(db)
        if scope == "local":
            targets = [session_id]
        else:
            live = await sessions.live_ids_for_user(user_id, now)
            targets = [s for s in live if scope == "global" or s != session_id]
        revoked = await sessions.revoke(
            targets,
            now,
            f"logout_{scope}",
            tokens_valid_until=now + self.settings.access_token_horizon,
        )
        await audit.record(
            db,
            now,
            audit.Entry(
                audit.LOGOUT,
                user_id,
                session_id=session_id,
                ip=ctx.ip,
                details={"scope": scope, "sessions_revoked": revoked},
            ),
        )
        if claims is not None and scope != "others":
            await DenylistRepository(db).add(
                claims.jti,
                session_id,
                datetime.fromtimestamp(claims.expires_at, tz=now.tzinfo),
                now,
            )

    # -- helpers -----------------------------------------------------------------------------

    def _refresh_expiry(self, session: Session, now: datetime) -> datetime:
        # Rotation never extends a session past its absolute lifetime.
        return min(now + timedelta(seconds=self.settings.refresh_token_ttl), session.expires_at)

    async def _signing_ring(self, db: AsyncSession, now: datetime) -> KeyRing:
        """The key ring, if it has a key to sign with now; else 503 before anything is written."""
        ring = await self.keys.ring_at(db, now)
        if ring.signing_key(now) is None:
            raise ServiceUnavailable("No signing key is active.")
        return ring

    def _sign(
        self,
        ring: KeyRing,
        user_id: uuid.UUID,
        roles: list[str],
        session_id: uuid.UUID,
        refresh_token: str,
        refresh_expires_at: datetime,
        now: datetime,
        grant: Grant,
    ) -> TokenPair:
        scope = grant.scope or self.settings.default_scope
        access_token, _ = self.access.issue(
            ring,
            now,
            subject=str(user_id),
            session_id=str(session_id),
            roles=roles,
            scope=scope,
            client_id=grant.client_id or "authsvc",
            audience=grant.audience,
        )
        return TokenPair(
            access_token=access_token,
            expires_in=self.access.ttl,
            refresh_token=refresh_token,
            refresh_expires_in=max(0, int((refresh_expires_at - now).total_seconds())),
            session_id=session_id,
            scope=scope,
        )
