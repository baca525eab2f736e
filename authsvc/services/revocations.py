"""The revocation feed: what resource servers poll to refuse revoked tokens without calling home.

Entries are appended by the revoking transaction itself (SessionRepository.revoke,
DenylistRepository.add), so every path that revokes (logout in every scope, refresh-token reuse,
disabling a user, setting a password) reaches the feed, and nothing reaches it that was rolled
back. An entry is served until no token it covers can be accepted any more: its `exp` plus the
leeway verifiers allow; `authsvc prune` deletes it after that.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.errors import InvalidRequest
from authsvc.store.revocations import JTI, RevocationEventRepository

PAGE_SIZE = 1000
# 18 digits keep every cursor below 2**63; the API publishes this pattern in its schema.
CURSOR_PATTERN = r"^c[0-9]{1,18}$"
_CURSOR = re.compile(r"^c([0-9]{1,18})$")


@dataclass(frozen=True)
class Revoked:
    value: str
    exp: int


@dataclass(frozen=True)
class RevocationPage:
    jtis: list[Revoked] = field(default_factory=list)
    sids: list[Revoked] = field(default_factory=list)
    cursor: str = "c0"
    poll_after: int = 0


def parse_cursor(raw: str | None) -> int:
    """Cursors are opaque to clients; today `c<last event id>`."""
    if raw is None or raw == "":
        return 0
    match = _CURSOR.match(raw)
    if match is None or int(match.group(1)) >= 2**63:
        raise InvalidRequest("Invalid request: since: not a cursor from this feed")
    return int(match.group(1))


def format_cursor(position: int) -> str:
    return f"c{position}"


def retention(settings: Settings) -> timedelta:
    """How long past its exp an entry is still served: a verifier may accept until exp+leeway."""
    return timedelta(seconds=settings.token_leeway_seconds)


async def changes(
    db: AsyncSession, settings: Settings, since: str | None, now: datetime
) -> RevocationPage:
    """Entries after the cursor (all live ones without one), and the cursor to poll with next.

    One indexed range query. Expired rows in the range are skipped (in the database) but still
    move the cursor.
    A full page means more are waiting, so the client is told to poll again at once.
    """
    position = parse_cursor(since)
    live_after = now - retention(settings)
    page = await RevocationEventRepository(db).page(position, PAGE_SIZE, live_after)
    jtis: list[Revoked] = []
    sids: list[Revoked] = []
    for row in page.events:
        if row.expires_at <= live_after:
            continue  # the page's last event, there for the cursor only
        entry = Revoked(row.value, math.ceil(row.expires_at.timestamp()))
        (jtis if row.kind == JTI else sids).append(entry)
    return RevocationPage(
        jtis=jtis,
        sids=sids,
        cursor=format_cursor(position if page.last_id is None else page.last_id),
        poll_after=0 if page.scanned == PAGE_SIZE else settings.revocation_poll_after,
    )
