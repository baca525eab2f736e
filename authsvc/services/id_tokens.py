"""ID tokens for the token responses of sessions granted the `openid` scope (OpenID Connect
Core section 3.1.3.3): on the code exchange, and on a refresh of such a session (section 12.2,
without a nonce and with the original auth_time)."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.security.id_tokens import IdTokenClaims, IdTokens
from authsvc.services.issuer import TokenIssuer, TokenPair, session_amr
from authsvc.store.repositories import SessionRepository

OPENID = "openid"


def wants_id_token(scope: str) -> bool:
    return OPENID in scope.split()


class IdTokenService:
    def __init__(self, issuer: TokenIssuer, tokens: IdTokens) -> None:
        self.issuer = issuer
        self.tokens = tokens

    async def attach(
        self, db: AsyncSession, pair: TokenPair, claims: IdTokenClaims, now: datetime
    ) -> TokenPair:
        """The pair with an ID token, when its scope has `openid`."""
        if not wants_id_token(pair.scope):
            return pair
        ring = await self.issuer.signing_ring(db, now)
        id_token = self.tokens.issue(ring, now, claims, pair.access_token)
        return dataclasses.replace(pair, id_token=id_token)

    async def on_refresh(
        self, db: AsyncSession, pair: TokenPair, client_id: str, now: datetime
    ) -> TokenPair:
        """A refreshed pair of an openid session gets a new ID token for the same user, session
        and auth_time. Sessions that never authenticated for OpenID (no auth_time) get none."""
        if not wants_id_token(pair.scope):
            return pair
        session = await SessionRepository(db).get(pair.session_id)
        if session is None or session.auth_time is None:
            return pair
        claims = IdTokenClaims(
            subject=str(session.user_id),
            client_id=client_id,
            session_id=str(session.id),
            auth_time=session.auth_time,
            nonce=None,
            amr=session_amr(session.amr),
        )
        return await self.attach(db, pair, claims, now)
