"""Does a burst of revocation-feed polls slow the other users of the fast lane? In process on
PostgreSQL (no network, no uvicorn): concurrent GET /auth/me loops (an access check each, on
the fast lane like the poll) measured alone and beside concurrent up-to-date polls, with the
lane as it is (polls capped at half its pool, AUTHSVC_DB_POOL_SIZE) and, as the baseline in the
same run, with polls free to take every connection. Rounds alternate; the best round of each
counts. Also reported: the most statements the lane had in flight at once (sampled every
millisecond; a statement waiting for a connection counts).

    .venv/bin/python bench/inproc_lane_share.py [REQUESTS_PER_ROUND]
"""

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.conftest

import uvloop  # noqa: E402
from runner.asgi import call  # noqa: E402
from runner.servers import postgres_database  # noqa: E402

from authsvc.app import create_app  # noqa: E402
from authsvc.store.db import upgrade  # noqa: E402
from tests.conftest import PASSWORD, make_settings  # noqa: E402

REQUESTS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000  # /auth/me per round
CLIENTS = 4  # concurrent /auth/me loops
POLLERS = (0, 8, 32)  # concurrent poll loops beside them
ROUNDS = 3


async def round_(app: Any, lane: Any, token: str, since: str, pollers: int) -> dict[str, float]:
    done = False
    polls = 0
    peak = 0
    latencies: list[float] = []

    async def client() -> None:
        for _ in range(REQUESTS // CLIENTS):
            start = time.perf_counter()
            await call(app, "/auth/me", token=token)
            latencies.append(time.perf_counter() - start)

    async def poller() -> None:
        nonlocal polls
        while not done:
            await call(app, "/auth/revocations", since)
            polls += 1

    async def sampler() -> None:
        nonlocal peak
        while not done:
            peak = max(peak, lane._in_use)
            await asyncio.sleep(0.001)

    background = [asyncio.create_task(poller()) for _ in range(pollers)]
    background.append(asyncio.create_task(sampler()))
    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    wall = time.perf_counter() - start
    done = True
    await asyncio.gather(*background)
    latencies.sort()
    return {
        "p50": statistics.median(latencies) * 1e3,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1e3,
        "me_per_s": len(latencies) / wall,
        "polls_per_s": polls / wall,
        "peak": float(peak),
    }


async def main(url: str, tmp: Path) -> None:
    app = create_app(make_settings(url, tmp / "data"))
    state = app.state.authsvc
    lane = state.database.fast_lane
    slots = {
        "polls capped": lane._poll_slots,  # at half the pool: the lane as it is
        "uncapped": asyncio.Semaphore(10_000),  # the baseline: polls may take every connection
    }
    results: dict[tuple[str, int], dict[str, float]] = {}
    async with app.router.lifespan_context(app):
        async with state.database.transaction() as db:
            await state.users.create(db, "alice", PASSWORD, state.clock.now(), [])
        login = json.dumps({"username": "alice", "password": PASSWORD}).encode()
        token = json.loads(await call(app, "/auth/login", body=login))["access_token"]
        since = "since=" + json.loads(await call(app, "/auth/revocations"))["cursor"]
        for slot in slots.values():  # warm both variants and the lane's pool
            lane._poll_slots = slot
            await round_(app, lane, token, since, POLLERS[-1])
        for _ in range(ROUNDS):  # alternating, so the machine's other load falls on all alike
            for variant, slot in slots.items():
                lane._poll_slots = slot
                for pollers in POLLERS:
                    r = await round_(app, lane, token, since, pollers)
                    best = results.get((variant, pollers))
                    if best is None or r["p99"] < best["p99"]:
                        results[(variant, pollers)] = r
        lane._poll_slots = slots["polls capped"]
    pool = state.settings.db_pool_size
    print(f"PostgreSQL, in process, lane pool {pool}: {CLIENTS} concurrent /auth/me loops, "
          f"{REQUESTS} requests per round, best of {ROUNDS} rounds (by p99)")  # fmt: skip
    print(f"{'variant':13} {'pollers':>7} {'/auth/me p50':>12} {'p99 ms':>7} {'/auth/me/s':>10} "
          f"{'polls/s':>7} {'in flight':>9}   vs uncapped: {'p99':>6} {'/auth/me/s':>10} "
          f"{'polls/s':>7}")  # fmt: skip
    for (variant, pollers), r in results.items():
        base = results[("uncapped", pollers)]
        print(f"{variant:13} {pollers:7d} {r['p50']:12.3f} {r['p99']:7.3f} {r['me_per_s']:10.0f} "
              f"{r['polls_per_s']:7.0f} {r['peak']:9.0f}   {'':13}"
              f"{base['p99'] / r['p99']:5.2f}x {r['me_per_s'] / base['me_per_s']:9.2f}x "
              f"{r['polls_per_s'] / base['polls_per_s'] if pollers else 1:6.2f}x")  # fmt: skip


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp, postgres_database() as url:
        upgrade(url)
        uvloop.run(main(url, Path(tmp)))
