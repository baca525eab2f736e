"""Repositories: every query authsvc makes. They flush; the caller's scope commits."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Row,
    Select,
    Table,
    and_,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.store.batches import delete_batch
from authsvc.store.models import (
    Base,
    DeniedAccessToken,
    RefreshToken,
    Session,
    SigningKey,
    User,
)
from authsvc.store.revocations import JTI, SID, RevocationEventRepository
from authsvc.store.rotation import token_in_force
from authsvc.store.rules import session_live


def _table(model: type[Base]) -> Table:
    table: Table = model.__table__  # type: ignore[assignment]
    return table


class UserRepository:
    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def by_username(self, username: str) -> User | None:
        result = await self.db.execute(select(User).where(User.username == username))
        return result.scalar_one_or_none()

    async def by_id(self, user_id: uuid.UUID) -> User | None:
        return await self.db.get(User, user_id)

    async def by_email(self, email: str) -> User | None:
        result = await self.db.execute(select(User).where(User.email == email))
        return result.scalar_one_or_none()

    async def add(self, user: User) -> bool:
        """Insert; False if the username or email is taken (checked by the unique
        constraints)."""
        try:
            async with self.db.begin_nested():
                self.db.add(user)
                await self.db.flush()
        except IntegrityError:
            return False
        return True

    async def list(self) -> Sequence[User]:
        result = await self.db.execute(select(User).order_by(User.username))
        return result.scalars().all()


class SessionRepository:
    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def add(self, session: Session) -> None:
        self.db.add(session)
        await self.db.flush()

    async def get(self, session_id: uuid.UUID) -> Session | None:
        return await self.db.get(Session, session_id)

    async def revoke(
        self,
        session_ids: Sequence[uuid.UUID],
        now: datetime,
        reason: str,
        *,
        tokens_valid_until: datetime,
    ) -> int:
        """Revoke live sessions; each newly revoked one goes on the revocation feed, in this
        transaction, until `tokens_valid_until` (no access token of it is valid after that:
        now + access TTL + leeway, Settings.access_token_horizon)."""
        if not session_ids:
            return 0
        feed = RevocationEventRepository(self.db)
        await feed.lock()
        result = await self.db.execute(
            update(Session)
            .where(Session.id.in_(session_ids), Session.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
            .returning(Session.id)
            .execution_options(synchronize_session=False)
        )
        revoked = [str(sid) for sid in result.scalars().all()]
        await feed.append(SID, revoked, tokens_valid_until, now)
        return len(revoked)

    async def live(self, session_id: uuid.UUID, now: datetime) -> Session | None:
        """The session, if it is live at `now` (store/rules.py session_live)."""
        result = await self.db.execute(
            select(Session).where(Session.id == session_id, *session_live(now))
        )
        return result.scalar_one_or_none()

    async def live_ids_for_user(self, user_id: uuid.UUID, now: datetime) -> list[uuid.UUID]:
        result = await self.db.execute(
            select(Session.id).where(Session.user_id == user_id, *session_live(now))
        )
        return list(result.scalars().all())

    async def delete_expired(self, now: datetime, limit: int) -> int:
        """Expired sessions, oldest first (their tokens go with them: ON DELETE CASCADE)."""
        return await delete_batch(
            self.db, _table(Session), Session.expires_at <= now, Session.expires_at, limit
        )


_ROTATION_MODELS: tuple[type[Base], ...] = (RefreshToken, Session, User)


@functools.cache
def _rotation_read_statement() -> tuple[Select[Any], tuple[tuple[str, ...], ...]]:
    """RefreshTokenRepository.in_force's query, built once, with each model's attribute
    names in the order of its columns in the result."""
    tokens, sessions, users = (model.__table__ for model in _ROTATION_MODELS)
    statement = select(tokens, sessions, users).where(*token_in_force())
    keys = tuple(
        tuple(
            model.__mapper__.get_property_by_column(column).key
            for column in model.__table__.columns
        )
        for model in _ROTATION_MODELS
    )
    return statement, keys


def _detached(row: Row[Any], keys: tuple[tuple[str, ...], ...]) -> list[Any]:
    """Transient instances holding the row's values, made the way the ORM's loader makes
    them (new_instance, then the attribute dict), without the constructor's bookkeeping."""
    objects: list[Any] = []
    start = 0
    for model, names in zip(_ROTATION_MODELS, keys, strict=True):
        instance = model.__mapper__.class_manager.new_instance()
        instance.__dict__.update(zip(names, row[start : start + len(names)], strict=True))
        objects.append(instance)
        start += len(names)
    return objects


