"""Passkeys (WebAuthn L3): register one (Bearer), log in with one (discoverable, no username),
list and remove one's own.

Every ceremony starts with a challenge that is stored only as a digest, expires after
`passkey_challenge_ttl`, is bound to its purpose (and, for registration, to the user), and is
consumed by the first response that names it, whether that response verifies or not.

`check_assertion` is the one place an assertion is judged; passwordless login calls it with no
user, and the second step of a password sign-in (services/mfa.py) with the user the password
identified and the mfa challenge the options were issued for.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.errors import (
    InvalidToken,
    NotFound,
    PasskeyInvalid,
    PasskeyRegistrationInvalid,
    RateLimited,
)
from authsvc.observability.metrics import Metrics
from authsvc.security import passkeys as webauthn
from authsvc.services import audit
from authsvc.services.access import AccessService, Presented
from authsvc.services.context import RequestContext
from authsvc.services.issuer import TokenPair, first_party
from authsvc.services.ratelimit import RateLimiter
from authsvc.services.signin import SignInService
from authsvc.store.models import Passkey, PasskeyChallenge, User
from authsvc.store.passkeys import PasskeyChallengeRepository, PasskeyRepository
from authsvc.store.repositories import UserRepository

REGISTER = "register"
LOGIN = "login"
# The second step of a password sign-in mints its challenges under their own purpose, bound to
# the user and to that sign-in's mfa challenge.
SECOND_FACTOR = "second_factor"
PASSKEY_AMR = ("hwk", "user")

NAME_MAX = 64


@dataclass(frozen=True)
class PasskeyView:
    id: uuid.UUID
    name: str
    created_at: datetime
    last_used_at: datetime | None
    transports: list[str]


def _view(passkey: Passkey) -> PasskeyView:
    return PasskeyView(
        id=passkey.id,
        name=passkey.name,
        created_at=passkey.created_at,
        last_used_at=passkey.last_used_at,
        transports=list(passkey.transports or []),
    )


class PasskeyService:
    def __init__(
        self,
        settings: Settings,
        access: AccessService,
        signin: SignInService,
        limiter: RateLimiter,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.access = access
        self.signin = signin
        self.limiter = limiter
        self.metrics = metrics
        self.rp = webauthn.RelyingParty(
            id=settings.passkey_relying_party_id,
            name=settings.passkey_rp_name,
            origins=settings.passkey_origin_list,
            timeout_ms=settings.passkey_challenge_ttl * 1000,
        )

    # Registration (Bearer).

    async def register_options(
        self, db: AsyncSession, token: Presented, ctx: RequestContext
    ) -> dict[str, Any]:
        user = await self._caller(db, token, ctx)
        challenge = await self._new_challenge(db, REGISTER, user.id, ctx)
        existing = await PasskeyRepository(db).for_user(user.id)
        return webauthn.registration_options(
            self.rp,
            challenge,
            user.id.bytes,
            user.username,
            [(p.credential_id, p.transports) for p in existing],
        )

    async def register_verify(
        self,
        db: AsyncSession,
        token: Presented,
        credential: dict[str, Any],
        name: str | None,
        ctx: RequestContext,
    ) -> PasskeyView:
        user = await self._caller(db, token, ctx)
        digest, challenge = await self._take(
            db, credential, REGISTER, ctx, PasskeyRegistrationInvalid
        )
        try:
            if challenge.user_id != user.id:
                raise webauthn.PasskeyRejected("challenge of another user")
            new = webauthn.verify_registration(self.rp, credential, challenge.raw)
        except webauthn.PasskeyRejected as exc:
            raise self._failed(
                PasskeyRegistrationInvalid, digest, user.id, exc.reason, ctx
            ) from None
        passkey = Passkey(
            id=uuid.uuid4(),
            user_id=user.id,
            credential_id=new.credential_id,
            public_key=new.public_key,
            sign_count=new.sign_count,
            transports=new.transports or None,
            name=(name or "").strip()[:NAME_MAX] or "Passkey",
            created_at=ctx.now,
            last_used_at=None,
        )
        if not await PasskeyRepository(db).add(passkey):
            raise self._failed(
                PasskeyRegistrationInvalid, digest, user.id, "credential id taken", ctx
            )
        await audit.record(
            db,
            ctx.now,
            audit.Entry(
                audit.PASSKEY_REGISTERED,
                user.id,
                user.username,
                ip=ctx.ip,
                actor="self",
                details={"passkey_id": str(passkey.id)},
            ),
        )
        return _view(passkey)

    # Passwordless login.

    async def login_options(self, db: AsyncSession, ctx: RequestContext) -> dict[str, Any]:
        await self._limit(ctx)
        challenge = await self._new_challenge(db, LOGIN, None, ctx)
        return webauthn.authentication_options(self.rp, challenge)

    async def login_verify(
        self, db: AsyncSession, credential: dict[str, Any], ctx: RequestContext
    ) -> TokenPair:
        """An assertion of a discoverable credential: the normal token pair, like /auth/login."""
        await self._limit(ctx)
        user, passkey = await self.check_assertion(db, credential, LOGIN, None, None, ctx)
        self.metrics.login("success")
        # RFC 8176: a hardware-secured key, with the user verified (verification is required).
        return await self.signin.sign_in(
            db,
            user,
            ctx,
            first_party(ctx),
            amr=PASSKEY_AMR,
            details={"method": "passkey", "passkey_id": str(passkey.id)},
        )

    async def second_factor_options(
        self,
        db: AsyncSession,
        user: User,
        passkeys: Sequence[Passkey],
        mfa_challenge_id: int,
        ctx: RequestContext,
    ) -> dict[str, Any]:
        """Request options for a user already identified by their password: a challenge bound
        to them and to their mfa challenge, `passkeys` (theirs) allowed. It replaces the earlier
        ones of that mfa challenge, so asking again does not pile up rows. The answer goes to
        `check_assertion(..., SECOND_FACTOR, user, mfa_challenge_id, ...)`."""
        await PasskeyChallengeRepository(db).discard_for_mfa(mfa_challenge_id)
        challenge = await self._new_challenge(db, SECOND_FACTOR, user.id, ctx, mfa_challenge_id)
        return webauthn.authentication_options(
            self.rp, challenge, [(p.credential_id, p.transports) for p in passkeys]
        )

    async def check_assertion(
        self,
        db: AsyncSession,
        credential: dict[str, Any],
        purpose: str,
        user: User | None,
        mfa_challenge_id: int | None,
        ctx: RequestContext,
    ) -> tuple[User, Passkey]:
        """Judge an assertion (WebAuthn L3 section 7.2) against a live challenge of `purpose`:
        the active user it proves and the passkey used, whose counter and last use are updated.

        With `user` given (a second factor after the password), the challenge must have been
        issued to that user for `mfa_challenge_id`, and the credential must be theirs. Any
        failure is one PasskeyInvalid; the reason goes to the audit trail, the challenge is
        spent either way."""
        digest, challenge = await self._take(db, credential, purpose, ctx, PasskeyInvalid)
        owner_id: uuid.UUID | None = user.id if user is not None else None
        try:
            if user is not None and (
                challenge.user_id != user.id or challenge.mfa_challenge_id != mfa_challenge_id
            ):
                raise webauthn.PasskeyRejected("challenge of another sign-in")
            passkey = await PasskeyRepository(db).by_credential_id(
                webauthn.credential_id(credential)
            )
            if passkey is None:
                raise webauthn.PasskeyRejected("unknown credential")
            if user is not None and passkey.user_id != user.id:
                raise webauthn.PasskeyRejected("credential of another user")
            assertion = webauthn.verify_assertion(
                self.rp, credential, challenge.raw, passkey.public_key
            )
            owner_id = passkey.user_id
            if assertion.user_handle is not None and assertion.user_handle != owner_id.bytes:
                raise webauthn.PasskeyRejected("user handle mismatch")
            # Section 6.1.1: a counter that is in use must grow; one that does not may mean a
            # cloned authenticator. Refused, and audited as such.
            new, seen = assertion.sign_count, passkey.sign_count
            if (new or seen) and new <= seen:
                raise self._failed(
                    PasskeyInvalid,
                    digest,
                    owner_id,
                    "counter did not increase",
                    ctx,
                    event=audit.PASSKEY_COUNTER_REGRESSED,
                    details={"passkey_id": str(passkey.id), "stored": seen, "presented": new},
                )
            owner = await UserRepository(db).by_id(owner_id)
            if owner is None or not owner.is_active:
                raise webauthn.PasskeyRejected("disabled")
            if not await PasskeyRepository(db).advance_counter(passkey.id, seen, new, ctx.now):
                raise webauthn.PasskeyRejected("counter changed meanwhile")
        except webauthn.PasskeyRejected as exc:
            raise self._failed(PasskeyInvalid, digest, owner_id, exc.reason, ctx) from None
        return owner, passkey

    # The caller's own passkeys.

    async def list(
        self, db: AsyncSession, token: Presented, ctx: RequestContext
    ) -> Sequence[PasskeyView]:
        claims = (await self.access.authenticate(db, token, ctx.now)).claims
        return [_view(p) for p in await PasskeyRepository(db).for_user(uuid.UUID(claims.sub))]

    async def remove(
        self, db: AsyncSession, token: Presented, passkey_id: str, ctx: RequestContext
    ) -> None:
        """Remove one of the caller's passkeys; anyone else's is 404, as if it did not exist."""
        principal = await self.access.authenticate(db, token, ctx.now)
        user_id = uuid.UUID(principal.claims.sub)
        try:
            target = uuid.UUID(passkey_id)
        except ValueError:
            raise NotFound("No such passkey.") from None
        removed = await PasskeyRepository(db).delete_for_user(target, user_id)
        if removed is None:
            raise NotFound("No such passkey.")
        await audit.record(
            db,
            ctx.now,
            audit.Entry(
                audit.PASSKEY_REMOVED,
                user_id,
                principal.username,
                ip=ctx.ip,
                actor="self",
                details={"passkey_id": str(removed.id)},
            ),
        )

    # Helpers.

    async def _caller(self, db: AsyncSession, token: Presented, ctx: RequestContext) -> User:
        claims = (await self.access.authenticate(db, token, ctx.now)).claims
        user = await UserRepository(db).by_id(uuid.UUID(claims.sub))
        if user is None or not user.is_active:
            raise InvalidToken()
        return user

    async def _limit(self, ctx: RequestContext) -> None:
        # The login budget per address: passkey and password logins share it.
        try:
            await self.limiter.check_address("login", ctx.ip, ctx.now)
        except RateLimited:
            self.metrics.rate_limited("login")
            raise

    async def _new_challenge(
        self,
        db: AsyncSession,
        purpose: str,
        user_id: uuid.UUID | None,
        ctx: RequestContext,
        mfa_challenge_id: int | None = None,
    ) -> bytes:
        challenge = webauthn.new_challenge()
        await PasskeyChallengeRepository(db).add(
            PasskeyChallenge(
                digest=webauthn.challenge_digest(challenge),
                purpose=purpose,
                user_id=user_id,
                expires_at=ctx.now + timedelta(seconds=self.settings.passkey_challenge_ttl),
                mfa_challenge_id=mfa_challenge_id,
            )
        )
        return challenge

    async def _take(
        self,
        db: AsyncSession,
        credential: dict[str, Any],
        purpose: str,
        ctx: RequestContext,
        error: type[PasskeyInvalid],
    ) -> tuple[bytes, _Challenge]:
        """The live challenge the response names, consumed; PasskeyInvalid when there is none
        (unknown, spent, expired, or of another purpose)."""
        try:
            raw = webauthn.response_challenge(credential)
        except webauthn.PasskeyRejected as exc:
            raise self._failed(error, None, None, exc.reason, ctx) from None
        digest = webauthn.challenge_digest(raw)
        row = await PasskeyChallengeRepository(db).take(digest, purpose, ctx.now)
        if row is None:
            raise self._failed(error, digest, None, "unknown or spent challenge", ctx)
        return digest, _Challenge(
            raw=raw, user_id=row.user_id, mfa_challenge_id=row.mfa_challenge_id
        )

    def _failed(
        self,
        error: type[PasskeyInvalid],
        digest: bytes | None,
        user_id: uuid.UUID | None,
        reason: str,
        ctx: RequestContext,
        *,
        event: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> PasskeyInvalid:
        """The client learns nothing; after the request rolls back, the challenge is spent
        anyway and the audit trail learns the reason."""
        exc = error()
        if digest is not None:
            spent = digest

            async def spend(db: AsyncSession) -> None:
                await PasskeyChallengeRepository(db).discard(spent)

            exc.failure_writes.append(spend)
        if error is PasskeyInvalid:
            self.metrics.login("failure")
        if event is None:
            registering = error is PasskeyRegistrationInvalid
            event = audit.PASSKEY_REGISTRATION_FAILED if registering else audit.LOGIN_FAILED
        exc.failure_writes.append(
            audit.writer(
                ctx.now,
                audit.Entry(
                    event,
                    user_id=user_id,
                    ip=ctx.ip,
                    details={"method": "passkey", "reason": reason, **(details or {})},
                ),
            )
        )
        return exc


@dataclass(frozen=True)
class _Challenge:
    raw: bytes
    user_id: uuid.UUID | None
    mfa_challenge_id: int | None
