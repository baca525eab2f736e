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
    InvalidToken,
    InvalidUsername,
    RefreshTokenReused,
    ServiceUnavailable,
)
from authsvc.security.passwords import PasswordHasher
from authsvc.security.tokens import AccessClaims, AccessTokens, RefreshTokens
from authsvc.services.keys import KeyService
from authsvc.services.users import normalize_username
from authsvc.store.db import Database
from authsvc.store.models import RefreshToken, Session, User
from authsvc.store.repositories import (
    DenylistRepository,
    RefreshTokenRepository,
    SessionRepository,
    UserRepository,
)

LogoutScope = Literal["local", "others", "global"]


@dataclass(frozen=True)
class ClientInfo:
    ip: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    session_id: uuid.UUID


@dataclass(frozen=True)
class Principal:
    user: User
    claims: AccessClaims


class AuthService:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        keys: KeyService,
        passwords: PasswordHasher,
        access: AccessTokens,
        refresh_tokens: RefreshTokens,
    ) -> None:
        self.settings = settings
        self.database = database
        self.keys = keys
        self.passwords = passwords
        self.access = access
        self.refresh_tokens = refresh_tokens

    # -- login -------------------------------------------------------------------------------

    async def login(
        self, db: AsyncSession, username: str, password: str, now: datetime, client: ClientInfo
    ) -> TokenPair:
        """Check the password and open a session.

        Unknown user, wrong password and disabled user give the same error after the same
        work (a dummy hash is checked for unknown names). The user is read in a short read-only
        transaction so that no write lock or pooled connection is held during hashing.
        """
        try:
            name = normalize_username(username)
        except InvalidUsername:
            name = None
        stored_hash: str | None = None
        user_id: uuid.UUID | None = None
        if name is not None:
            async with self.database.read() as reader:
                found = await UserRepository(reader).by_username(name)
                if found is not None:
                    stored_hash = found.password_hash
                    user_id = found.id
        ok, new_hash = await self.passwords.verify(password, stored_hash)
        if not ok or user_id is None:
            raise InvalidCredentials()
        user = await UserRepository(db).by_id(user_id)
        if user is None or not user.is_active:
            raise InvalidCredentials()
        if new_hash is not None and user.password_hash == stored_hash:
            user.password_hash = new_hash
            user.updated_at = now
        session = Session(
            id=uuid.uuid4(),
            user_id=user.id,
            created_at=now,
            last_used_at=now,
            expires_at=now + timedelta(seconds=self.settings.session_max_age),
            client_ip=(client.ip or None) and client.ip[:64],
            user_agent=(client.user_agent or None) and client.user_agent[:512],
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
        return await self._pair(db, user, session.id, token, expires_at, now)

    # -- refresh -----------------------------------------------------------------------------

    async def refresh(self, db: AsyncSession, token: str, now: datetime) -> TokenPair:
        """Rotate a refresh token (one-time use), with reuse detection and a grace window.

        - first use: mark used (compare-and-set), issue its successor;
        - used again within the grace window while the successor is unused: an honest retry
          (another tab, a lost response), answered with that same successor;
        - any other reuse: theft is assumed and the whole session is revoked, and that write
          is committed although the request fails.
        """
        if not self.refresh_tokens.well_formed(token):
            raise InvalidRefreshToken()
        digest = self.refresh_tokens.digest(token)
        tokens = RefreshTokenRepository(db)
        found = await tokens.by_digest(digest)
        if found is None:
            raise InvalidRefreshToken()
        row, session, user = found
        if not self.refresh_tokens.same_digest(row.digest, digest):
            raise InvalidRefreshToken()
        if (
            session.revoked_at is not None
            or session.expires_at <= now
            or row.expires_at <= now
            or not user.is_active
        ):
            raise InvalidRefreshToken()

        successor = self.refresh_tokens.successor(token)
        sessions = SessionRepository(db)
        expires_at = self._refresh_expiry(session, now)
        successor_row = RefreshToken(
            session_id=session.id,
            parent_id=row.id,
            digest=self.refresh_tokens.digest(successor),
            issued_at=now,
            expires_at=expires_at,
        )
        if await tokens.rotate(row.id, successor_row, now):
            return await self._pair(db, user, session.id, successor, expires_at, now)

        # Lost the compare-and-set: the token was used before (or a moment ago, by a racing
        # request whose commit we waited for). Re-read what that use left behind.
        used_at = await tokens.used_at(row.id)
        child = await tokens.child_of(row.id)
        grace = self.settings.refresh_reuse_grace_seconds
        if (
            grace > 0
            and used_at is not None
            and now - used_at <= timedelta(seconds=grace)
            and child is not None
            and child.used_at is None
            and child.expires_at > now
            and await sessions.is_live(session.id, now)
        ):
            return await self._pair(db, user, session.id, successor, child.expires_at, now)
        await sessions.revoke([session.id], now, "refresh_token_reused")
        raise RefreshTokenReused()

    # -- access tokens -----------------------------------------------------------------------

    async def authenticate(self, db: AsyncSession, token: str, now: datetime) -> AccessClaims:
        """Verify an access token and check it against revocations (by jti and sid)."""
        ring = await self.keys.ring_at(db, now)
        claims = self.access.verify(token, ring, now)
        try:
            sid = uuid.UUID(claims.sid)
        except ValueError as exc:
            raise InvalidToken() from exc
        if not await SessionRepository(db).access_allowed(sid, claims.jti, now):
            raise InvalidToken()
        return claims

    async def me(self, db: AsyncSession, token: str, now: datetime) -> Principal:
        """authenticate() plus the user, with the revocation checks and the user in one query."""
        ring = await self.keys.ring_at(db, now)
        claims = self.access.verify(token, ring, now)
        try:
            sid, sub = uuid.UUID(claims.sid), uuid.UUID(claims.sub)
        except ValueError as exc:
            raise InvalidToken() from exc
        user = await SessionRepository(db).user_if_access_allowed(sid, sub, claims.jti, now)
        if user is None:
            raise InvalidToken()
        return Principal(user=user, claims=claims)

    # -- logout ------------------------------------------------------------------------------

    async def logout(
        self,
        db: AsyncSession,
        now: datetime,
        *,
        access_token: str | None,
        refresh_token: str | None,
        scope: LogoutScope = "local",
    ) -> None:
        """Revoke the caller's session (local), their other sessions (others) or all (global).

        The presented access token's jti is denylisted unless its session stays alive (others);
        every other access token of a revoked session is refused through its sid.
        """
        claims: AccessClaims | None = None
        session_id: uuid.UUID | None = None
        user_id: uuid.UUID | None = None
        session_revoked = False
        if access_token is not None:
            claims = await self.authenticate(db, access_token, now)
            session_id, user_id = uuid.UUID(claims.sid), uuid.UUID(claims.sub)
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
        await sessions.revoke(targets, now, f"logout_{scope}")
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

    async def _pair(
        self,
        db: AsyncSession,
        user: User,
        session_id: uuid.UUID,
        refresh_token: str,
        refresh_expires_at: datetime,
        now: datetime,
    ) -> TokenPair:
        ring = await self.keys.ring_at(db, now)
        if ring.signing_key(now) is None:
            raise ServiceUnavailable("No signing key is active.")
        access_token, _ = self.access.issue(
            ring,
            now,
            subject=str(user.id),
            session_id=str(session_id),
            roles=list(user.roles or []),
            scope=self.settings.default_scope,
            client_id="authsvc",
        )
        return TokenPair(
            access_token=access_token,
            expires_in=self.access.ttl,
            refresh_token=refresh_token,
            refresh_expires_in=max(0, int((refresh_expires_at - now).total_seconds())),
            session_id=session_id,
        )
