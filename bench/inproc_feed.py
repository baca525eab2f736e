"""In-process revocation-feed polls on PostgreSQL (no network, no uvicorn): GET /auth/revocations
through the app as it is (one statement on the fast lane), the same statement in the request's
session, and the two-statement poll (the feed's identity, then the page, in the session), kept
here as the baseline; and GET /healthz (the HTTP stack alone); alternating round by round in one
run. Per poll: wall time with one poller at a time, the process's CPU, and its
PostgreSQL backends' CPU (/proc times, 10 ms ticks: summed over a round).

    .venv/bin/python bench/inproc_feed.py [POLLS_PER_ROUND]
"""

import json
import math
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.conftest

import uvloop  # noqa: E402
from runner.asgi import call  # noqa: E402
from runner.load import pg_backends  # noqa: E402
from runner.servers import postgres_database  # noqa: E402
from sqlalchemy import insert  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncSession  # noqa: E402

from authsvc.app import create_app  # noqa: E402
from authsvc.config import Settings  # noqa: E402
from authsvc.services import revocations  # noqa: E402
from authsvc.services.revocations import (  # noqa: E402
    _NO_EPOCH,
    _START,
    JTI,
    PAGE_SIZE,
    Cursor,
    RevocationPage,
    Revoked,
    checksum,
    follows,
    format_cursor,
    parse_cursor,
    retention,
)
from authsvc.store.db import upgrade  # noqa: E402
from authsvc.store.models import RevocationEvent  # noqa: E402
from authsvc.store.revocations import (  # noqa: E402
    FeedEvent,
    FeedPage,
    RevocationEventRepository,
    page_statement,
)
from tests.conftest import make_settings  # noqa: E402

POLLS = int(sys.argv[1]) if len(sys.argv) > 1 else 200  # per round and variant
ROUNDS = 4  # the best round of each counts: the machine's other load only ever adds
EXPIRED, LIVE = 5000, 100  # events in the feed: most expired, the last few minutes' live


async def two_statement_changes(
    db: AsyncSession, lane: Any, settings: Settings, since: str | None, now: datetime
) -> RevocationPage:
    """The poll as it was before it became one statement: identity, then the page, each its
    own round trip in the request's session (BEGIN and ROLLBACK around them)."""
    asked = parse_cursor(since)
    repo = RevocationEventRepository(db)
    feed = await repo.identity(asked.position if asked is not None else 0)
    epoch = feed.epoch or _NO_EPOCH
    resync = asked is not None and not follows(asked, epoch, feed)
    start = Cursor(epoch, 0, _START) if asked is None or resync else asked
    live_after = now - retention(settings)
    values = {"fd_cursor": start.position, "fd_limit": PAGE_SIZE, "fd_live_after": live_after}
    rows = (await db.execute(page_statement(), values)).all()
    page = (
        FeedPage(
            [FeedEvent(r.id, r.kind, r.value, r.expires_at) for r in rows],
            int(rows[0].page_rows),
            int(rows[0].page_last),
        )
        if rows
        else FeedPage([], 0, None)
    )
    jtis: list[Revoked] = []
    sids: list[Revoked] = []
    for row in page.events:
        if row.expires_at <= live_after:
            continue
        entry = Revoked(row.value, math.ceil(row.expires_at.timestamp()))
        (jtis if row.kind == JTI else sids).append(entry)
    if page.events:
        last = page.events[-1]
        start = Cursor(epoch, last.id, checksum(last.kind, last.value))
    return RevocationPage(jtis, sids, format_cursor(start),
                          0 if page.scanned == PAGE_SIZE else settings.revocation_poll_after,
                          resync)  # fmt: skip


async def get(app: Any, path: str, query: str = "") -> bytes:
    return await call(app, path, query)


