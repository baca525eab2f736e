"""The access check: from an access token to whom it speaks for, after every revocation check."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.errors import InvalidDPoPToken, InvalidToken
from authsvc.jose.bearer import BEARER, DPOP
from authsvc.security.access_tokens import AccessClaims
from authsvc.services.context import DPoPRequest, RequestContext
from authsvc.services.dpop import DPoPService
from authsvc.services.issuer import TokenIssuer
from authsvc.store.access import access_user_in_session, access_values, client_token_allowed
from authsvc.store.db import Database


@dataclass(frozen=True, slots=True)
class AccessCredential:
    """An access token as a request presented it: its scheme (`Bearer` or `DPoP`) and, with
    DPoP, the proof that came with it (RFC 9449 section 7.1)."""

    token: str
    scheme: str = BEARER
    proof: DPoPRequest | None = None


# A plain string is a bearer token (the CLI, and callers that never see DPoP).
Presented = AccessCredential | str


@dataclass(frozen=True)
class Principal:
    """Who an access token speaks for, after every revocation check."""

    user_id: uuid.UUID
    username: str
    roles: list[str]
    claims: AccessClaims


class AccessService:
    def __init__(self, database: Database, issuer: TokenIssuer, dpop: DPoPService) -> None:
        self.database = database
        self.issuer = issuer
        self.dpop = dpop

    async def authenticate(
        self, db: AsyncSession, presented: Presented, now: datetime
    ) -> Principal:
        """An access token for our own audience: `verified`, then `principal`."""
        claims = await self.verified(db, presented, now)
        try:
            return await self.principal(db, claims, now)
        except InvalidToken:
            if _dpop_scheme(presented):
                raise InvalidDPoPToken() from None
            raise

    async def verified(self, db: AsyncSession, presented: Presented, now: datetime) -> AccessClaims:
        """An access token for our own audience, signature and claims checked and its key
        binding checked (`sender_check`); revocation is `principal`'s or `client`'s."""
        credential = (
            presented if isinstance(presented, AccessCredential) else AccessCredential(presented)
        )
        try:
            claims = await self.issuer.verify(db, credential.token, now)
            await self.sender_check(credential, claims, now)
            return claims
        except InvalidDPoPToken:
            raise
        except InvalidToken:
            if _dpop_scheme(presented):
                raise InvalidDPoPToken() from None
            raise

    async def me(self, db: AsyncSession, token: Presented, ctx: RequestContext) -> Principal:
        return await self.authenticate(db, token, ctx.now)

    async def sender_check(
        self, credential: AccessCredential, claims: AccessClaims, now: datetime
    ) -> None:
        """RFC 9449 section 7: the token's `cnf.jkt` must be the key of a valid proof sent with
        it, under the DPoP scheme; a token without `cnf` goes with the Bearer scheme and no
        proof check. So a bound token sent as Bearer is refused (section 7.2), and so is an
        unbound token sent under the DPoP scheme (section 4.3 step 12: there is no bound key
        for the proof's to match)."""
        if credential.scheme == DPOP:
            if credential.proof is None:
                raise InvalidDPoPToken()
            jkt = await self.dpop.resource_key(credential.proof, credential.token, now)
            if claims.jkt != jkt:
                raise InvalidDPoPToken()
        elif claims.jkt is not None:
            raise InvalidDPoPToken()

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


def _dpop_scheme(presented: Presented) -> bool:
    """RFC 9449 section 7.1: a request under the DPoP scheme gets DPoP's challenge."""
    return isinstance(presented, AccessCredential) and presented.scheme == DPOP
