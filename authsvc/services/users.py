"""Users: names, passwords and the account switches."""

from __future__ import annotations

import secrets
import unicodedata
import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.errors import (
    EmailExists,
    InvalidEmail,
    InvalidUsername,
    InvalidValue,
    NotFound,
    PasswordPolicyError,
    UserExists,
)
from authsvc.security.passwords import PasswordHasher
from authsvc.services import audit
from authsvc.store.account_tokens import AccountTokenRepository
from authsvc.store.admin import UserAdminRepository
from authsvc.store.models import User
from authsvc.store.repositories import SessionRepository, UserRepository

USERNAME_MAX = 64
EMAIL_MAX = 254  # RFC 5321 section 4.5.3.1.3: the longest path, less its angle brackets
_LETTER_DIGIT = frozenset({"Ll", "Lu", "Lo", "Lm", "Lt", "Mn", "Mc", "Nd"})


def normalize_username(raw: str) -> str:
    """RFC 8265 section 3.3 UsernameCaseMapped, so look-alike duplicates map to one name.

    Width mapping (fullwidth/halfwidth to their decompositions), case folding, NFC; then the
    PRECIS IdentifierClass: letters, digits and printable ASCII, no spaces or controls.
    """
    mapped = "".join(
        unicodedata.normalize("NFKC", ch)
        if unicodedata.decomposition(ch).startswith(("<wide>", "<narrow>"))
        else ch
        for ch in raw
    )
    name = unicodedata.normalize("NFC", mapped.casefold())
    if not name or len(name) > USERNAME_MAX:
        raise InvalidUsername()
    for ch in name:
        if "\x21" <= ch <= "\x7e":
            continue
        if ord(ch) < 0x80 or unicodedata.category(ch) not in _LETTER_DIGIT:
            raise InvalidUsername()
    return name


def printable(text: str) -> bool:
    """No control characters: PostgreSQL refuses NUL in text, and no name needs the others."""
    return not any(unicodedata.category(ch) == "Cc" for ch in text)


def normalize_email(raw: str) -> str:
    """One spelling per address, so that uniqueness means something: surrounding space
    dropped, NFC, lower case. Only the shape is checked (one `@`, a local part and a dotted
    domain, no spaces or controls); whether mail arrives is for a verification mail to show."""
    email = unicodedata.normalize("NFC", raw.strip()).lower()
    local, at, domain = email.rpartition("@")
    if (
        not at
        or not local
        or "@" in local
        or "." not in domain.strip(".")
        or len(email) > EMAIL_MAX
        or not printable(email)
        or any(ch.isspace() for ch in email)
    ):
        raise InvalidEmail()
    return email


def normalize_roles(roles: Sequence[str]) -> list[str]:
    cleaned = []
    for role in roles:
        role = role.strip()
        if not role or len(role) > 64 or not printable(role) or any(c.isspace() for c in role):
            raise InvalidValue(f"invalid role {role!r}")
        if role not in cleaned:
            cleaned.append(role)
    return cleaned