async def main(url: str, tmp: Path) -> None:
    settings = make_settings(url, tmp / "data")
    app = create_app(settings)
    state = app.state.authsvc
    one_statement = revocations.changes
    async with app.router.lifespan_context(app):
        now = state.clock.now()
        rows = [
            {
                "kind": JTI if i % 2 else "sid",
                "value": f"bench-{i:08d}",
                "expires_at": now + timedelta(minutes=5) - timedelta(days=1) * (i < EXPIRED),
                "created_at": now,
            }
            for i in range(EXPIRED + LIVE)
        ]
        async with state.database.transaction() as db:
            await db.execute(insert(RevocationEvent), rows)
        first = json.loads(await get(app, "/auth/revocations"))
        assert len(first["revoked_jtis"]) + len(first["revoked_sids"]) == LIVE
        up_to_date = f"since={first['cursor']}"
        scenarios = {
            "up to date (empty page)": ("/auth/revocations", up_to_date),
            f"first poll ({LIVE} live of {EXPIRED + LIVE})": ("/auth/revocations", ""),
        }

        async def one_statement_in_session(
            db: AsyncSession, lane: Any, settings: Settings, since: str | None, now: datetime
        ) -> RevocationPage:
            return await one_statement(db, None, settings, since, now)

        variants = {
            "one statement": one_statement,
            "one, session": one_statement_in_session,  # what the merge alone gives
            "two statements": two_statement_changes,
        }
        dbname = url.rsplit("/", 1)[1]
        results: dict[tuple[str, str], list[float]] = {}

        async def measure(key: tuple[str, str], path: str, query: str) -> None:
            pg0, cpu0, t0 = pg_backends(dbname), time.process_time(), time.perf_counter()
            for _ in range(POLLS):
                await get(app, path, query)
            wall = (time.perf_counter() - t0) / POLLS * 1e3
            cpu = (time.process_time() - cpu0) / POLLS * 1e3
            pg1 = pg_backends(dbname)
            pg = sum(v - pg0.get(k, 0.0) for k, v in pg1.items()) / POLLS * 1e3
            best = results.setdefault(key, [1e9, 1e9, 1e9])
            results[key] = [min(a, b) for a, b in zip(best, (wall, cpu, pg), strict=True)]

        for path, query in scenarios.values():  # warm both paths and pools
            for changes in variants.values():
                revocations.changes = changes  # type: ignore[assignment]
                for _ in range(50):
                    await get(app, path, query)
        for _ in range(ROUNDS):  # alternating, so the machine's other load falls on all alike
            await measure(("/healthz", "-"), "/healthz", "")
            for name, (path, query) in scenarios.items():
                for variant, changes in variants.items():
                    revocations.changes = changes  # type: ignore[assignment]
                    await measure((name, variant), path, query)
        revocations.changes = one_statement  # type: ignore[assignment]
    health = results[("/healthz", "-")]
    print(f"PostgreSQL, in process, {POLLS} polls per round, best of {ROUNDS} rounds")
    print(f"{'poll':32} {'variant':15} {'ms/poll':>8} {'CPU ms':>7} {'PG CPU ms':>9}  "
          f"{'two:one wall':>12} {'two:one CPU+PG':>14} {'wall vs /healthz':>16}")  # fmt: skip
    print(f"{'/healthz':32} {'-':15} {health[0]:8.3f} {health[1]:7.3f} {health[2]:9.3f}")
    for name in scenarios:
        one, two = results[(name, "one statement")], results[(name, "two statements")]
        session = results[(name, "one, session")]
        for variant, r in (("one statement", one), ("one, session", session),
                           ("two statements", two)):  # fmt: skip
            wall = f"{two[0] / r[0]:.2f}x" if r is not two else ""
            cpu = f"{(two[1] + two[2]) / (r[1] + r[2]):.2f}x" if r is not two else ""
            print(f"{name:32} {variant:15} {r[0]:8.3f} {r[1]:7.3f} {r[2]:9.3f}  "
                  f"{wall:>12} {cpu:>14} {r[0] / health[0]:15.2f}x")  # fmt: skip


with tempfile.TemporaryDirectory() as tmp, postgres_database() as url:
    upgrade(url)
    uvloop.run(main(url, Path(tmp)))
