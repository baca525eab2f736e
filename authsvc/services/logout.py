"""Logout: revoke the caller's session, their other sessions, or all of them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.errors import InvalidRefreshToken, InvalidRequest, InvalidToken
from authsvc.security.access_tokens import AccessClaims
from authsvc.services import audit
from authsvc.services.access import AccessService, Presented
from authsvc.services.context import RequestContext
from authsvc.services.issuer import TokenIssuer
from authsvc.store.repositories import (
    DenylistRepository,
    RefreshTokenRepository,
    SessionRepository,
)

LogoutScope = Literal["local", "others", "global"]


class LogoutService:
    def __init__(self, settings: Settings, access: AccessService, issuer: TokenIssuer) -> None:
        self.settings = settings
        self.access = access
        self.issuer = issuer

    async def logout(
        self,
        db: AsyncSession,
        ctx: RequestContext,
        *,
        access_token: Presented | None,
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
            principal = await self.access.authenticate(db, access_token, now)
            claims = principal.claims
            session_id, user_id = uuid.UUID(claims.sid), principal.user_id
        if refresh_token is not None:
            found = (
                await RefreshTokenRepository(db).by_digest(
                    self.issuer.refresh.digest(refresh_token)
                )
                if self.issuer.refresh.well_formed(refresh_token)
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
        await self.revoke(db, ctx, user_id, session_id, targets, f"logout_{scope}", scope)
        if claims is not None and scope != "others":
            await DenylistRepository(db).add(
                claims.jti,
                session_id,
                datetime.fromtimestamp(claims.expires_at, tz=now.tzinfo),
                now,
            )

    async def revoke(
        self,
        db: AsyncSession,
        ctx: RequestContext,
        user_id: uuid.UUID,
        session_id: uuid.UUID,
        targets: list[uuid.UUID],
        reason: str,
        scope: LogoutScope,
        details: dict[str, str] | None = None,
    ) -> int:
        """Revoke a user's sessions `targets` on their behalf (through SessionRepository.revoke,
        so the revocation feed hears of it) and audit it as a logout from `session_id`."""
        now = ctx.now
        revoked = await SessionRepository(db).revoke(
            targets, now, reason, tokens_valid_until=now + self.settings.access_token_horizon
        )
        await audit.record(
            db,
            now,
            audit.Entry(
                audit.LOGOUT,
                user_id,
                session_id=session_id,
                ip=ctx.ip,
                details={"scope": scope, "sessions_revoked": revoked, **(details or {})},
            ),
        )
        return revoked
