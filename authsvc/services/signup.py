"""Self-service sign-up and email verification.

A sign-up answers the same whatever exists already: the name and address are checked, the
password is hashed (always, before the transaction, so a taken name costs the same time as a
new account), and then exactly one mail is queued:
- a new name and address: the account is created switched off, with a verification link;
- an address that belongs to an account: a note to that account's owner (someone tried to
  sign up with your address), and nothing is created;
- a taken name with a new address: a note to that address to pick another name (only whoever
  reads that mailbox learns the name is taken).
Following the link (POST /auth/email/verify) marks the address verified and switches the
account on, once. An account still unverified after AUTHSVC_UNVERIFIED_SIGNUP_TTL is deleted by
housekeeping (`delete_unverified`), which frees its name and address again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.errors import EmailExists, InvalidAccountLink, SignupDisabled, UserExists
from authsvc.services import audit
from authsvc.services.account_links import VERIFY_EMAIL, LinkFlow
from authsvc.services.context import RequestContext
from authsvc.services.users import normalize_email, normalize_username
from authsvc.store.account_tokens import AccountTokenRepository
from authsvc.store.models import User
from authsvc.store.repositories import UserRepository

SIGNUP_ACTOR = "signup"
PRUNE_ACTOR = "prune"


class SignupService(LinkFlow):
    async def signup(
        self, db: AsyncSession, username: str, email: str, password: str, ctx: RequestContext
    ) -> None:
        """Create a switched-off account and mail its verification link, or mail the owner of
        what is taken (see the module docstring). The caller answers the same either way."""
        if not self.settings.signup_enabled:
            raise SignupDisabled()
        await self._check_address(ctx)
        # Refusals that depend only on the input, never on what exists.
        name = normalize_username(username)
        address = normalize_email(email)
        self.users.check_password_policy(password)
        password_hash = await self.passwords.hash(password)
        # A link token is made whether or not it is used: the same work on every path.
        token = self.links.tokens.new()
        users = UserRepository(db)
        holder = await users.by_email(address)
        if holder is None and await users.by_username(name) is None:
            try:
                user = await self.users.create(
                    db,
                    name,
                    password,
                    ctx.now,
                    (),
                    SIGNUP_ACTOR,
                    email=address,
                    password_hash=password_hash,
                    active=False,
                    pending_signup=True,
                )
            except EmailExists:  # a sign-up with the same address committed in between
                holder = await users.by_email(address)
            except UserExists:
                pass
            else:
                await self._send_verification(db, user, address, token, ctx)
                return
        await self._refused(db, holder, name, address, ctx)

    async def _send_verification(
        self, db: AsyncSession, user: User, address: str, token: str, ctx: RequestContext
    ) -> None:
        link = await self.links.issue(db, user, address, VERIFY_EMAIL, token, ctx.now)
        hours = str(self.settings.email_verification_ttl // 3600 or 1)
        mail = self.links.mail(
            "verify_email", address, username=user.username, link=link, hours=hours
        )
        await self.links.send_after_commit(db, mail, str(user.id), ctx.now)

    async def _refused(
        self,
        db: AsyncSession,
        holder: User | None,
        name: str,
        address: str,
        ctx: RequestContext,
    ) -> None:
        if holder is not None:
            mail = self.links.mail("signup_exists", address, username=holder.username)
            recipient = str(holder.id)
            reason = "email_taken"
        else:
            mail = self.links.mail("username_taken", address, username=name)
            recipient = address
            reason = "username_taken"
        await self.links.send_after_commit(db, mail, recipient, ctx.now)
        await audit.record(
            db,
            ctx.now,
            audit.Entry(
                audit.SIGNUP_REFUSED,
                holder.id if holder else None,
                holder.username if holder else None,
                ip=ctx.ip,
                actor=SIGNUP_ACTOR,
                # The address is the existing owner's own; a stranger's address is not kept.
                details={"reason": reason},
            ),
        )

    async def verify_email(self, db: AsyncSession, token: str, ctx: RequestContext) -> User:
        """Redeem a verification link: the address is verified and the account switched on.
        InvalidAccountLink for anything else (unknown, used, expired, address since
        changed), without saying which."""
        await self._check_address(ctx)
        row = await self.links.redeem(db, token, VERIFY_EMAIL, ctx.now)
        if row is None or not await AccountTokenRepository(db).verify_email(
            row.user_id, row.email, ctx.now
        ):
            raise InvalidAccountLink()
        user = await UserRepository(db).by_id(row.user_id)
        assert user is not None  # the token's foreign key (ON DELETE CASCADE)
        await db.refresh(user)
        await audit.record(
            db,
            ctx.now,
            audit.Entry(
                audit.EMAIL_VERIFIED,
                user.id,
                user.username,
                ip=ctx.ip,
                details={"email": row.email},
            ),
        )
        return user


async def delete_unverified(db: AsyncSession, settings: Settings, now: datetime, limit: int) -> int:
    """Delete up to `limit` self sign-ups nobody verified (or an operator switched on) within
    AUTHSVC_UNVERIFIED_SIGNUP_TTL (0: keep them), each with an audit row; the number deleted.
    Accounts an operator created are never pending, so never deleted here."""
    if not settings.unverified_signup_ttl:
        return 0
    before = now - timedelta(seconds=settings.unverified_signup_ttl)
    deleted = await AccountTokenRepository(db).delete_unverified_signups(before, limit)
    for user_id, username in deleted:
        await audit.record(
            db,
            now,
            audit.Entry(
                audit.USER_DELETED,
                user_id,
                username,
                actor=PRUNE_ACTOR,
                details={"reason": "signup_unverified"},
            ),
        )
    return len(deleted)
