"""SQL for authorization codes (RFC 6749 section 4.1): add, spend once, look up a spent one."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.store.batches import delete_batch
from authsvc.store.models import AuthorizationCode

_codes: Table = AuthorizationCode.__table__  # type: ignore[assignment]


class AuthorizationCodeRepository:
    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def add(self, code: AuthorizationCode) -> None:
        self.db.add(code)
        await self.db.flush()

    async def live(self, digest: bytes, client_id: str, now: datetime) -> AuthorizationCode | None:
        """The unexpired, unspent code with this digest, issued to `client_id`."""
        result = await self.db.execute(
            select(AuthorizationCode).where(
                AuthorizationCode.digest == digest,
                AuthorizationCode.client_id == client_id,
                AuthorizationCode.used_at.is_(None),
                AuthorizationCode.expires_at > now,
            )
        )
        return result.scalars().first()

    async def spend(self, code_id: int, now: datetime) -> bool:
        """Compare-and-set: mark the code spent if it still is not. One statement, so of two
        concurrent exchanges exactly one gets True: PostgreSQL's second UPDATE waits for the
        first's row lock and re-checks `used_at IS NULL`; SQLite serialises writers."""
        result = await self.db.execute(
            update(AuthorizationCode)
            .where(AuthorizationCode.id == code_id, AuthorizationCode.used_at.is_(None))
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0) == 1  # type: ignore[attr-defined]

    async def by_digest(self, digest: bytes) -> AuthorizationCode | None:
        result = await self.db.execute(
            select(AuthorizationCode)
            .where(AuthorizationCode.digest == digest)
            .execution_options(populate_existing=True)
        )
        return result.scalars().first()

    async def record_session(self, code_id: int, session_id: uuid.UUID) -> None:
        """The session the exchange opened: what a second presentation of the code revokes."""
        await self.db.execute(
            update(AuthorizationCode)
            .where(AuthorizationCode.id == code_id)
            .values(session_id=session_id)
            .execution_options(synchronize_session=False)
        )

    async def delete_expired(self, before: datetime, limit: int) -> int:
        """Codes that expired before `before`: kept a while after expiry so that a late second
        presentation is still recognised as reuse."""
        return await delete_batch(
            self.db,
            _codes,
            AuthorizationCode.expires_at <= before,
            AuthorizationCode.expires_at,
            limit,
        )
