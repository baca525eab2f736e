"""The token issuer every grant shares: signs access tokens, mints and digests refresh tokens,
and verifies what it signed."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.errors import ServiceUnavailable
from authsvc.security.access_tokens import AccessClaims, AccessTokens
from authsvc.security.keys import KeyRing
from authsvc.security.refresh_tokens import RefreshTokens
from authsvc.services.context import RequestContext
from authsvc.services.keys import KeyService


@dataclass(frozen=True, slots=True)
class Grant:
    """What an OAuth client's tokens carry besides the defaults (FIRST_PARTY, all None, for the
    JSON API): the client, the audience of its resource servers, the scope granted (on a
    refresh: the scope asked for, which may only narrow the session's)."""

    client_id: str | None
    audience: str | None
    scope: str | None
    # RFC 9449: the thumbprint of the key of the request's DPoP proof (RequestContext.dpop_jkt):
    # the access token is bound to it (`cnf.jkt`), and so is a new session when bind_session
    # (public clients and the first-party API; a confidential client's refresh token is
    # already bound to its credentials, section 5).
    jkt: str | None = None
    bind_session: bool = True

    @property
    def session_jkt(self) -> str | None:
        """The key a new session's refresh tokens are bound to, if any."""
        return self.jkt if self.bind_session else None


FIRST_PARTY = Grant(client_id=None, audience=None, scope=None)
# RFC 8176 section 2: a password sign-in; what a session that recorded no methods had.
PASSWORD_AMR = ("pwd",)


def session_amr(stored: str | None) -> tuple[str, ...]:
    """A session's (or authorization code's) stored `amr`: space-separated method names."""
    return tuple(stored.split()) if stored else PASSWORD_AMR


# The session_id of a TokenPair that belongs to no session (a client's own token).
NO_SESSION = uuid.UUID(int=0)


def first_party(ctx: RequestContext) -> Grant:
    """The JSON API's grant for a request: the defaults, bound to its DPoP key if it sent a
    proof (the first-party app is a public client: its session is bound too)."""
    return FIRST_PARTY if ctx.dpop_jkt is None else replace(FIRST_PARTY, jkt=ctx.dpop_jkt)


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    session_id: uuid.UUID
    scope: str = ""
    # The thumbprint the access token is bound to (RFC 9449 section 6.1), None for a bearer one.
    jkt: str | None = None
    id_token: str | None = None  # OpenID Connect, when the scope has `openid`

    @property
    def token_type(self) -> str:
        """RFC 9449 section 5: `DPoP` for a bound access token, else `Bearer`."""
        return "Bearer" if self.jkt is None else "DPoP"

    @property
    def has_refresh_token(self) -> bool:
        """False for a grant that issues no refresh token (client credentials, RFC 6749
        section 4.4.3): refresh_token is then empty and session_id is NO_SESSION."""
        return bool(self.refresh_token)


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
        amr: Sequence[str],
    ) -> TokenPair:
        """The access token for a session, paired with the refresh token that goes with it;
        `amr`: how the session's user signed in (RFC 8176)."""
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
            jkt=grant.jkt,
            amr=amr,
        )
        return TokenPair(
            access_token=access_token,
            expires_in=self.access.ttl,
            refresh_token=refresh_token,
            refresh_expires_in=max(0, int((refresh_expires_at - now).total_seconds())),
            session_id=session_id,
            scope=scope,
            jkt=grant.jkt,
        )

    def sign_for_client(
        self,
        ring: KeyRing,
        client_id: str,
        audience: str,
        scope: str,
        now: datetime,
        jkt: str | None = None,
    ) -> TokenPair:
        """A client's own access token (client credentials): `sub` and `client_id` are the
        client (RFC 9068 section 2.2), no roles, no refresh token. `sid` is the client id too:
        the one handle that revokes all of a client's own tokens at once (ClientService.delete
        puts it on the revocation feed), since there is no session row to revoke."""
        access_token, _ = self.access.issue(
            ring,
            now,
            subject=client_id,
            session_id=client_id,
            roles=[],
            scope=scope,
            client_id=client_id,
            audience=audience,
            jkt=jkt,
        )
        return TokenPair(
            access_token=access_token,
            expires_in=self.access.ttl,
            refresh_token="",
            refresh_expires_in=0,
            session_id=NO_SESSION,
            scope=scope,
            jkt=jkt,
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
