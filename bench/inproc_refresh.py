"""In-process refresh (no network, no uvicorn): the app's CPU per refresh on PostgreSQL against
the refresh floor (bench/floor_app.py), alternating, beside RS256 signing measured alone.
PostgreSQL's CPU (its backends' /proc times, 10 ms ticks) is printed beside it. Chains refreshes
on 16 sessions like bench/wrk/refresh.lua does.

    .venv/bin/python bench/inproc_refresh.py [N]
"""

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.conftest

import uvloop  # noqa: E402
from runner.load import pg_backends  # noqa: E402
from runner.servers import postgres_database  # noqa: E402

from authsvc.app import create_app  # noqa: E402
from authsvc.store.db import upgrade  # noqa: E402
from tests.conftest import PASSWORD, TEST_KEK, make_settings  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 800  # refreshes per round, 16 chains
ROUNDS = 8  # the best round of each counts: the machine's other load only ever adds
HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"wrk"),
    (b"content-type", b"application/json"),
]


def scope(path: str, body: bytes) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "headers": [*HEADERS, (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000), "state": {}}  # fmt: skip


async def call(app, path: str, payload: dict) -> dict:
    body = json.dumps(payload).encode()
    out: list[bytes] = []
    status = 0

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(m):
        nonlocal status
        if m["type"] == "http.response.start":
            status = m["status"]
        elif m["type"] == "http.response.body":
            out.append(m.get("body", b""))

    await app(scope(path, body), receive, send)
    assert status == 200, (status, out)
    return json.loads(b"".join(out))


async def main(url: str, tmp: Path) -> None:
    settings = make_settings(url, tmp / "data", db_pool_size=int(os.environ.get("POOL", "10")))
    app = create_app(settings)
    state = app.state.authsvc
    # The floor (bench/floor_app.py) reads its settings from the environment: the same ones.
    os.environ.update(
        AUTHSVC_DATABASE_URL=url,
        AUTHSVC_KEY_ENCRYPTION_KEY=TEST_KEK,
        AUTHSVC_DATA_DIR=str(tmp / "data"),
        AUTHSVC_ISSUER=settings.issuer,
        AUTHSVC_AUDIENCE=settings.audience,
    )
    import floor_app

    floor = floor_app.app
    async with app.router.lifespan_context(app), floor.router.lifespan_context(floor):
        async with state.database.transaction() as db:
            await state.users.create(db, "bench", PASSWORD, state.clock.now(), [])
        chains = {}
        for name in ("authsvc", "floor"):
            login = {"username": "bench", "password": PASSWORD}
            chains[name] = [
                (await call(app, "/auth/login", login))["refresh_token"] for _ in range(16)
            ]
        targets = {"authsvc": (app, "/auth/refresh"), "floor": (floor_app.app, "/refresh")}

        async def chain(name: str, i: int, n: int) -> None:
            target, path = targets[name]
            tokens = chains[name]
            for _ in range(n):
                answer = await call(target, path, {"refresh_token": tokens[i]})
                tokens[i] = answer["refresh_token"]

        dbname = url.rsplit("/", 1)[1]
        best = {"authsvc": 1e9, "floor": 1e9}
        pg_best = dict(best)
        for name in best:
            await asyncio.gather(*(chain(name, i, 20) for i in range(16)))
        for _ in range(ROUNDS):
            for name in best:  # alternating, so the machine's other load falls on both alike
                pg0 = pg_backends(dbname)
                t = time.process_time()
                await asyncio.gather(*(chain(name, i, N // 16) for i in range(16)))
                best[name] = min(best[name], (time.process_time() - t) / (N // 16 * 16) * 1e3)
                pg1 = pg_backends(dbname)
                pg = sum(v - pg0.get(k, 0.0) for k, v in pg1.items())
                pg_best[name] = min(pg_best[name], pg / (N // 16 * 16) * 1e3)
        ring = state.keys.ring
        t = time.process_time()
        for _ in range(300):
            state.issuer.access.issue(
                ring,
                state.clock.now(),
                subject="x",
                session_id="y",
                roles=[],
                scope="api",
                client_id="authsvc",
                audience=None,
            )
        sign = (time.process_time() - t) / 300 * 1e3
    for name in best:
        print(
            f"{name:8} refresh in process: {best[name]:.3f} ms CPU per refresh (signing alone "
            f"~{sign:.3f} ms; the rest {best[name] - sign:.3f} ms); "
            f"PostgreSQL {pg_best[name]:.3f} ms"
        )


with tempfile.TemporaryDirectory() as tmp, postgres_database() as url:
    upgrade(url)
    uvloop.run(main(url, Path(tmp)))
