"""The token issuer every grant shares: signs access tokens, mints and digests refresh tokens,
and verifies what it signed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.errors import ServiceUnavailable
from authsvc.security.access_tokens import AccessClaims, AccessTokens
from authsvc.security.keys import KeyRing
from authsvc.security.refresh_tokens import RefreshTokens
from authsvc.services.keys import KeyService


@dataclass(frozen=True, slots=True)
class Grant:
    """What an OAuth client's tokens carry besides the defaults (FIRST_PARTY, all None, for the
    JSON API): the client, the audience of its resource servers, the scope granted (on a
    refresh: the scope asked for, which may only narrow the session's)."""

    client_id: str | None
    audience: str | None
    scope: str | None


FIRST_PARTY = Grant(client_id=None, audience=None, scope=None)


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    session_id: uuid.UUID
    scope: str = ""
    id_token: str | None = None  # OpenID Connect, when the scope has `openid`


class TokenIssuer:
    def __init__(
        self,
        settings: Settings,
        keys: KeyService,
        access: AccessTokens,
        refresh: RefreshTokens,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.access = access
        self.refresh = refresh

    async def signing_ring(self, db: AsyncSession, now: datetime) -> KeyRing:
        """The key ring, if it has a key to sign with now; else 503 before anything is spent."""
        ring = await self.keys.ring_at(db, now)
        if ring.signing_key(now) is None:
            raise ServiceUnavailable("No signing key is active.")
        return ring

    def refresh_expiry(self, session_expires_at: datetime, now: datetime) -> datetime:
        # Rotation never extends a session past its absolute lifetime.
        return min(now + timedelta(seconds=self.settings.refresh_token_ttl), session_expires_at)

    def sign(
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
        """The access token for a session, paired with the refresh token that goes with it."""
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

    async def verify(
        self, db: AsyncSession, token: str, now: datetime, *, audience: str | None = None
    ) -> AccessClaims:
        """Signature and claims (for `audience`, ours by default); revocation is access.py's."""
        ring = await self.keys.ring_at(db, now)
        if audience is None:
            return self.access.verify(token, ring, now)
        return self.access.verify(token, ring, now, audience=audience)

    def peek_audience(self, token: str) -> str | None:
        return self.access.peek_audience(token)
