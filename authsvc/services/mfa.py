"""The TOTP second factor (RFC 6238): enrolment, confirmation with recovery codes, the check
that finishes a password sign-in, disabling it with a fresh code, and an admin's reset.

A sign-in with a second factor is two requests: the password check issues an mfa_token (a
challenge: single-use, short-lived and allowing a few attempts, AUTHSVC_MFA_TOKEN_TTL and
AUTHSVC_MFA_ATTEMPTS_PER_TOKEN; kept as a digest), and the code check spends it. A TOTP code is
accepted once: its time step is recorded per user and no code of that or an earlier step is
accepted again (RFC 6238 section 5.2). AUTHSVC_MFA_FAILURES_BEFORE_LOCK consecutive wrong codes
lock the factor for AUTHSVC_MFA_LOCK_SECONDS, whichever mfa_token they came with.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.errors import (
    InvalidMfaCode,
    InvalidMfaToken,
    InvalidToken,
    MfaAlreadyEnabled,
    MfaNotEnabled,
    RateLimited,
)
from authsvc.security.mfa import OneTimeSecrets, TotpSecrets
from authsvc.services import audit
from authsvc.services.access import AccessService, Presented
from authsvc.services.context import RequestContext
from authsvc.services.issuer import PASSWORD_AMR
from authsvc.store.mfa import MfaChallengeRepository, RecoveryCodeRepository, TotpRepository
from authsvc.store.models import MfaChallenge, TotpCredential, User
from authsvc.store.repositories import UserRepository

# RFC 8176 section 2: what a session's sign-in used. A recovery code is a one-time password
# too ("otp"); the audit trail records which of the two it was.
PASSWORD_ONLY: Final = PASSWORD_AMR
PASSWORD_AND_OTP: Final = (*PASSWORD_AMR, "otp", "mfa")

METHODS: Final = ["totp", "recovery_code"]
PURPOSE_LOGIN: Final = "login"
PURPOSE_AUTHORIZE: Final = "authorize"


@dataclass(frozen=True)
class Enrollment:
    secret: str
    otpauth_uri: str
    qr_svg: str


@dataclass(frozen=True)
class Verified:
    """A finished challenge: whose, and the methods the sign-in used."""

    user: User
    amr: tuple[str, ...]


class MfaService:
    def __init__(
        self,
        settings: Settings,
        totp: TotpSecrets,
        one_time: OneTimeSecrets,
        access: AccessService,
    ) -> None:
        self.settings = settings
        self.totp = totp
        self.one_time = one_time
        self.access = access

    # -- the caller's own factor (an access token) --------------------------------------------

    async def _caller(self, db: AsyncSession, token: Presented, ctx: RequestContext) -> User:
        principal = await self.access.authenticate(db, token, ctx.now)
        user = await UserRepository(db).by_id(principal.user_id)
        if user is None:
            raise InvalidToken()
        return user

    async def enroll(self, db: AsyncSession, token: Presented, ctx: RequestContext) -> Enrollment:
        """A new secret, waiting for confirmation; replaces an unconfirmed one."""
        user = await self._caller(db, token, ctx)
        repo = TotpRepository(db)
        if await repo.enabled_for(user.id):
            raise MfaAlreadyEnabled()
        secret = self.totp.new()
        await repo.replace_pending(user.id, self.totp.seal(secret), ctx.now)
        await self._audit(db, audit.MFA_ENROLLMENT_STARTED, user, ctx)
        uri = self.totp.uri(secret, user.username)
        return Enrollment(secret, uri, self.totp.qr_svg(uri))

    async def confirm(
        self, db: AsyncSession, token: Presented, code: str, ctx: RequestContext
    ) -> list[str]:
        """The first code from the app turns the factor on; the answer is the recovery codes,
        shown this once (only their digests are kept)."""
        user = await self._caller(db, token, ctx)
        repo = TotpRepository(db)
        credential = await repo.get(user.id)
        if credential is None:
            raise MfaNotEnabled("Start with POST /auth/mfa/totp/enroll.")
        if credential.confirmed_at is not None:
            raise MfaAlreadyEnabled()
        step = self.totp.matching_step(self.totp.open(credential.secret_encrypted), code, ctx.now)
        if step is None or not await repo.claim_step(user.id, step, ctx.now):
            raise InvalidMfaCode()
        if not await repo.confirm(user.id, ctx.now):
            raise MfaAlreadyEnabled()  # a concurrent confirmation won
        codes = self.one_time.new_recovery_codes()
        await RecoveryCodeRepository(db).replace(
            user.id, [self.one_time.digest(c) for c in codes], ctx.now
        )
        await self._audit(db, audit.MFA_ENABLED, user, ctx)
        return codes

    async def disable(
        self,
        db: AsyncSession,
        token: Presented,
        code: str | None,
        recovery_code: str | None,
        ctx: RequestContext,
    ) -> None:
        """Turning the factor off takes a fresh code (or a recovery code), not just a token."""
        user = await self._caller(db, token, ctx)
        credential = await TotpRepository(db).get(user.id)
        if credential is None or credential.confirmed_at is None:
            raise MfaNotEnabled()
        method = await self._check_factor(db, user, credential, code, recovery_code, ctx)
        await TotpRepository(db).remove(user.id)
        await self._audit(db, audit.MFA_DISABLED, user, ctx, details={"method": method})

    async def reset(self, db: AsyncSession, user: User, actor: str, ctx: RequestContext) -> None:
        """An admin turns a user's factor off (a lost phone and lost recovery codes)."""
        if not await TotpRepository(db).remove(user.id):
            raise MfaNotEnabled()
        await self._audit(db, audit.MFA_RESET, user, ctx, actor=actor)

    async def enabled(self, db: AsyncSession, user_id: uuid.UUID) -> bool:
        return await TotpRepository(db).enabled_for(user_id)

    # -- sign-in ---------------------------------------------------------------------------------

    async def challenge(
        self, db: AsyncSession, user: User, purpose: str, ctx: RequestContext
    ) -> str:
        """An mfa_token for a user whose password was just checked."""
        token = self.one_time.new_mfa_token()
        await MfaChallengeRepository(db).add(
            MfaChallenge(
                digest=self.one_time.digest(token),
                user_id=user.id,
                purpose=purpose,
                created_at=ctx.now,
                expires_at=ctx.now + timedelta(seconds=self.settings.mfa_token_ttl),
                attempts=0,
            )
        )
        await self._audit(db, audit.MFA_CHALLENGED, user, ctx, details={"purpose": purpose})
        return token

    async def verify(
        self,
        db: AsyncSession,
        mfa_token: str,
        code: str | None,
        recovery_code: str | None,
        purpose: str,
        ctx: RequestContext,
    ) -> Verified:
        """Spend a challenge with a code. The attempt is counted first (and that count commits
        when the code is wrong), so neither one token nor many tokens allow more guesses than
        the limits."""
        challenges = MfaChallengeRepository(db)
        if len(mfa_token) > 128:
            raise InvalidMfaToken()
        challenge = await challenges.attempt(
            self.one_time.digest(mfa_token),
            purpose,
            ctx.now,
            self.settings.mfa_attempts_per_token,
        )
        if challenge is None:
            raise InvalidMfaToken()
        credential = await TotpRepository(db).get(challenge.user_id)
        if credential is None or credential.confirmed_at is None:
            raise InvalidMfaToken()  # reset since the password check
        user = await UserRepository(db).by_id(challenge.user_id)
        if user is None or not user.is_active:
            raise InvalidMfaToken()
        method = await self._check_factor(db, user, credential, code, recovery_code, ctx)
        if not await challenges.spend(challenge.id, ctx.now):
            raise InvalidMfaToken()
        await self._audit(db, audit.MFA_VERIFIED, user, ctx, details={"method": method})
        return Verified(user, PASSWORD_AND_OTP)

    # -- the check itself --------------------------------------------------------------------------

    async def _check_factor(
        self,
        db: AsyncSession,
        user: User,
        credential: TotpCredential,
        code: str | None,
        recovery_code: str | None,
        ctx: RequestContext,
    ) -> str:
        """The method that matched ("totp" or "recovery_code"); else the failure is counted and
        InvalidMfaCode raised (its writes commit). While locked, nothing is checked. A request
        with neither a code nor a recovery code, or with both, is a wrong code."""
        repo = TotpRepository(db)
        if credential.locked_until is not None and credential.locked_until > ctx.now:
            wait = int((credential.locked_until - ctx.now).total_seconds()) + 1
            raise RateLimited(wait, "Too many wrong codes; try again later.")
        if (code is None) == (recovery_code is None):
            method = "none"
        elif code is not None:
            secret = self.totp.open(credential.secret_encrypted)
            step = self.totp.matching_step(secret, code.strip(), ctx.now)
            if step is not None and await repo.claim_step(user.id, step, ctx.now):
                return "totp"
            method = "totp"
        elif recovery_code is not None:
            normalized = self.one_time.normalize_recovery_code(recovery_code)
            if len(normalized) <= 32 and await RecoveryCodeRepository(db).spend(
                user.id, self.one_time.digest(normalized), ctx.now
            ):
                await repo.succeeded(user.id)
                return "recovery_code"
            method = "recovery_code"
        # Consecutive wrong codes (any mfa_token, or disabling) lock the factor for a while.
        await repo.failed(
            user.id,
            self.settings.mfa_failures_before_lock,
            ctx.now + timedelta(seconds=self.settings.mfa_lock_seconds),
        )
        await self._audit(db, audit.MFA_FAILED, user, ctx, details={"method": method})
        raise InvalidMfaCode()

    @staticmethod
    async def _audit(
        db: AsyncSession,
        event: str,
        user: User,
        ctx: RequestContext,
        *,
        actor: str | None = None,
        details: dict[str, str] | None = None,
    ) -> None:
        await audit.record(
            db,
            ctx.now,
            audit.Entry(event, user.id, user.username, ip=ctx.ip, actor=actor, details=details),
        )
