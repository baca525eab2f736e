"""The revocation feed: what resource servers poll to refuse revoked tokens without calling home.

Entries are appended by the revoking transaction itself (SessionRepository.revoke,
DenylistRepository.add), so every path that revokes (logout in every scope, refresh-token reuse,
disabling a user, setting a password) reaches the feed, and nothing reaches it that was rolled
back. An entry is served until no token it covers can be accepted any more: its `exp` plus the
leeway verifiers allow; `authsvc prune` deletes it after that.

A cursor names the feed's epoch, the last event id the poller has seen and a checksum of that
event. It is followed only if this database can vouch that the poller has seen everything up to
there; otherwise the answer is a resynchronisation (`resync`: every live entry from the start,
paged like any answer, ending in a fresh cursor). That happens when:
- the epoch differs: another database, or `authsvc feed reset` (run after a restore);
- prune has deleted an event above the cursor (the low-water mark): the poller may have missed it;
- the event at the cursor is not the one the poller saw: the database was restored from a dump
  older than the cursor and has since handed out that id again (or not yet reached it).
"""

from __future__ import annotations

import math
import re
import secrets
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.errors import InvalidRequest
from authsvc.store.fastlane import FastLane
from authsvc.store.revocations import (
    JTI,
    FeedIdentity,
    FeedPoll,
    RevocationEventRepository,
    poll_values,
)

PAGE_SIZE = 1000
# <epoch>.<last event id>.<checksum of that event>; 18 digits keep ids below 2**63. The
# `c<id>` form of earlier versions is still accepted (and answered with a resync: no epoch).
# The API publishes this pattern in its schema.
CURSOR_PATTERN = r"^(c[0-9]{1,18}|[0-9a-f]{16}\.[0-9]{1,18}\.[0-9a-f]{8})$"
CURSOR_MAX_LENGTH = 48
_CURSOR = re.compile(CURSOR_PATTERN)
# Cursors served while feed_state has no row (emptied by hand): no real epoch matches it.
_NO_EPOCH = "0" * 16
_START = "00000000"


@dataclass(frozen=True)
class Cursor:
    epoch: str
    position: int
    check: str


@dataclass(frozen=True)
class Revoked:
    value: str
    exp: int


@dataclass(frozen=True)
class RevocationPage:
    jtis: list[Revoked] = field(default_factory=list)
    sids: list[Revoked] = field(default_factory=list)
    cursor: str = ""
    poll_after: int = 0
    resync: bool = False


def parse_cursor(raw: str | None) -> Cursor | None:
    """Cursors are opaque to clients; None for a first poll."""
    if raw is None or raw == "":
        return None
    if _CURSOR.match(raw) is None:
        raise InvalidRequest("Invalid request: since: not a cursor from this feed")
    if "." not in raw:  # c<id>; an epoch may start with "c" too
        cursor = Cursor("", int(raw[1:]), "")
    else:
        epoch, position, check = raw.split(".")
        cursor = Cursor(epoch, int(position), check)
    if cursor.position >= 2**63:
        raise InvalidRequest("Invalid request: since: not a cursor from this feed")
    return cursor


def format_cursor(cursor: Cursor) -> str:
    return f"{cursor.epoch}.{cursor.position}.{cursor.check}"


def checksum(kind: str, value: str) -> str:
    """Tells two events with the same id apart (ids repeat only after a restore). Not a
    secret: the values are public on the feed anyway."""
    return f"{zlib.crc32(f'{kind}:{value}'.encode()):08x}"


def follows(cursor: Cursor, epoch: str, feed: FeedIdentity) -> bool:
    """Whether a poller at `cursor` has seen every event of this feed up to its position."""
    if cursor.epoch != epoch or cursor.position < feed.low_water:
        return False
    if cursor.position == 0:
        return True
    if feed.event_at_cursor is None:
        # Pruned (it is at the low-water mark), or this database never had it: restored.
        return cursor.position == feed.low_water
    return checksum(*feed.event_at_cursor) == cursor.check


def new_epoch() -> str:
    return secrets.token_hex(8)


def retention(settings: Settings) -> timedelta:
    """How long past its exp an entry is still served: a verifier may accept until exp+leeway."""
    return timedelta(seconds=settings.token_leeway_seconds)


async def changes(
    db: AsyncSession, lane: FastLane | None, settings: Settings, since: str | None, now: datetime
) -> RevocationPage:
    """Entries after the cursor (all live ones without one, or when the cursor cannot be
    followed: a resync), and the cursor to poll with next.

    One statement (store.revocations.poll_statement): the feed's identity with the event at the
    cursor, and the page after the cursor, a range of the primary key. On PostgreSQL it runs on
    the fast lane (`lane`), autocommitted: one round trip. A resync reads its first page with
    a second statement. Expired rows in the range are skipped (in the database) but still
    move the cursor. A full page means more are waiting, so the client is told to poll again
    at once.
    """
    asked = parse_cursor(since)
    live_after = now - retention(settings)

    async def poll(position: int) -> FeedPoll:
        values = poll_values(position, PAGE_SIZE, live_after)
        if lane is not None and not db.in_transaction():
            return await lane.feed_poll(values)
        return await RevocationEventRepository(db).poll(values)

    polled = await poll(asked.position if asked is not None else 0)
    feed, page = polled.identity, polled.page
    epoch = feed.epoch or _NO_EPOCH
    resync = asked is not None and not follows(asked, epoch, feed)
    start = Cursor(epoch, 0, _START) if asked is None or resync else asked
    if resync and asked is not None and asked.position != 0:
        # Whether the cursor can be followed is only known from the identity (the checksum is
        # computed here, not in SQL): the page read with it starts at the cursor, a resync's at
        # the start. Resyncs are rare (a reset, a restore, a poller pruned past).
        page = (await poll(0)).page
    jtis: list[Revoked] = []
    sids: list[Revoked] = []
    for row in page.events:
        if row.expires_at <= live_after:
            continue  # the page's last event, there for the cursor only
        entry = Revoked(row.value, math.ceil(row.expires_at.timestamp()))
        (jtis if row.kind == JTI else sids).append(entry)
    if page.events:
        # The page's last event is always among them (page_statement), live or not.
        last = page.events[-1]
        start = Cursor(epoch, last.id, checksum(last.kind, last.value))
    return RevocationPage(
        jtis=jtis,
        sids=sids,
        cursor=format_cursor(start),
        poll_after=0 if page.scanned == PAGE_SIZE else settings.revocation_poll_after,
        resync=resync,
    )


async def reset(db: AsyncSession, now: datetime) -> tuple[str | None, str]:
    """A new epoch, so that every poller's next answer is a resync (`authsvc feed reset`).
    Returns the old epoch (None if feed_state had lost its row) and the new one."""
    repo = RevocationEventRepository(db)
    old = await repo.identity(0)
    epoch = new_epoch()
    await repo.reset(epoch, now)
    return old.epoch, epoch
