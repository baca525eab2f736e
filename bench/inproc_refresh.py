"""In-process refresh (no network, no uvicorn): the app's CPU per refresh on PostgreSQL, split
into RS256 signing (measured alone, same key size) and the rest. PostgreSQL's CPU (its backends'
/proc times, 10 ms ticks) is printed beside it. Chains refreshes on 16 sessions like bench/wrk/refresh.lua does.

    .venv/bin/python bench/inproc_refresh.py [N]
"""
import asyncio, json, os, sys, tempfile, time
from pathlib import Path
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "bench"))
import uvloop
import run as bench
from tests.conftest import make_settings, PASSWORD
from authsvc.app import create_app
from authsvc.store.db import upgrade

N = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
HEADERS = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"content-type", b"application/json")]


def scope(path: str, body: bytes) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "headers": HEADERS + [(b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000), "state": {}}


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
    app = create_app(make_settings(url, tmp / "data", db_pool_size=int(os.environ.get("POOL", "10"))))
    state = app.state.authsvc
    async with app.router.lifespan_context(app):
        async with state.database.transaction() as db:
            await state.users.create(db, "bench", PASSWORD, state.clock.now(), [])
        tokens = [(await call(app, "/auth/login", {"username": "bench", "password": PASSWORD}))["refresh_token"] for _ in range(16)]

        async def chain(i: int, n: int) -> None:
            for _ in range(n):
                tokens[i] = (await call(app, "/auth/refresh", {"refresh_token": tokens[i]}))["refresh_token"]

        await asyncio.gather(*(chain(i, 20) for i in range(16)))
        best = pg_best = 1e9
        dbname = url.rsplit("/", 1)[1]
        for _ in range(3):
            pg0 = bench.pg_backends(dbname)
            t = time.process_time()
            await asyncio.gather(*(chain(i, N // 16) for i in range(16)))
            best = min(best, (time.process_time() - t) / (N // 16 * 16) * 1e3)
            pg1 = bench.pg_backends(dbname)
            pg = sum(v - pg0.get(k, 0.0) for k, v in pg1.items())
            pg_best = min(pg_best, pg / (N // 16 * 16) * 1e3)
        ring = state.keys.ring
        t = time.process_time()
        for i in range(300):
            state.auth.access.issue(ring, state.clock.now(), subject="x", session_id="y", roles=[], scope="api", client_id="authsvc", audience=None)
        sign = (time.process_time() - t) / 300 * 1e3
    print(f"refresh in process: {best:.3f} ms CPU per refresh; of it signing ~{sign:.3f} ms; the rest {best - sign:.3f} ms; PostgreSQL {pg_best:.3f} ms")


with tempfile.TemporaryDirectory() as tmp, bench.postgres_database() as url:
    upgrade(url)
    uvloop.run(main(url, Path(tmp)))
