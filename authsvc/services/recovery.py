"""Password recovery by email: ask for a reset link, then set a new password with it, once.

`forgot` answers the same, after the same work, whether or not the account exists: on every path
it makes a token, its digest and its link, looks the account up, counts a mail against the
per-recipient budget (the rate-limit store's round trip), renders the mail and writes one audit
row (so every path commits a write). Only for an active account with an address, within its
budget, is the digest stored (one more row in the same transaction) and the mail queued, to
leave after the commit. `reset` hashes the new password before it opens the
transaction, redeems the link (compare-and-set), sets the hash and revokes every session of the
user through the one revocation path (users.password_changed: the feed carries them).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.errors import (
    InvalidAccountLink,
    InvalidEmail,
    InvalidUsername,
    PasswordPolicyError,
    PasswordResetDisabled,
)
from authsvc.services import audit
from authsvc.services.account_links import RESET_PASSWORD, LinkFlow
from authsvc.services.context import RequestContext
from authsvc.services.users import normalize_email, normalize_username
from authsvc.store.account_tokens import AccountTokenRepository
from authsvc.store.models import User
from authsvc.store.repositories import UserRepository

RESET_ACTOR = "password_reset"
# The rendered mail of a request for no account goes nowhere.
_NOBODY = "nobody@invalid"


class PasswordRecovery(LinkFlow):
    def _check_enabled(self) -> None:
        if not self.links.outbox.enabled:
            raise PasswordResetDisabled()

    async def forgot(
        self, db: AsyncSession, email: str | None, username: str | None, ctx: RequestContext
    ) -> None:
        """Mail a reset link to the account's address if there is such an active account.
        Nothing in the answer or its cost says whether there was."""
        self._check_enabled()
        await self._check_address(ctx)
        token = self.links.tokens.new()
        found = await self._find(db, email, username)
        user = found if found is not None and found.is_active and found.email else None
        # An unknown account is counted under what was typed: the same store round trip.
        recipient = str(user.id) if user is not None else f"unknown:{email or username}"
        mailed = await self.limiter.mail_allowed(recipient, ctx.now) and user is not None
        address = user.email if user is not None and user.email else _NOBODY
        if mailed and user is not None:
            link = await self.links.issue(db, user, address, RESET_PASSWORD, token, ctx.now)
        else:
            self.links.tokens.digest(token)  # the work `issue` does
            link = self.links.link(RESET_PASSWORD, token)
        minutes = str(max(1, self.settings.password_reset_ttl // 60))
        name = user.username if user is not None else ""
        mail = self.links.mail("reset_password", address, username=name, link=link, minutes=minutes)
        if mailed:
            self.links.enqueue_after_commit(db, mail)
        # A stranger's input is not kept: an unknown account's row names nobody.
        await audit.record(
            db,
            ctx.now,
            audit.Entry(
                audit.PASSWORD_RESET_REQUESTED,
                found.id if found is not None else None,
                found.username if found is not None else None,
                ip=ctx.ip,
                details={"mailed": mailed},
            ),
        )

    async def _find(self, db: AsyncSession, email: str | None, username: str | None) -> User | None:
        users = UserRepository(db)
        try:
            if email is not None:
                return await users.by_email(normalize_email(email))
            if username is not None:
                return await users.by_username(normalize_username(username))
        except (InvalidEmail, InvalidUsername):
            # No account has a malformed name; answering 400 here would be the same answer
            # for everyone too, but one path is simpler to keep equal.
            return None
        return None

    async def reset(
        self, db: AsyncSession, token: str, new_password: str, ctx: RequestContext
    ) -> User:
        """Set the new password with a reset link, once; revoke every session of the user.
        InvalidAccountLink (unknown, used, expired, or the account changed since) says no
        more. A password the policy refuses leaves the link usable."""
        self._check_enabled()
        await self._check_address(ctx)
        # The password is checked and hashed before the transaction begins (no lock held while
        # hashing); a refusal is raised only once the link is known good, so a bad link says
        # only that. Raising rolls the request back, so the link stays usable.
        refused: PasswordPolicyError | None = None
        try:
            self.users.check_password_policy(new_password)
        except PasswordPolicyError as exc:
            refused = exc
        password_hash = None if refused else await self.passwords.hash(new_password)
        row = await self.links.redeem(db, token, RESET_PASSWORD, ctx.now)
        user = await UserRepository(db).by_id(row.user_id) if row is not None else None
        if row is None or user is None or not user.is_active or user.email != row.email:
            raise InvalidAccountLink()
        if refused is not None or password_hash is None:
            raise refused or PasswordPolicyError()
        # Any other reset link mailed before dies with this one.
        await AccountTokenRepository(db).void_for_user(user.id, RESET_PASSWORD, ctx.now)
        return await self.users.replace_password_hash(db, user, password_hash, ctx.now, RESET_ACTOR)
