"""Refresh: rotate a refresh token (store/rotation.py), or decide why it was declined."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.errors import InvalidRefreshToken, InvalidScope, RateLimited, RefreshTokenReused
from authsvc.observability.metrics import Metrics
from authsvc.services import audit
from authsvc.services.context import RequestContext
from authsvc.services.issuer import Grant, TokenIssuer, TokenPair, session_amr
from authsvc.services.ratelimit import RateLimiter
from authsvc.store.db import Database
from authsvc.store.repositories import RefreshTokenRepository, SessionRepository
from authsvc.store.rotation import rotate_in_session, rotation_values


class RefreshService:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        issuer: TokenIssuer,
        limiter: RateLimiter,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.database = database
        self.issuer = issuer
        self.limiter = limiter
        self.metrics = metrics

    async def refresh(
        self,
        db: AsyncSession,
        token: str,
        ctx: RequestContext,
        grant: Grant,
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
                grant,
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
        grant: Grant,
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

        A token only refreshes for the client it was issued to (RFC 6749 section 6; the grant's
        client, None for the first-party JSON API); the grant's scope may narrow, never widen,
        and is checked before the token is spent. A session bound to a DPoP key rotates only
        with a proof by that key (the rule itself, store/rules.py); the new access token is bound
        to the proof's key, if any (RFC 9449 section 5).
        """
        now = ctx.now
        client_id, scope, jkt = grant.client_id, grant.scope, grant.jkt
        if not self.issuer.refresh.well_formed(token):
            raise InvalidRefreshToken()
        ring = await self.issuer.signing_ring(db, now)
        digest = self.issuer.refresh.digest(token)
        successor = self.issuer.refresh.successor(token)
        tokens = RefreshTokenRepository(db)
        if scope is not None:
            found = await tokens.in_force(digest, now, client_id, jkt)
            if found is None:
                raise InvalidRefreshToken()
            allowed = found[1].scope or self.settings.default_scope
            if not set(scope.split()) <= set(allowed.split()):
                raise InvalidScope()
        values = rotation_values(
            digest,
            self.issuer.refresh.digest(successor),
            now,
            client_id,
            now + timedelta(seconds=self.settings.refresh_token_ttl),
            jkt,
        )
        lane = self.database.refresh_lane_for(db)
        fresh = await (lane.rotate(values) if lane is not None else rotate_in_session(db, values))
        if fresh is not None:
            granted = Grant(fresh.client_id, grant.audience, scope or fresh.scope, jkt)
            pair = self.issuer.sign(
                ring,
                fresh.user_id,
                fresh.roles,
                fresh.session_id,
                successor,
                fresh.expires_at,
                now,
                granted,
                session_amr(fresh.amr),
            )
            return pair, "rotated"

        # Declined: find out why. A token spent a moment ago by a racing request is spent here
        # too (its statement waited for that request's commit). Only a token in force but
        # spent is a retry or a reuse; anything else is invalid.
        found = await tokens.in_force(digest, now, client_id, jkt)
        if found is None:
            raise InvalidRefreshToken()
        row, session, user = found
        if row.used_at is None or not self.issuer.refresh.same_digest(row.digest, digest):
            raise InvalidRefreshToken()
        granted = Grant(session.client_id, grant.audience, scope or session.scope, jkt)
        child = await tokens.child_of(row.id)
        grace = self.settings.refresh_reuse_grace_seconds
        if (
            grace > 0
            and now - row.used_at <= timedelta(seconds=grace)
            and child is not None
            and child.used_at is None
            and child.expires_at > now
        ):
            pair = self.issuer.sign(
                ring,
                user.id,
                list(user.roles or []),
                session.id,
                successor,
                child.expires_at,
                now,
                granted,
                session_amr(session.amr),
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
