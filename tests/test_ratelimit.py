"""Rate limits on login and refresh, and per-username backoff, on both limiter backends.

The limiter does not touch the database, so these tests run on SQLite only and are instead
parametrised over the limiter's state: process memory and Redis (127.0.0.1:6379, a random key
prefix per test, deleted afterwards).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from authsvc.app import create_app
from authsvc.clock import MovableClock
from authsvc.errors import RateLimited
from authsvc.services.ratelimit import Limits, MemoryBackend, RateLimiter, RedisBackend
from tests.conftest import PASSWORD, Harness, make_settings
from tests.live import free_port
from tests.proxy import TcpProxy

pytestmark = pytest.mark.anyio

REDIS_URL = os.environ.get("AUTHSVC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PROXY = "203.0.113.7"  # the harness's TCP peer, made a trusted proxy so tests pick addresses


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def database_url(seeded_sqlite_template: Path, tmp_path: Path) -> str:
    target = tmp_path / "authsvc.db"
    shutil.copy(seeded_sqlite_template, target)
    return f"sqlite:///{target}"


@pytest.fixture(params=["memory", "redis"])
def limiter_state(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    if request.param == "memory":
        yield {}
        return
    if not _redis_up():
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    prefix = f"authsvc-test:{secrets.token_hex(8)}:"
    yield {"redis_url": REDIS_URL, "rate_limit_key_prefix": prefix}
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


LIMITS: dict[str, Any] = {
    "rate_limit_enabled": True,
    "trusted_proxies": f"{PROXY}/32",
    "rate_limit_window_seconds": 60,
    "rate_limit_login_per_ip": 5,
    "rate_limit_refresh_per_ip": 4,
    "rate_limit_login_per_username": 4,
    "login_backoff_free_failures": 2,
    "login_backoff_base_seconds": 1,
    "login_backoff_max_seconds": 8,
    "login_failure_memory_seconds": 600,
}


@pytest.fixture
def settings_overrides(limiter_state: dict[str, Any]) -> dict[str, Any]:
    return {**LIMITS, **limiter_state}


async def login(
    harness: Harness, name: str = "alice", password: str = PASSWORD, ip: str = "198.51.100.1"
) -> httpx.Response:
    return await harness.client.post(
        "/auth/login",
        json={"username": name, "password": password},
        headers={"X-Forwarded-For": ip},
    )


def assert_limited(response: httpx.Response, most: int) -> int:
    assert response.status_code == 429, response.text
    assert response.json()["error"] == "rate_limited"
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= most
    return retry_after


async def test_login_is_limited_per_address(harness: Harness) -> None:
    await harness.create_user()
    for i in range(5):
        assert (await login(harness, f"user{i}", ip="198.51.100.1")).status_code == 401
    assert_limited(await login(harness, ip="198.51.100.1"), 60)
    # Another address is not affected, and the window passes.
    assert (await login(harness, ip="198.51.100.2")).status_code == 200
    harness.clock.advance(60)
    assert (await login(harness, ip="198.51.100.1")).status_code == 200


async def test_ipv6_addresses_share_their_64(harness: Harness) -> None:
    for i in range(5):
        r = await login(harness, f"user{i}", ip=f"2001:db8:1:2::{i + 1}")
        assert r.status_code == 401
    assert_limited(await login(harness, "x", ip="2001:db8:1:2:ffff::1"), 60)
    assert (await login(harness, "x", ip="2001:db8:1:3::1")).status_code == 401


async def test_login_is_limited_per_username_across_addresses(harness: Harness) -> None:
    await harness.create_user("bob")
    for i in range(4):
        response = await login(harness, "nobody", ip=f"198.51.100.{10 + i}")
        assert response.status_code == 401
        harness.clock.advance(10)  # past the backoff, inside the 60 s window
    # Same name in another spelling, from yet another address: still the same budget.
    assert_limited(await login(harness, "NOBODY", ip="198.51.100.99"), 20)
    assert (await login(harness, "bob", ip="198.51.100.99")).status_code == 200


async def test_backoff_grows_with_failures_is_bounded_and_reset_by_success(
    harness: Harness,
) -> None:
    await harness.create_user()
    waits = []
    for attempt in range(9):
        ip = f"198.51.100.{attempt}"  # a fresh address each time: only the name is throttled
        response = await login(harness, password="wrong password!", ip=ip)
        assert response.status_code == 401, (attempt, response.text)
        if attempt >= 2:  # two free failures, then even the right password has to wait
            waits.append(assert_limited(await login(harness, ip=ip), 8))
        harness.clock.advance(60)  # past the block and into a new per-username window
    assert waits == [1, 2, 4, 8, 8, 8, 8]
    assert (await login(harness, ip="198.51.100.200")).status_code == 200
    # The success cleared the record: the next failure is free again.
    response = await login(harness, password="wrong again!!", ip="198.51.100.201")
    assert response.status_code == 401
    assert (await login(harness, ip="198.51.100.202")).status_code == 200


async def test_failures_are_forgotten_after_a_quiet_period(harness: Harness) -> None:
    await harness.create_user()
    for i in range(3):
        await login(harness, password="wrong password!", ip=f"198.51.100.{i}")
    assert_limited(await login(harness, ip="198.51.100.50"), 8)
    harness.clock.advance(601)
    assert (await login(harness, password="wrong password!", ip="198.51.100.51")).status_code == 401
    assert (await login(harness, ip="198.51.100.52")).status_code == 200


async def test_throttled_answers_do_not_reveal_whether_the_user_exists(harness: Harness) -> None:
    await harness.create_user()
    answers = []
    for name in ("alice", "nobody"):
        for i in range(3):
            await login(harness, name, "wrong password!", ip=f"198.51.100.{i}")
        response = await login(harness, name, "wrong password!", ip="198.51.100.9")
        headers = {k: v for k, v in response.headers.items() if k != "x-request-id"}
        answers.append((response.status_code, response.json(), headers))
    assert answers[0] == answers[1]


async def test_refresh_is_limited_per_address(harness: Harness) -> None:
    await harness.create_user()
    tokens = (await login(harness)).json()
    for _ in range(4):
        response = await harness.client.post(
            "/auth/refresh",
            json={"refresh_token": tokens["refresh_token"]},
            headers={"X-Forwarded-For": "198.51.100.1"},
        )
        assert response.status_code == 200
        tokens = response.json()
    response = await harness.client.post(
        "/auth/refresh",
        json={"refresh_token": tokens["refresh_token"]},
        headers={"X-Forwarded-For": "198.51.100.1"},
    )
    assert_limited(response, 60)
    # Refused before the token was looked at: it is still unspent.
    response = await harness.client.post(
        "/auth/refresh",
        json={"refresh_token": tokens["refresh_token"]},
        headers={"X-Forwarded-For": "198.51.100.3"},
    )
    assert response.status_code == 200


async def test_untrusted_forwarded_for_is_ignored(harness: Harness) -> None:
    """Only a trusted peer's X-Forwarded-For counts: spoofing it from outside gains nothing."""
    settings = harness.state.settings.model_copy(update={"trusted_proxies": ""})
    app = create_app(settings, harness.clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("192.0.2.66", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            codes = []
            for i in range(6):
                response = await client.post(
                    "/auth/login",
                    json={"username": f"u{i}", "password": "whatever1"},
                    headers={"X-Forwarded-For": f"198.51.100.{i}"},
                )
                codes.append(response.status_code)
    assert codes == [401] * 5 + [429]


async def test_state_is_shared_between_processes_through_redis(
    harness: Harness, limiter_state: dict[str, Any]
) -> None:
    """Two app instances (each with its own limiter, as two processes have) share Redis state;
    without Redis each keeps its own."""
    await harness.create_user()
    other = create_app(harness.state.settings, harness.clock)
    async with other.router.lifespan_context(other):
        transport = httpx.ASGITransport(app=other, client=(PROXY, 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for i in range(3):
                response = await client.post(
                    "/auth/login",
                    json={"username": "alice", "password": "wrong password!"},
                    headers={"X-Forwarded-For": f"198.51.100.{i}"},
                )
                assert response.status_code == 401
    response = await login(harness, ip="198.51.100.77")
    if limiter_state:  # the failures recorded by the other app throttle this one
        assert_limited(response, 8)
    else:
        assert response.status_code == 200


@pytest.mark.parametrize("settings_overrides", [{"rate_limit_enabled": False}])
async def test_disabled_rate_limit_never_answers_429(harness: Harness) -> None:
    assert not harness.state.limiter.enabled
    codes = {(await login(harness, "nobody", ip="198.51.100.1")).status_code for _ in range(40)}
    assert codes == {401}


@pytest.fixture
def backend(limiter_state: dict[str, Any]) -> Iterator[Any]:
    if limiter_state:
        # The counting is under test, not the failure mode: on a busy machine 50 connections
        # opened at once can take longer than the production timeout, and fail open.
        yield RedisBackend(
            limiter_state["redis_url"], limiter_state["rate_limit_key_prefix"], timeout=30
        )
    else:
        yield MemoryBackend()


async def test_concurrent_hits_are_counted_exactly_once_each(backend: Any) -> None:
    """Atomic counting: 50 simultaneous requests against a limit of 20 let exactly 20 in."""
    limits = Limits(60, 20, 20, 20, 2, 1, 8, 600)
    limiter = RateLimiter(limits, backend)
    now = datetime.now(UTC)
    results = await asyncio.gather(
        *(limiter.check_address("login", "192.0.2.1", now) for _ in range(50)),
        return_exceptions=True,
    )
    await limiter.close()
    assert sum(r is None for r in results) == 20
    assert all(r is None or isinstance(r, RateLimited) for r in results)


async def test_redis_outage_fails_open(settings_overrides: dict[str, Any], tmp_path: Path) -> None:
    settings = make_settings(
        "sqlite:///unused.db",
        tmp_path,
        **{**settings_overrides, "redis_url": "redis://127.0.0.1:1/0"},
    )
    limiter = RateLimiter.from_settings(settings)
    now = datetime.now(UTC)
    for _ in range(10):
        await limiter.check_address("login", "192.0.2.1", now)
    await limiter.close()


# Redis configured but nothing listening: every store operation fails at once.
DEAD_REDIS: dict[str, Any] = {**LIMITS, "redis_url": f"redis://127.0.0.1:{free_port()}/0"}


def _limiter_errors(harness: Harness, action: str) -> float:
    value = harness.state.metrics.registry.get_sample_value(
        "authsvc_rate_limiter_errors_total", {"action": action}
    )
    return value or 0.0


@pytest.mark.parametrize("settings_overrides", [DEAD_REDIS])
async def test_redis_outage_fails_open_by_default_and_says_so(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    assert harness.state.settings.rate_limit_failure_mode == "open"
    await harness.create_user()
    # More logins than the per-address limit allows: nothing throttles them.
    for _ in range(LIMITS["rate_limit_login_per_ip"] + 2):
        assert (await login(harness)).status_code == 200
    assert _limiter_errors(harness, "allowed") > 0
    assert _limiter_errors(harness, "refused") == 0
    outage = [r for r in caplog.records if r.name == "authsvc.ratelimit"]
    assert len(outage) == 1  # once when it starts, not once per request
    assert "requests go through without rate limits" in outage[0].getMessage()
    assert "AUTHSVC_RATE_LIMIT_FAILURE_MODE=open" in outage[0].getMessage()
    ready = await harness.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert ready.json()["checks"]["rate_limiter"] == (
        "degraded: unavailable (ConnectionError), failing open"
    )


@pytest.mark.parametrize(
    "settings_overrides", [{**DEAD_REDIS, "rate_limit_failure_mode": "closed"}]
)
async def test_redis_outage_fails_closed_when_configured(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await harness.create_user()
    refused = await login(harness)
    assert refused.status_code == 503
    assert refused.json()["error"] == "service_unavailable"
    assert refused.headers["retry-after"] == "2"
    refresh = await harness.client.post("/auth/refresh", json={"refresh_token": "rt_" + "A" * 43})
    assert refresh.status_code == 503 and refresh.json()["error"] == "service_unavailable"
    assert _limiter_errors(harness, "refused") == 2
    assert _limiter_errors(harness, "allowed") == 0
    [line] = [r.getMessage() for r in caplog.records if r.name == "authsvc.ratelimit"]
    assert "requests are refused (503)" in line
    ready = await harness.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["rate_limiter"].endswith("failing closed")
    # What needs no rate limit keeps working.
    assert (await harness.client.get("/.well-known/jwks.json")).status_code == 200


@pytest.mark.parametrize("settings_overrides", [LIMITS])
async def test_readyz_has_no_rate_limiter_check_without_redis(harness: Harness) -> None:
    ready = await harness.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ok",
        "checks": {"database": "ok", "schema": "ok", "signing_key": "ok"},
    }


@pytest.mark.parametrize("settings_overrides", [LIMITS])
async def test_readyz_says_ok_when_redis_answers(harness: Harness) -> None:
    if not _redis_up():
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    limiter = RateLimiter.from_settings(
        harness.state.settings.model_copy(update={"redis_url": REDIS_URL})
    )
    try:
        assert await limiter.health() == "ok"
    finally:
        await limiter.close()


@pytest.fixture
def redis_proxy() -> Iterator[TcpProxy]:
    if not _redis_up():
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    url = urlsplit(REDIS_URL)
    proxy = TcpProxy(url.hostname or "127.0.0.1", url.port or 6379).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def settings_through_proxy(
    redis_proxy: TcpProxy, database_url: str, tmp_path: Path
) -> Iterator[Any]:
    prefix = f"authsvc-test:{secrets.token_hex(8)}:"
    yield make_settings(
        database_url,
        tmp_path / "data",
        **{
            **LIMITS,
            "redis_url": f"redis://127.0.0.1:{redis_proxy.port}/0",
            "rate_limit_key_prefix": prefix,
        },
    )
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


async def test_a_redis_outage_that_ends_is_reported_and_limits_resume(
    settings_through_proxy: Any, redis_proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    clock = MovableClock()
    app = create_app(settings_through_proxy, clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(PROXY, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            harness = Harness(client=client, state=app.state.authsvc, clock=clock)
            assert (await client.get("/readyz")).json()["checks"]["rate_limiter"] == "ok"
            redis_proxy.cut("reset")
            for i in range(3):
                assert (await login(harness, f"nobody{i}")).status_code == 401
            degraded = (await client.get("/readyz")).json()
            assert degraded["status"] == "degraded"
            redis_proxy.restore()
            for i in range(LIMITS["rate_limit_login_per_ip"]):
                assert (await login(harness, f"other{i}")).status_code == 401
            assert_limited(await login(harness, "other"), 60)  # counting again
            assert (await client.get("/readyz")).json()["checks"]["rate_limiter"] == "ok"
    lines = [r.getMessage() for r in caplog.records if r.name == "authsvc.ratelimit"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("rate limiter store unavailable")
    assert lines[1].startswith("rate limiter store available again")
    # Three logins, three checks each: the address, the name's backoff and the name's count.
    assert "9 checks were decided without it" in lines[1]
