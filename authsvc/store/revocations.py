"""The revocation feed's SQL: append events in the revoking transaction, read a cursor range.

Cursor correctness: a poller that has seen id N must never later receive an id below N. On
SQLite writers are serialised (BEGIN IMMEDIATE), so ids commit in order. On PostgreSQL two
transactions could take ids 10 and 11 and commit 11 first; a poll in between would move its
cursor past 10 for ever. So every appending transaction first takes a transaction-scoped
advisory lock: ids are then allocated and committed one transaction at a time, in order. The
lock is taken before the revocation's own row locks, so it is always first in lock order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import delete, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.store.models import RevocationEvent

# Distinct from the migration lock (store.db.MIGRATION_LOCK_ID).
FEED_LOCK_ID = 0x61757468_66656564 & 0x7FFFFFFFFFFFFFFF  # "authfeed"

JTI = "jti"
SID = "sid"


class RevocationEventRepository:
    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def lock(self) -> None:
        """Serialise feed appends on PostgreSQL until this transaction ends (see module doc)."""
        if self.db.get_bind().dialect.name == "postgresql":
            await self.db.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": FEED_LOCK_ID})

    async def append(
        self, kind: str, values: Iterable[str], expires_at: datetime, now: datetime
    ) -> None:
        rows = [
            {"kind": kind, "value": v, "expires_at": expires_at, "created_at": now} for v in values
        ]
        if rows:
            await self.db.execute(insert(RevocationEvent), rows)

    async def after(self, cursor: int, limit: int) -> Sequence[RevocationEvent]:
        """Events with id > cursor, oldest first: one range scan of the primary key."""
        result = await self.db.execute(
            select(RevocationEvent)
            .where(RevocationEvent.id > cursor)
            .order_by(RevocationEvent.id)
            .limit(limit)
        )
        return result.scalars().all()

    async def delete_expired(self, before: datetime, limit: int) -> int:
        ids = select(RevocationEvent.id).where(RevocationEvent.expires_at <= before).limit(limit)
        result = await self.db.execute(delete(RevocationEvent).where(RevocationEvent.id.in_(ids)))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