class UserService:
    def __init__(self, settings: Settings, passwords: PasswordHasher) -> None:
        self.settings = settings
        self.passwords = passwords

    def check_password_policy(self, password: str) -> None:
        # NIST SP 800-63B: length only, no composition rules. The upper bound keeps hashing cost
        # bounded; it is far above any honest password.
        if (
            not self.settings.password_min_length
            <= len(password)
            <= (self.settings.password_max_length)
        ):
            raise PasswordPolicyError(
                f"The password must be {self.settings.password_min_length} to "
                f"{self.settings.password_max_length} characters long."
            )

    async def create(
        self,
        db: AsyncSession,
        username: str,
        password: str | None,
        now: datetime,
        roles: Sequence[str] = (),
        actor: str | None = None,
        *,
        email: str | None = None,
        password_hash: str | None = None,
        active: bool = True,
        pending_signup: bool = False,
    ) -> User:
        """Create a user. Without a password the account cannot log in until one is set: it
        gets the hash of a random secret nobody knows, so login takes the same path and time.
        `password_hash` is the password's hash when the caller computed it already (sign-up
        hashes before it opens its transaction). `pending_signup` marks a self sign-up, deleted
        by housekeeping unless switched on within AUTHSVC_UNVERIFIED_SIGNUP_TTL."""
        name = normalize_username(username)
        address = normalize_email(email) if email is not None else None
        if password is None:
            password = secrets.token_urlsafe(32)
        else:
            self.check_password_policy(password)
        user = User(
            id=uuid.uuid4(),
            username=name,
            email=address,
            password_hash=password_hash or await self.passwords.hash(password),
            roles=normalize_roles(roles),
            is_active=active,
            created_at=now,
            updated_at=now,
            signup_pending_since=now if pending_signup else None,
        )
        users = UserRepository(db)
        if not await users.add(user):
            if address is not None and await users.by_email(address) is not None:
                raise EmailExists()
            raise UserExists()
        await audit.record(
            db,
            now,
            audit.Entry(
                audit.USER_CREATED,
                user.id,
                user.username,
                actor=actor,
                details={"roles": user.roles},
            ),
        )
        return user

    async def get(self, db: AsyncSession, username: str) -> User:
        try:
            name = normalize_username(username)
        except InvalidUsername as exc:
            raise NotFound("No such user.") from exc
        user = await UserRepository(db).by_username(name)
        if user is None:
            raise NotFound("No such user.")
        return user

    async def by_id(self, db: AsyncSession, user_id: str) -> User:
        """A user by id; NotFound for an unknown or malformed id alike."""
        try:
            key = uuid.UUID(user_id)
        except ValueError as exc:
            raise NotFound("No such user.") from exc
        user = await UserRepository(db).by_id(key)
        if user is None:
            raise NotFound("No such user.")
        return user

    async def list(self, db: AsyncSession) -> Sequence[User]:
        return await UserRepository(db).list()

    async def set_active(
        self, db: AsyncSession, username: str, active: bool, now: datetime, actor: str | None = None
    ) -> User:
        return await self.switch_active(db, await self.get(db, username), active, now, actor)

    async def switch_active(
        self, db: AsyncSession, user: User, active: bool, now: datetime, actor: str | None
    ) -> User:
        """Enable or disable a user; disabling revokes every live session at once (through
        SessionRepository.revoke, so the revocation feed carries them)."""
        user.is_active = active
        user.updated_at = now
        if active:
            # An operator who switches a sign-up on takes it over: housekeeping keeps it.
            user.signup_pending_since = None
        else:
            # Links mailed before (a sign-up's verification, a reset) must not undo this.
            await AccountTokenRepository(db).void_for_user(user.id, None, now)
            sessions = SessionRepository(db)
            await sessions.revoke(
                await sessions.live_ids_for_user(user.id, now),
                now,
                "disabled",
                tokens_valid_until=now + self.settings.access_token_horizon,
            )
        event = audit.USER_ENABLED if active else audit.USER_DISABLED
        await audit.record(db, now, audit.Entry(event, user.id, user.username, actor=actor))
        await db.flush()
        return user

    async def set_password(
        self,
        db: AsyncSession,
        username: str,
        password: str,
        now: datetime,
        actor: str | None = None,
    ) -> User:
        return await self.replace_password(db, await self.get(db, username), password, now, actor)

    async def replace_password(
        self, db: AsyncSession, user: User, password: str, now: datetime, actor: str | None
    ) -> User:
        """Set a user's password (an operator's doing) and revoke every session."""
        self.check_password_policy(password)
        return await self.replace_password_hash(
            db, user, await self.passwords.hash(password), now, actor
        )

    async def replace_password_hash(
        self, db: AsyncSession, user: User, password_hash: str, now: datetime, actor: str | None
    ) -> User:
        """replace_password with the hash computed already (outside the transaction)."""
        user.password_hash = password_hash
        user.updated_at = now
        await self.password_changed(db, user, now, actor=actor)
        await db.flush()
        return user

    async def set_email(
        self, db: AsyncSession, user: User, email: str | None, now: datetime, actor: str | None
    ) -> User:
        """Set or clear a user's email address (normalised, unique)."""
        address = normalize_email(email) if email is not None else None
        previous = user.email
        if address == previous:
            return user
        if not await UserAdminRepository(db).set_email(user.id, address, now):
            raise EmailExists()
        user.email, user.email_verified_at, user.updated_at = address, None, now
        await audit.record(
            db,
            now,
            audit.Entry(
                audit.EMAIL_CHANGED,
                user.id,
                user.username,
                actor=actor,
                details={"email": address, "previous": previous},
            ),
        )
        return user

    async def password_changed(
        self,
        db: AsyncSession,
        user: User,
        now: datetime,
        *,
        keep_session: uuid.UUID | None = None,
        actor: str | None = None,
    ) -> None:
        """After a new password: revoke the user's sessions (but `keep_session`, the caller's own
        when they changed it themselves) and record it in the audit trail."""
        sessions = SessionRepository(db)
        live = await sessions.live_ids_for_user(user.id, now)
        revoked = await sessions.revoke(
            [s for s in live if s != keep_session],
            now,
            "password_changed",
            tokens_valid_until=now + self.settings.access_token_horizon,
        )
        await audit.record(
            db,
            now,
            audit.Entry(
                audit.PASSWORD_CHANGED,
                user.id,
                user.username,
                keep_session,
                actor=actor,
                details={"sessions_revoked": revoked},
            ),
        )
