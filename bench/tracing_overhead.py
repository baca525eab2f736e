"""Tracing's cost, in process (no network): CPU us per request of GET /healthz (no database)
and GET /auth/me (a token check and a session read) with tracing off, off again (a second app:
the noise), and on (the OpenTelemetry SDK with a batch processor and an exporter that drops the
spans, so the figure is the instrumentation's, not the network's). Prints each as a ratio to
"off", measured in interleaved rounds in the same run.

Usage: .venv/bin/python bench/tracing_overhead.py [N]   (needs the [tracing] extra)
"""

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.conftest
for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
    os.environ.pop(name, None)  # "off" means off

import httpx  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import (  # noqa: E402
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from authsvc.app import create_app  # noqa: E402
from authsvc.store.db import upgrade  # noqa: E402
from tests.conftest import PASSWORD, make_settings  # noqa: E402

ROUNDS = 5


class Drop(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS


PATHS = ("/healthz", "/auth/me")
HEADERS = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench")]


def scope(path):
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "headers": HEADERS, "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000), "state": {}}  # fmt: skip


async def sign_in(app):
    """A user and an access token, so /auth/me answers 200 (every app shares the database)."""
    state = app.state.authsvc
    async with state.database.transaction() as db:
        await state.users.create(db, "bench", PASSWORD, state.clock.now(), [])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        r = await client.post("/auth/login", json={"username": "bench", "password": PASSWORD})
    HEADERS.append((b"authorization", b"Bearer " + r.json()["access_token"].encode()))


async def receive():
    return {"type": "http.request", "body": b"", "more_body": False}


async def cpu_us(app, path, n):
    statuses = []

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    started = time.process_time()
    for _ in range(n):
        await app(scope(path), receive, send)
    elapsed = time.process_time() - started
    assert set(statuses) == {200}, statuses[:3]
    return elapsed / n * 1e6


async def main(tmp, url):
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    apps = {
        "off": create_app(make_settings(url, tmp / "data")),
        "off again": create_app(make_settings(url, tmp / "data")),
        "on": create_app(make_settings(url, tmp / "data"), tracer_provider=provider),
    }
    best = {(name, path): 1e9 for name in apps for path in PATHS}
    contexts = [app.router.lifespan_context(app) for app in apps.values()]
    for context in contexts:
        await context.__aenter__()
    try:
        await sign_in(apps["off"])
        for app in apps.values():  # warm up
            for path in PATHS:
                await cpu_us(app, path, 200)
        for _ in range(ROUNDS):
            for name, app in apps.items():
                for path in PATHS:
                    best[name, path] = min(best[name, path], await cpu_us(app, path, n))
    finally:
        for context in reversed(contexts):
            await context.__aexit__(None, None, None)
        provider.shutdown()
    print(f"CPU us per request, best of {ROUNDS} interleaved rounds of {n}:")
    print(f"{'':10} {PATHS[0]:>18} {PATHS[1]:>18}")
    for name in apps:
        cells = []
        for path in PATHS:
            us = best[name, path]
            cells.append(f"{us:8.1f} ({us / best['off', path]:.2f}x)")
        print(f"{name:10} {cells[0]:>18} {cells[1]:>18}")


if __name__ == "__main__":
    TMP = Path(tempfile.mkdtemp())
    URL = f"sqlite:///{TMP / 'a.db'}"
    upgrade(URL)  # before the loop: migrations run their own
    asyncio.run(main(TMP, URL))