class RefreshTokenRepository:
    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def add(self, token: RefreshToken) -> None:
        self.db.add(token)
        await self.db.flush()

    async def by_digest(self, digest: bytes) -> tuple[RefreshToken, Session, User] | None:
        """The token with its session and user, in one round trip."""
        result = await self.db.execute(
            select(RefreshToken, Session, User)
            .join(Session, Session.id == RefreshToken.session_id)
            .join(User, User.id == Session.user_id)
            .where(RefreshToken.digest == digest)
        )
        row = result.first()
        return None if row is None else (row[0], row[1], row[2])

    async def in_force(
        self, digest: bytes, now: datetime, client_id: str | None, jkt: str | None
    ) -> tuple[RefreshToken, Session, User] | None:
        """The token, its session and user if it is in force for `client_id` at `now`, spent or
        not (store/rotation.py's token_in_force); for a refresh the rotation declined, or one
        that narrows its scope. A Core query on the session's connection (same transaction):
        the objects are plain values, not loaded into the session."""
        statement, keys = _rotation_read_statement()
        connection = await self.db.connection()
        values = {"rt_digest": digest, "rt_now": now, "rt_client_id": client_id, "rt_jkt": jkt}
        row = (await connection.execute(statement, values)).first()
        if row is None:
            return None
        token, session, user = _detached(row, keys)
        return token, session, user

    async def child_of(self, token_id: int) -> RefreshToken | None:
        result = await self.db.execute(
            select(RefreshToken)
            .where(RefreshToken.parent_id == token_id)
            .execution_options(populate_existing=True)
        )
        return result.scalars().first()

    async def delete_expired(self, now: datetime, limit: int) -> int:
        """Expired tokens, oldest first. A spent token is kept until it expires: presented
        again before that, it is reuse (and revokes its session). Expired, it is refused as
        invalid by every rule, and its successors do not depend on it (parent_id is not a
        foreign key)."""
        return await delete_batch(
            self.db,
            _table(RefreshToken),
            RefreshToken.expires_at <= now,
            RefreshToken.expires_at,
            limit,
        )


class DenylistRepository:
    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def add(
        self, jti: str, session_id: uuid.UUID | None, expires_at: datetime, now: datetime
    ) -> None:
        feed = RevocationEventRepository(self.db)
        await feed.lock()
        exists_already = await self.db.get(DeniedAccessToken, jti)
        if exists_already is None:
            self.db.add(
                DeniedAccessToken(
                    jti=jti, session_id=session_id, expires_at=expires_at, created_at=now
                )
            )
            await self.db.flush()
            # Same transaction as the denylist row: the feed carries it iff it is denied.
            await feed.append(JTI, [jti], expires_at, now)

    async def delete_expired(self, now: datetime, limit: int) -> int:
        return await delete_batch(
            self.db,
            _table(DeniedAccessToken),
            DeniedAccessToken.expires_at <= now,
            DeniedAccessToken.expires_at,
            limit,
        )


class SigningKeyRepository:
    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def all(self) -> Sequence[SigningKey]:
        result = await self.db.execute(select(SigningKey).order_by(SigningKey.activates_at))
        return result.scalars().all()

    async def fingerprint(self) -> tuple[int, datetime | None, datetime | None]:
        """Cheap change detection: count and latest times, compared before a full reload."""
        result = await self.db.execute(
            select(
                func.count(), func.max(SigningKey.created_at), func.max(SigningKey.retires_at)
            ).select_from(SigningKey)
        )
        count, created, retires = result.one()
        return int(count), created, retires

    async def add(self, key: SigningKey) -> None:
        self.db.add(key)
        await self.db.flush()

    async def newest_created_at(self) -> datetime | None:
        result = await self.db.execute(select(func.max(SigningKey.created_at)))
        value = result.scalar_one_or_none()
        # func.max loses the column type on SQLite: normalise to an aware UTC datetime.
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    async def retire_active(self, at: datetime) -> None:
        await self.db.execute(
            update(SigningKey)
            .where(or_(SigningKey.retires_at.is_(None), SigningKey.retires_at > at))
            .values(retires_at=at)
        )

    async def delete_unpublished(self, before: datetime) -> int:
        result = await self.db.execute(
            delete(SigningKey).where(
                and_(SigningKey.retires_at.is_not(None), SigningKey.retires_at <= before)
            )
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
