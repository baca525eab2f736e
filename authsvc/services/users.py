"""Users: names, passwords and the account switches."""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.errors import InvalidUsername, NotFound, PasswordPolicyError, UserExists
from authsvc.security.passwords import PasswordHasher
from authsvc.services import audit
from authsvc.store.models import User
from authsvc.store.repositories import SessionRepository, UserRepository

USERNAME_MAX = 64
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


def normalize_roles(roles: Sequence[str]) -> list[str]:
    cleaned = []
    for role in roles:
        role = role.strip()
        if not role or len(role) > 64 or any(c.isspace() for c in role):
            raise ValueError(f"invalid role {role!r}")
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
        password: str,
        now: datetime,
        roles: Sequence[str] = (),
        actor: str | None = None,
    ) -> User:
        name = normalize_username(username)
        self.check_password_policy(password)
        user = User(
            id=uuid.uuid4(),
            username=name,
            password_hash=await self.passwords.hash(password),
            roles=normalize_roles(roles),
            is_active=True,
            created_at=now,
            updated_at=now,
        )
        if not await UserRepository(db).add(user):
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

    async def list(self, db: AsyncSession) -> Sequence[User]:
        return await UserRepository(db).list()

    async def set_active(
        self, db: AsyncSession, username: str, active: bool, now: datetime, actor: str | None = None
    ) -> User:
        user = await self.get(db, username)
        user.is_active = active
        user.updated_at = now
        if not active:
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
        self.check_password_policy(password)
        user = await self.get(db, username)
        user.password_hash = await self.passwords.hash(password)
        user.updated_at = now
        await self.password_changed(db, user, now, actor=actor)
        await db.flush()
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
