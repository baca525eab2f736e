"""In-process ASGI loop (no network): CPU us per request of authsvc JWKS (answered by
JWKSEdge), of the same through the whole stack without it, of each of our middlewares, and of
bench/hello_app.py. Usage: .venv/bin/python bench/inproc_jwks.py [N]
"""

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.conftest
os.environ.setdefault("BENCH_STATIC_BYTES", "462")

import hello_app  # noqa: E402 - reads BENCH_STATIC_BYTES at import
import uvloop  # noqa: E402

from authsvc.app import create_app  # noqa: E402
from authsvc.store.db import upgrade  # noqa: E402
from tests.conftest import make_settings  # noqa: E402


def scope(path):
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk")],
            "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000), "state": {}}  # fmt: skip


async def receive():
    return {"type": "http.request", "body": b"", "more_body": False}


async def loop_app(app, path, n):
    out = []

    async def send(m):
        out.append(m)

    for _ in range(200):
        await app(scope(path), receive, send)
    assert out[0]["status"] == 200, out[:2]
    best = 1e9
    for _ in range(5):
        t = time.process_time()
        for _ in range(n):
            await app(scope(path), receive, send)
        out.clear()
        best = min(best, (time.process_time() - t) / n * 1e6)
    return best


TMP = Path(tempfile.mkdtemp())
URL = f"sqlite:///{TMP / 'a.db'}"
upgrade(URL)


async def main():
    tmp, url = TMP, URL
    app = create_app(make_settings(url, tmp / "data"))
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    async with app.router.lifespan_context(app):
        a = await loop_app(app, "/.well-known/jwks.json", n)
        app.middleware_stack = None
        h = await loop_app(hello_app.app, "/hello", n)
        s = await loop_app(hello_app.app, "/static", n)
        # layers: build app without our middlewares
        um = app.user_middleware[:]
        res = {}
        app.user_middleware = []
        app.middleware_stack = app.build_middleware_stack()
        res["none"] = await loop_app(app, "/.well-known/jwks.json", n)
        app.user_middleware = [m for m in um if m.cls.__name__ != "JWKSEdge"]
        app.middleware_stack = app.build_middleware_stack()
        res["stack"] = await loop_app(app, "/.well-known/jwks.json", n)
        for name in ("RequestObserver", "HttpGuard", "BodySizeLimit"):
            app.user_middleware = [m for m in um if m.cls.__name__ == name]
            app.middleware_stack = app.build_middleware_stack()
            res[name] = await loop_app(app, "/.well-known/jwks.json", n) - res["none"]
        app.user_middleware = um
        app.middleware_stack = app.build_middleware_stack()
    print(
        f"jwks {a:.1f} us  hello {h:.1f}  static {s:.1f}  ratio hello/jwks {h / a:.2f}  "
        f"static/jwks {s / a:.2f}"
    )
    print(
        f"jwks through the whole stack (no JWKSEdge) {res['stack']:.1f} us  "
        f"ratio hello/stack {h / res['stack']:.2f}"
    )
    added = {k: round(v, 1) for k, v in res.items() if k not in ("none", "stack")}
    print(f"jwks w/o our middleware {res['none']:.1f} us; added by: {added}")


uvloop.run(main())
