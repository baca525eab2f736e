"""The TOTP second factor (RFC 6238): enrolment, confirmation with recovery codes, the check
that finishes a password sign-in, disabling it with a fresh code, and an admin's reset.

A sign-in with a second factor is two requests: the password check issues an mfa_token (a
challenge: single-use, short-lived and allowing a few attempts, AUTHSVC_MFA_TOKEN_TTL and
AUTHSVC_MFA_ATTEMPTS_PER_TOKEN; kept as a digest), and the second-factor check spends it. A TOTP
code is accepted once: its time step is recorded per user and no code of that or an earlier step
is accepted again (RFC 6238 section 5.2). AUTHSVC_MFA_FAILURES_BEFORE_LOCK consecutive wrong
codes lock the codes (TOTP and recovery) for AUTHSVC_MFA_LOCK_SECONDS, whichever mfa_token they
came with. The lock is there because a code can be guessed; a passkey's signature over a fresh
challenge cannot, so a wrong assertion only uses up its mfa_token's attempts, and a locked user
can still finish with a passkey: someone who has only the password cannot lock the owner out of
every way in.

TOTP is what turns the second step on. A user who has it on may answer it with a code, a
recovery code, or one of their passkeys (services/passkeys.py judges the assertion, against a
challenge issued for that mfa_token). Passkeys alone do not ask for a second step: signing in
with a passkey is already passwordless and user-verified.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.errors import (
    InvalidMfaCode,
    InvalidMfaToken,
    InvalidRequest,
    InvalidToken,
    MfaAlreadyEnabled,
    MfaNotEnabled,
    PasskeyInvalid,
    RateLimited,
)
from authsvc.security.mfa import OneTimeSecrets, TotpSecrets
from authsvc.services import audit
from authsvc.services.access import AccessService, Presented
from authsvc.services.context import RequestContext
from authsvc.services.issuer import PASSWORD_AMR
from authsvc.services.passkeys import SECOND_FACTOR, PasskeyService
from authsvc.services.secrets import kek_to_write
from authsvc.store.mfa import MfaChallengeRepository, RecoveryCodeRepository, TotpRepository
from authsvc.store.models import MfaChallenge, TotpCredential, User
from authsvc.store.passkeys import PasskeyRepository
from authsvc.store.repositories import UserRepository

# RFC 8176 section 2: what a session's sign-in used. A recovery code is a one-time password
# too ("otp"); the audit trail records which of the two it was.
PASSWORD_ONLY: Final = PASSWORD_AMR
PASSWORD_AND_OTP: Final = (*PASSWORD_AMR, "otp", "mfa")
# A passkey as the second factor: a hardware-secured key ("hwk").
PASSWORD_AND_PASSKEY: Final = (*PASSWORD_AMR, "hwk", "mfa")

METHODS: Final = ("totp", "recovery_code")
PASSKEY: Final = "passkey"
PURPOSE_LOGIN: Final = "login"
PURPOSE_AUTHORIZE: Final = "authorize"


@dataclass(frozen=True)
class Enrollment:
    secret: str
    otpauth_uri: str
    qr_svg: str


@dataclass(frozen=True)
class Factor:
    """What answers the second step: exactly one of a TOTP code, a recovery code, or a passkey
    assertion (the PublicKeyCredential as JSON)."""

    code: str | None = None
    recovery_code: str | None = None
    credential: dict[str, Any] | None = None

    @property
    def given(self) -> int:
        return sum(x is not None for x in (self.code, self.recovery_code, self.credential))


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
        passkeys: PasskeyService,
    ) -> None:
        self.settings = settings
        self.totp = totp
        self.one_time = one_time
        self.access = access
        self.passkeys = passkeys

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
        sealed = self.totp.seal(secret, await kek_to_write(db, self.totp.keks))
        await repo.replace_pending(user.id, sealed, ctx.now)
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

    async def methods(self, db: AsyncSession, user: User) -> list[str]:
        """What may answer the second step of this user's sign-in (the mfa_required body)."""
        has_passkey = await PasskeyRepository(db).any_for_user(user.id)
        return [*METHODS, PASSKEY] if has_passkey else list(METHODS)

    async def offers_passkey(
        self, db: AsyncSession, mfa_token: str, purpose: str, ctx: RequestContext
    ) -> bool:
        """Whether a live mfa_token's user has a passkey to answer with (what a page offers)."""
        if len(mfa_token) > 128:
            return False
        challenge = await MfaChallengeRepository(db).live(
            self.one_time.digest(mfa_token), purpose, ctx.now, self.settings.mfa_attempts_per_token
        )
        return challenge is not None and await PasskeyRepository(db).any_for_user(challenge.user_id)

    async def passkey_options(
        self, db: AsyncSession, mfa_token: str, purpose: str, ctx: RequestContext
    ) -> dict[str, Any]:
        """WebAuthn request options for the user of a live mfa_token, their passkeys allowed,
        the challenge bound to this mfa_token. Not an attempt: nothing is counted or spent."""
        if not self.one_time.well_formed(mfa_token):
            raise InvalidMfaToken()
        challenge = await MfaChallengeRepository(db).live(
            self.one_time.digest(mfa_token), purpose, ctx.now, self.settings.mfa_attempts_per_token
        )
        if challenge is None:
            raise InvalidMfaToken()
        user, _ = await self._challenged(db, challenge)
        passkeys = await PasskeyRepository(db).for_user(user.id)
        if not passkeys:
            raise MfaNotEnabled("No passkey is registered for this account.")
        return await self.passkeys.second_factor_options(db, user, passkeys, challenge.id, ctx)

    async def verify(
        self,
        db: AsyncSession,
        mfa_token: str,
        factor: Factor,
        purpose: str,
        ctx: RequestContext,
    ) -> Verified:
        """Spend a challenge with a second factor. The attempt is counted first (and that
        count commits when the answer is wrong), so neither one token nor many tokens allow
        more guesses than the limits. A wrong passkey is a wrong code: the same answer, the
        same counts."""
        if factor.given != 1:
            raise InvalidRequest("Send exactly one of code, recovery_code and credential.")
        if not self.one_time.well_formed(mfa_token):
            raise InvalidMfaToken()
        challenges = MfaChallengeRepository(db)
        challenge = await challenges.attempt(
            self.one_time.digest(mfa_token),
            purpose,
            ctx.now,
            self.settings.mfa_attempts_per_token,
        )
        if challenge is None:
            raise InvalidMfaToken()
        user, credential = await self._challenged(db, challenge)
        if factor.credential is not None:
            method = await self._check_passkey(db, user, challenge.id, factor.credential, ctx)
        else:
            method = await self._check_factor(
                db, user, credential, factor.code, factor.recovery_code, ctx
            )
        if not await challenges.spend(challenge.id, ctx.now):
            raise InvalidMfaToken()
        await self._audit(db, audit.MFA_VERIFIED, user, ctx, details={"method": method})
        return Verified(user, PASSWORD_AND_PASSKEY if method == PASSKEY else PASSWORD_AND_OTP)

    @staticmethod
    async def _challenged(db: AsyncSession, challenge: MfaChallenge) -> tuple[User, TotpCredential]:
        """The active user of a live challenge, and their TOTP credential, still on."""
        credential = await TotpRepository(db).get(challenge.user_id)
        if credential is None or credential.confirmed_at is None:
            raise InvalidMfaToken()  # reset since the password check
        user = await UserRepository(db).by_id(challenge.user_id)
        if user is None or not user.is_active:
            raise InvalidMfaToken()
        return user, credential

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
        self._check_lock(credential, ctx)
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
            if self.one_time.recovery_code_well_formed(normalized) and (
                await RecoveryCodeRepository(db).spend(
                    user.id, self.one_time.digest(normalized), ctx.now
                )
            ):
                await repo.succeeded(user.id)
                return "recovery_code"
            method = "recovery_code"
        raise await self._wrong(db, user, method, ctx)

    async def _check_passkey(
        self,
        db: AsyncSession,
        user: User,
        mfa_challenge_id: int,
        assertion: dict[str, Any],
        ctx: RequestContext,
    ) -> str:
        """ "passkey" when the assertion is one of the user's passkeys answering a challenge
        issued for this mfa challenge; else InvalidMfaCode, audited like a wrong code. Neither
        the lock nor a failure's count toward it apply (see the module docstring)."""
        try:
            await self.passkeys.check_assertion(
                db, assertion, SECOND_FACTOR, user, mfa_challenge_id, ctx
            )
        except PasskeyInvalid as exc:
            # What the passkey check records (the challenge spent, the reason in the audit
            # trail) is written now: InvalidMfaCode commits the request instead of rolling back.
            for write in exc.failure_writes:
                await write(db)
            raise await self._wrong(db, user, PASSKEY, ctx, counts_toward_lock=False) from None
        await TotpRepository(db).succeeded(user.id)
        return PASSKEY

    @staticmethod
    def _check_lock(credential: TotpCredential, ctx: RequestContext) -> None:
        """While the codes are locked, no code is checked."""
        if credential.locked_until is not None and credential.locked_until > ctx.now:
            wait = int((credential.locked_until - ctx.now).total_seconds()) + 1
            raise RateLimited(wait, "Too many wrong codes; try again later.")

    async def _wrong(
        self,
        db: AsyncSession,
        user: User,
        method: str,
        ctx: RequestContext,
        *,
        counts_toward_lock: bool = True,
    ) -> InvalidMfaCode:
        """A wrong answer, audited (and one more consecutive failure for the lock when it
        counts); the error to raise."""
        if counts_toward_lock:
            # Consecutive wrong codes (any mfa_token, or disabling) lock the codes a while.
            await TotpRepository(db).failed(
                user.id,
                self.settings.mfa_failures_before_lock,
                ctx.now + timedelta(seconds=self.settings.mfa_lock_seconds),
            )
        await self._audit(db, audit.MFA_FAILED, user, ctx, details={"method": method})
        return InvalidMfaCode()

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
