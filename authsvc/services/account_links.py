"""Mailed one-time links: make a token, keep its digest, put the link in a mail that leaves
after the request commits; and redeem a token once.

Shared by sign-up (verification links) and password recovery (reset links), which differ only
in purpose, lifetime and template.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final
from urllib.parse import urlencode

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.mail.outbox import Outbox
from authsvc.mail.templates import Mail, render
from authsvc.security.account_tokens import AccountTokens
from authsvc.security.passwords import PasswordHasher
from authsvc.services.context import RequestContext
from authsvc.services.ratelimit import RateLimiter
from authsvc.services.users import UserService
from authsvc.store.account_tokens import AccountTokenRepository
from authsvc.store.db import after_commit
from authsvc.store.models import AccountToken, User

VERIFY_EMAIL: Final = "verify_email"
RESET_PASSWORD: Final = "reset_password"  # noqa: S105 - a purpose, not a secret
# The path of the page each link opens, under the public base URL.
_PATHS = {VERIFY_EMAIL: "/verify-email", RESET_PASSWORD: "/reset-password"}


class AccountLinks:
    def __init__(
        self, settings: Settings, tokens: AccountTokens, outbox: Outbox, limiter: RateLimiter
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self.outbox = outbox
        self.limiter = limiter

    def ttl(self, purpose: str) -> timedelta:
        seconds = (
            self.settings.email_verification_ttl
            if purpose == VERIFY_EMAIL
            else self.settings.password_reset_ttl
        )
        return timedelta(seconds=seconds)

    def link(self, purpose: str, token: str) -> str:
        return f"{self.settings.link_base_url}{_PATHS[purpose]}?{urlencode({'token': token})}"

    async def issue(
        self, db: AsyncSession, user: User, email: str, purpose: str, token: str, now: datetime
    ) -> str:
        """Store `token`'s digest for `user` (made by the caller with `tokens.new()`), and
        return the link that carries it."""
        await AccountTokenRepository(db).add(
            AccountToken(
                digest=self.tokens.digest(token),
                purpose=purpose,
                user_id=user.id,
                email=email,
                created_at=now,
                expires_at=now + self.ttl(purpose),
            )
        )
        return self.link(purpose, token)

    async def redeem(
        self, db: AsyncSession, token: str, purpose: str, now: datetime
    ) -> AccountToken | None:
        """The token's row, now marked used; None if it is malformed, unknown, expired or used
        (compare-and-set: one request wins)."""
        if not self.tokens.well_formed(token):
            return None
        return await AccountTokenRepository(db).redeem(self.tokens.digest(token), purpose, now)

    async def send_after_commit(
        self, db: AsyncSession, mail: Mail, recipient_key: str, now: datetime
    ) -> bool:
        """Queue `mail` once the request commits, within the per-account mail limit
        (`recipient_key`: the account's id, or the address for a stranger)."""
        if not await self.limiter.mail_allowed(recipient_key, now):
            return False
        self.enqueue_after_commit(db, mail)
        return True

    def enqueue_after_commit(self, db: AsyncSession, mail: Mail) -> None:
        def enqueue() -> None:
            self.outbox.enqueue(mail)

        after_commit(db, enqueue)

    def mail(self, kind: str, to: str, **values: str) -> Mail:
        """A mail from its template; every template may name the site (the link base)."""
        return render(kind, to, site=self.settings.link_base_url, **values)


class LinkFlow:
    """The base of the flows that mail a link (sign-up with its verification, password
    recovery): the collaborators they share, and the rate limit their endpoints share."""

    def __init__(
        self,
        settings: Settings,
        users: UserService,
        passwords: PasswordHasher,
        links: AccountLinks,
        limiter: RateLimiter,
    ) -> None:
        self.settings = settings
        self.users = users
        self.passwords = passwords
        self.links = links
        self.limiter = limiter

    async def _check_address(self, ctx: RequestContext) -> None:
        """One bucket per client address for every account endpoint: sign-up, verification,
        forgot and reset all count against the same limit."""
        await self.limiter.check_address("account", ctx.ip, ctx.now)
