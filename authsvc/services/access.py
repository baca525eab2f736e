"""The access check: from an access token to whom it speaks for, after every revocation check."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.errors import InvalidToken
from authsvc.security.access_tokens import AccessClaims
from authsvc.services.context import RequestContext
from authsvc.services.issuer import TokenIssuer
from authsvc.store.access import access_user_in_session, access_values, client_token_allowed
from authsvc.store.db import Database


@dataclass(frozen=True)
class Principal:
    """Who an access token speaks for, after every revocation check."""

    user_id: uuid.UUID
    username: str
    roles: list[str]
    claims: AccessClaims


class AccessService:
    def __init__(self, database: Database, issuer: TokenIssuer) -> None:
        self.database = database
        self.issuer = issuer

    async def authenticate(self, db: AsyncSession, token: str, now: datetime) -> Principal:
        """An access token for our own audience: verified, then `principal`."""
        return await self.principal(db, await self.issuer.verify(db, token, now), now)

    async def me(self, db: AsyncSession, token: str, ctx: RequestContext) -> Principal:
        return await self.authenticate(db, token, ctx.now)

    async def principal(self, db: AsyncSession, claims: AccessClaims, now: datetime) -> Principal:
        """The one access check (store/access.py), from verified claims to whom they speak for:
        the session is live and the subject's (logout and the sessions API act on the subject's
        sessions), the subject active, the jti not denied. InvalidToken otherwise.

        On PostgreSQL, unless the request's transaction has begun, on the fast lane: no
        transaction, one round trip."""
        if is_client_token(claims):
            # A client's own token (client credentials) speaks for no user: refused here like
            # any other token that names no live session of an active user.
            raise InvalidToken()
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

    async def client(self, db: AsyncSession, claims: AccessClaims) -> str:
        """The client a client's own token (client credentials) speaks for, while that client
        is registered and the jti is not denied; InvalidToken otherwise."""
        if not is_client_token(claims) or not await client_token_allowed(
            db, claims.client_id, claims.jti
        ):
            raise InvalidToken()
        return claims.client_id


def is_client_token(claims: AccessClaims) -> bool:
    """RFC 9068 section 2.2: a token a client obtained for itself has the client as `sub`.
    User ids are UUIDs and client ids are not, so no user token looks like this."""
    return claims.sub == claims.client_id
