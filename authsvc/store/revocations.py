"""The revocation feed's SQL: append events in the revoking transaction, read a cursor range.

Cursor correctness: a poller that has seen id N must never later receive an id below N. On
SQLite writers are serialised (BEGIN IMMEDIATE), so ids commit in order. On PostgreSQL two
transactions could take ids 10 and 11 and commit 11 first; a poll in between would move its
cursor past 10 for ever. So every appending transaction first takes a transaction-scoped
advisory lock: ids are then allocated and committed one transaction at a time, in order. The
lock is taken before the revocation's own row locks, so it is always first in lock order.

The feed's identity lives in feed_state (one row): its epoch, and the low-water mark that prune
raises to the highest event id it deleted, in the same transaction as the delete.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, delete, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.store.models import FeedState, RevocationEvent

# Distinct from the migration lock (store.db.MIGRATION_LOCK_ID).
FEED_LOCK_ID = 0x61757468_66656564 & 0x7FFFFFFFFFFFFFFF  # "authfeed"

JTI = "jti"
SID = "sid"
FEED_STATE_ID = 1


@dataclass(frozen=True)
class FeedIdentity:
    """The feed as a poller's cursor must match it (see services.revocations)."""

    epoch: str | None
    low_water: int
    # (kind, value) of the event with the cursor's id, None if there is no such row.
    event_at_cursor: tuple[str, str] | None


def _event(kind: str | None, value: str | None) -> tuple[str, str] | None:
    return None if kind is None or value is None else (kind, value)


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

    async def identity(self, cursor: int) -> FeedIdentity:
        """The epoch, low-water mark and the event at `cursor`, in one statement. The epoch is
        None when feed_state has lost its row (emptied by hand) until `authsvc feed reset`."""
        at = select(RevocationEvent).where(RevocationEvent.id == cursor)
        kind = at.with_only_columns(RevocationEvent.kind).scalar_subquery()
        value = at.with_only_columns(RevocationEvent.value).scalar_subquery()
        state = select(FeedState.epoch, FeedState.low_water).where(FeedState.id == FEED_STATE_ID)
        row = (await self.db.execute(state.add_columns(kind, value))).one_or_none()
        if row is None:
            event = (await self.db.execute(select(kind, value))).one()
            return FeedIdentity(None, 0, _event(event[0], event[1]))
        return FeedIdentity(row[0], int(row[1]), _event(row[2], row[3]))

    async def reset(self, epoch: str, now: datetime) -> None:
        """Give the feed a new epoch (creating feed_state's row if it was lost)."""
        result = await self.db.execute(
            update(FeedState).where(FeedState.id == FEED_STATE_ID).values(epoch=epoch, reset_at=now)
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            await self.db.execute(
                insert(FeedState).values(id=FEED_STATE_ID, epoch=epoch, low_water=0, reset_at=now)
            )

    async def delete_expired(self, before: datetime, limit: int) -> int:
        """Delete up to `limit` expired events and raise the low-water mark past them."""
        ids = select(RevocationEvent.id).where(RevocationEvent.expires_at <= before).limit(limit)
        result = await self.db.execute(
            delete(RevocationEvent).where(RevocationEvent.id.in_(ids)).returning(RevocationEvent.id)
        )
        deleted = [int(i) for i in result.scalars().all()]
        if deleted:
            highest = max(deleted)
            await self.db.execute(
                update(FeedState)
                .where(FeedState.id == FEED_STATE_ID)
                .values(
                    low_water=case(
                        (FeedState.low_water < highest, highest), else_=FeedState.low_water
                    )
                )
            )
        return len(deleted)
