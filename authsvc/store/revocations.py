"""The revocation feed's SQL: append events in the revoking transaction, read a cursor range.

Cursor correctness: a poller that has seen id N must never later receive an id below N. On
SQLite writers are serialised (BEGIN IMMEDIATE), so ids commit in order. On PostgreSQL two
transactions could take ids 10 and 11 and commit 11 first; a poll in between would move its
cursor past 10 for ever. So every appending transaction first takes a transaction-scoped
advisory lock: ids are then allocated and committed one transaction at a time, in order. The
lock is taken before the revocation's own row locks, so it is always first in lock order.

The feed's identity lives in feed_state (one row): its epoch, and the low-water mark that prune
raises to the highest event id it deleted, in the same transaction as the delete. A poll reads
that identity and its page in one statement (poll_statement), run in a session or compiled for
the fast lane (fastlane.py).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    bindparam,
    case,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.store.batches import delete_batch_keys
from authsvc.store.models import FeedState, RevocationEvent
from authsvc.store.rules import CompiledStatement, for_asyncpg

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


_events: Table = RevocationEvent.__table__  # type: ignore[assignment]
_state: Table = FeedState.__table__  # type: ignore[assignment]
_CURSOR = bindparam("fd_cursor", type_=_events.c.id.type)
_LIMIT = bindparam("fd_limit", type_=_events.c.id.type)
_LIVE_AFTER = bindparam("fd_live_after", type_=_events.c.expires_at.type)


@functools.cache
def page_statement() -> Select[Any]:
    """The feed's page: the `fd_limit` events after cursor `fd_cursor` (one range scan of the
    primary key), of which only those still live after `fd_live_after` leave the database,
    plus the page's last one, whatever its expiry, for the next cursor. Each row carries the
    page's size and last id.

    A poller far behind (or with no cursor yet) does not page through the expired events
    before the first live one: the range starts at that event (found through the expiry
    index), or at the newest event when none is live, so a new verifier of a table of millions
    of events catches up in one page of live entries."""
    first_live = (
        select(func.min(_events.c.id)).where(_events.c.expires_at > _LIVE_AFTER).scalar_subquery()
    )
    newest = select(func.max(_events.c.id)).scalar_subquery()
    scanned = (
        select(_events.c.id, _events.c.kind, _events.c.value, _events.c.expires_at)
        .where(_events.c.id > _CURSOR, _events.c.id >= func.coalesce(first_live, newest))
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


def _identity() -> Select[Any]:
    """One row whatever the tables hold: the epoch and low-water mark (NULL when feed_state
    has lost its row) and the kind and value of event `fd_cursor` (NULL when there is none)."""
    at = select(_events.c.kind, _events.c.value).where(_events.c.id == _CURSOR)
    # A constant in the SQL, not a parameter: the statement's parameters are the poll's own.
    one: ColumnElement[int] = literal_column(str(FEED_STATE_ID))
    state = select(_state.c.epoch, _state.c.low_water).where(_state.c.id == one)
    return select(
        state.with_only_columns(_state.c.epoch).scalar_subquery().label("epoch"),
        state.with_only_columns(_state.c.low_water).scalar_subquery().label("low_water"),
        at.with_only_columns(_events.c.kind).scalar_subquery().label("at_kind"),
        at.with_only_columns(_events.c.value).scalar_subquery().label("at_value"),
    )


@functools.cache
def poll_statement() -> Select[Any]:
    """A poll in one statement: the feed's identity at cursor `fd_cursor` on every row, joined
    to the page after it (page_statement); a page with no rows leaves one row of identity.

    One statement is one round trip and one snapshot: the identity a cursor is judged by and
    the page it is served are read at the same instant, even under READ COMMITTED."""
    identity = _identity().subquery("feed_identity")
    page = page_statement().subquery("page")
    return select(identity, page).select_from(identity.outerjoin(page, true())).order_by(page.c.id)


@functools.cache
def asyncpg_poll() -> CompiledStatement:
    return for_asyncpg(poll_statement())


def poll_values(cursor: int, limit: int, live_after: datetime) -> dict[str, Any]:
    return {"fd_cursor": cursor, "fd_limit": limit, "fd_live_after": live_after}


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


@dataclass(frozen=True, slots=True)
class FeedPoll:
    identity: FeedIdentity
    page: FeedPage


def feed_poll(rows: Sequence[Sequence[Any]]) -> FeedPoll:
    """poll_statement's rows, from the session or from a raw driver (the fast lane)."""
    epoch, low_water, kind, value, first_id, *_, scanned, last_id = rows[0]
    identity = FeedIdentity(epoch, int(low_water or 0), _event(kind, value))
    if first_id is None:
        return FeedPoll(identity, FeedPage([], 0, None))
    events = [FeedEvent(r[4], r[5], r[6], r[7]) for r in rows]
    return FeedPoll(identity, FeedPage(events, int(scanned), int(last_id)))


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

    async def poll(self, values: dict[str, Any]) -> FeedPoll:
        """The identity at the cursor and the page after it (poll_statement, poll_values)."""
        rows: Sequence[Any] = (await self.db.execute(poll_statement(), values)).all()
        return feed_poll(rows)

    async def identity(self, cursor: int) -> FeedIdentity:
        """The epoch, low-water mark and the event at `cursor`, in one statement. The epoch is
        None when feed_state has lost its row (emptied by hand) until `authsvc feed reset`."""
        row = (await self.db.execute(_identity(), {"fd_cursor": cursor})).one()
        return FeedIdentity(row[0], int(row[1] or 0), _event(row[2], row[3]))

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
        """Delete up to `limit` expired events, oldest first, and raise the low-water mark
        past them."""
        deleted = await delete_batch_keys(
            self.db, _events, _events.c.expires_at <= before, _events.c.expires_at, limit
        )
        if deleted:
            highest = max(int(i) for i in deleted)
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
