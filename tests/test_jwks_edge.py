"""JWKSEdge: plain JWKS requests answered at the edge of the stack, with the stack's answer."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from authsvc.api.jwks_edge import JWKSEdge
from authsvc.app import create_app
from authsvc.clock import MovableClock
from authsvc.config import Settings
from authsvc.observability.logs import JsonFormatter
from authsvc.state import AppState


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """Request handling, not storage, is under test here: SQLite alone."""
    return sqlite_url


pytestmark = pytest.mark.anyio

JWKS = "/.well-known/jwks.json"
CORS = {"cors_origins": "https://app.example"}


class Counting:
    """Passes requests on to the rest of the stack and counts them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        await self.app(scope, receive, send)


@dataclass
class Apps:
    edge: httpx.AsyncClient  # the app as create_app builds it
    stack: httpx.AsyncClient  # the same app without JWKSEdge: the answer as it was before it
    below_edge: Counting  # what JWKSEdge passed on
    state: AppState
    clock: MovableClock

    async def get(self, path: str = JWKS, **kwargs: Any) -> httpx.Response:
        return await self.edge.get(path, **kwargs)


@pytest.fixture
async def apps(settings: Settings, clock: MovableClock) -> AsyncIterator[Apps]:
    app = create_app(settings, clock)
    full = app.user_middleware
    app.user_middleware = [m for m in full if m.cls is not JWKSEdge]  # type: ignore[comparison-overlap]
    without_edge = app.build_middleware_stack()
    app.user_middleware = full
    app.middleware_stack = app.build_middleware_stack()
    edge = app.middleware_stack
    while not isinstance(edge, JWKSEdge):  # inside the framework's own outer layers
        edge = edge.app  # type: ignore[attr-defined]
    below = edge.app = Counting(edge.app)
    async with app.router.lifespan_context(app):
        client = ("203.0.113.7", 50000)
        with_edge = httpx.ASGITransport(app=app, client=client)

        async def before_edge(scope: Scope, receive: Receive, send: Send) -> None:
            scope["app"] = app  # as Starlette's __call__ does
            await without_edge(scope, receive, send)

        plain = httpx.ASGITransport(app=before_edge, client=client)
        async with (
            httpx.AsyncClient(transport=with_edge, base_url="http://testserver") as a,
            httpx.AsyncClient(transport=plain, base_url="http://testserver") as b,
        ):
            # The first request renders the document (in the route); later ones find it cached.
            assert (await a.get(JWKS)).status_code == 200
            below.calls = 0
            yield Apps(a, b, below, app.state.authsvc, clock)


@pytest.mark.parametrize("settings_overrides", [{}, CORS], ids=["no-cors", "cors"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_edge_answer_is_the_stacks_answer(apps: Apps, method: str) -> None:
    request_id = {"X-Request-ID": "same-id-for-both"}
    edge = await apps.edge.request(method, JWKS, headers=request_id)
    assert apps.below_edge.calls == 0  # answered at the edge
    stack = await apps.stack.request(method, JWKS, headers=request_id)
    assert edge.status_code == stack.status_code == 200
    assert edge.headers.raw == stack.headers.raw  # the same headers, in the same order
    assert edge.content == stack.content
    if method == "HEAD":
        # RFC 9110 section 9.3.2: no body, GET's Content-Length.
        document = await apps.get()
        assert edge.content == b""
        assert int(edge.headers["content-length"]) == len(document.content) > 0


async def test_edge_makes_a_request_id_when_none_is_given(apps: Apps) -> None:
    first, second = await apps.get(), await apps.get()
    assert apps.below_edge.calls == 0
    ids = {first.headers["x-request-id"], second.headers["x-request-id"]}
    assert len(ids) == 2 and all(len(i) == 32 for i in ids)
    hostile = await apps.get(headers={"X-Request-ID": "a b{}"})
    assert len(hostile.headers["x-request-id"]) == 32


async def _chunks() -> AsyncIterator[bytes]:
    yield b"{}"


NOT_PLAIN: dict[str, Callable[[], dict[str, Any]]] = {
    "origin": lambda: {"headers": {"Origin": "https://app.example"}},
    "body": lambda: {"content": b"{}"},
    "chunked-body": lambda: {"content": _chunks()},
    "oversized-headers": lambda: {"headers": {"X-Junk": "a" * 20_000}},
}


@pytest.mark.parametrize("case", NOT_PLAIN)
async def test_requests_that_are_not_plain_go_down_the_stack(apps: Apps, case: str) -> None:
    edge = await apps.edge.request("GET", JWKS, **NOT_PLAIN[case]())
    assert apps.below_edge.calls == 1
    stack = await apps.stack.request("GET", JWKS, **NOT_PLAIN[case]())
    assert edge.status_code == stack.status_code
    assert edge.content == stack.content


async def test_oversized_headers_still_get_431(apps: Apps) -> None:
    limit = apps.state.settings.max_header_bytes
    response = await apps.get(headers={"X-Junk": "a" * limit})
    assert response.status_code == 431
    assert response.json()["error"] == "headers_too_large"


async def test_other_paths_and_methods_go_down_the_stack(apps: Apps) -> None:
    assert (await apps.edge.post(JWKS)).status_code == 405
    assert (await apps.get("/healthz")).status_code == 200
    assert (await apps.get(JWKS + "/")).status_code == 404  # no slash redirects
    assert apps.below_edge.calls == 3


async def test_edge_serves_the_new_document_after_rotation(apps: Apps) -> None:
    before = {k["kid"] for k in (await apps.get()).json()["keys"]}
    async with apps.state.database.transaction() as db:
        new = await apps.state.keys.rotate(db, apps.state.clock.now())
    # The rotation replaced the ring: the route renders the new document once...
    first = {k["kid"] for k in (await apps.get()).json()["keys"]}
    assert apps.below_edge.calls == 1
    # ...and the edge serves it from then on.
    second = {k["kid"] for k in (await apps.get()).json()["keys"]}
    assert apps.below_edge.calls == 1
    assert first == second == before | {new.kid}


async def test_edge_goes_down_the_stack_when_the_ring_is_due_for_a_reload(apps: Apps) -> None:
    apps.clock.advance(apps.state.settings.key_reload_interval + 1)
    assert (await apps.get()).status_code == 200
    assert apps.below_edge.calls == 1  # the route reloaded the ring
    assert (await apps.get()).status_code == 200
    assert apps.below_edge.calls == 1


async def test_edge_answers_are_counted_and_logged(
    apps: Apps, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="authsvc.access")
    registry = apps.state.metrics.registry

    def count(name: str, method: str) -> float:
        labels = {"route": JWKS, "method": method, "status": "200"}
        return registry.get_sample_value(name, labels) or 0.0

    requests, durations = (
        "authsvc_http_requests_total",
        "authsvc_http_request_duration_seconds_count",
    )
    before = [count(requests, "GET"), count(durations, "GET"), count(requests, "HEAD")]
    await apps.get(headers={"X-Request-ID": "edge-1"})
    head = await apps.edge.head(JWKS)
    assert apps.below_edge.calls == 0
    after = [count(requests, "GET"), count(durations, "GET"), count(requests, "HEAD")]
    assert after == [b + 1 for b in before]
    lines = [
        json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "authsvc.access"
    ]
    assert [(x["request_id"], x["method"], x["path"], x["route"], x["status"]) for x in lines] == [
        ("edge-1", "GET", JWKS, JWKS, 200),
        (head.headers["x-request-id"], "HEAD", JWKS, JWKS, 200),
    ]
    assert lines[0]["client"] == "203.0.113.7" and lines[0]["duration_ms"] >= 0
