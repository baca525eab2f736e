"""The revocation feed's SQL: append events in the revoking transaction, read a cursor range.

Cursor correctness: a poller that has seen id N must never later receive an id below N. On
SQLite writers are serialised (BEGIN IMMEDIATE), so ids commit in order. On PostgreSQL two
transactions could take ids 10 and 11 and commit 11 first; a poll in between would move its
cursor past 10 for ever. So every appending transaction first takes a transaction-scoped
advisory lock: ids are then allocated and committed one transaction at a time, in order. The
lock is taken before the revocation's own row locks, so it is always first in lock order.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Table, bindparam, func, insert, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.store.batches import delete_batch
from authsvc.store.models import RevocationEvent

# Distinct from the migration lock (store.db.MIGRATION_LOCK_ID).
FEED_LOCK_ID = 0x61757468_66656564 & 0x7FFFFFFFFFFFFFFF  # "authfeed"

JTI = "jti"
SID = "sid"

_events: Table = RevocationEvent.__table__  # type: ignore[assignment]
_CURSOR = bindparam("fd_cursor", type_=_events.c.id.type)
_LIMIT = bindparam("fd_limit", type_=_events.c.id.type)
_LIVE_AFTER = bindparam("fd_live_after", type_=_events.c.expires_at.type)


@functools.cache
def page_statement() -> Select[Any]:
    """The feed's page: the `fd_limit` events after cursor `fd_cursor` (one range scan of the
    primary key), of which only those still live after `fd_live_after` leave the database,
    plus the page's last one, whatever its expiry, for the next cursor. Each row carries the
    page's size and last id. A poller far behind reads pages of expired events: they are
    skipped here, not sent to the server to be dropped there."""
    scanned = (
        select(_events.c.id, _events.c.kind, _events.c.value, _events.c.expires_at)
        .where(_events.c.id > _CURSOR)
        .order_by(_events.c.id)
        .limit(_LIMIT)
        .subquery("scanned")
    )
    counted = select(
        scanned,
        func.count().over().label("page_rows"),
        func.max(scanned.c.id).over().label("page_last"),
    ).subquery("counted")
    return (
        select(counted)
        .where(or_(counted.c.expires_at > _LIVE_AFTER, counted.c.id == counted.c.page_last))
        .order_by(counted.c.id)
    )


@dataclass(frozen=True, slots=True)
class FeedEvent:
    id: int
    kind: str
    value: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class FeedPage:
    """The live events of a page (the last event too, live or not), how many events the page
    spanned, and the last one's id (None: nothing after the cursor)."""

    events: list[FeedEvent]
    scanned: int
    last_id: int | None


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

    async def page(self, cursor: int, limit: int, live_after: datetime) -> FeedPage:
        """Events with id > cursor, oldest first, at most `limit` (page_statement)."""
        values = {"fd_cursor": cursor, "fd_limit": limit, "fd_live_after": live_after}
        rows: Sequence[Any] = (await self.db.execute(page_statement(), values)).all()
        if not rows:
            return FeedPage([], 0, None)
        return FeedPage(
            [FeedEvent(r.id, r.kind, r.value, r.expires_at) for r in rows],
            int(rows[0].page_rows),
            int(rows[0].page_last),
        )

    async def delete_expired(self, before: datetime, limit: int) -> int:
        return await delete_batch(
            self.db, _events, _events.c.expires_at <= before, _events.c.expires_at, limit
        )
