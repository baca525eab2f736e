"""authsvc.verifier against the real authsvc app (in-process over ASGI): verification pins,
the JWKS cache, revocation polling, the verified-token cache, the FastAPI dependency and the
ASGI middleware."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from fastapi import Depends, FastAPI, Request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authsvc.app import create_app
from authsvc.clock import MovableClock
from authsvc.config import Settings
from authsvc.security.keys import generate_private_key
from authsvc.verifier import AccessClaims, TokenError, Verifier, VerifierMiddleware
from tests.conftest import PASSWORD


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """Request handling, not storage, is under test here: SQLite alone."""
    return sqlite_url


pytestmark = pytest.mark.anyio


class Switch(httpx.AsyncBaseTransport):
    """The network between the resource server and authsvc, which a test can cut."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.down = False
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if self.down:
            raise httpx.ConnectError("authsvc unreachable", request=request)
        return await self.inner.handle_async_request(request)


@dataclass
class World:
    client: httpx.AsyncClient
    clock: MovableClock
    net: Switch
    settings: Settings
    app: FastAPI

    def verifier(self, **overrides: Any) -> Verifier:
        values: dict[str, Any] = {
            "issuer": "https://auth.test",
            "audience": "api.test",
            "http_client": self.client,
            "clock": lambda: self.clock.now().timestamp(),
            "kid_refetch_interval": 30.0,
        }
        values.update(overrides)
        return Verifier(**values)

    async def login(self, name: str = "alice") -> dict[str, Any]:
        response = await self.client.post(
            "https://auth.test/auth/login", json={"username": name, "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def logout(self, access: str, scope: str = "local") -> None:
        response = await self.client.post(
            "https://auth.test/auth/logout",
            json={"scope": scope},
            headers={"Authorization": f"Bearer {access}"},
        )
        assert response.status_code == 204

    def sign(self, payload: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
        key = self.app.state.authsvc.keys.ring.signing_key(self.clock.now())
        hdr = {"kid": key.kid, "typ": "at+jwt", **(headers or {})}
        return jwt.encode(payload, key.private, algorithm="RS256", headers=hdr)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(self.clock.now().timestamp())
        base = {
            "iss": "https://auth.test",
            "sub": str(uuid.uuid4()),
            "aud": "api.test",
            "exp": now + 60,
            "iat": now,
            "nbf": now,
            "jti": uuid.uuid4().hex,
            "sid": str(uuid.uuid4()),
            "scope": "api",
            "roles": [],
        }
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not None}


@pytest.fixture
async def world(settings: Settings, clock: MovableClock) -> AsyncIterator[World]:
    app = create_app(settings, clock)
    async with app.router.lifespan_context(app):
        net = Switch(httpx.ASGITransport(app=app))
        async with httpx.AsyncClient(transport=net) as client:
            state = app.state.authsvc
            async with state.database.transaction() as db:
                await state.users.create(db, "alice", PASSWORD, clock.now(), ["admin"])
            yield World(client, clock, net, settings, app)


async def test_verifies_a_login_token_and_returns_typed_claims(world: World) -> None:
    tokens = await world.login()
    async with world.verifier() as verifier:
        claims = await verifier.verify(tokens["access_token"])
    assert isinstance(claims, AccessClaims)
    assert claims.iss == "https://auth.test" and claims.aud == ("api.test",)
    assert claims.scopes == frozenset({"api"}) and claims.roles == ("admin",)
    assert uuid.UUID(claims.sid) and claims.exp == claims.iat + 300


async def test_a_repeated_token_skips_the_rsa_check(world: World) -> None:
    tokens = await world.login()
    async with world.verifier() as verifier:
        first = await verifier.verify(tokens["access_token"])
        for _ in range(5):
            assert await verifier.verify(tokens["access_token"]) == first
    assert verifier.stats.signature_checks == 1
    assert verifier.stats.cache_hits == 5


async def test_logout_is_enforced_after_one_poll_even_for_a_cached_token(world: World) -> None:
    tokens = await world.login()
    sibling = await world.login()
    async with world.verifier() as verifier:
        await verifier.verify(tokens["access_token"])
        await world.logout(tokens["access_token"])
        assert await verifier.verify(tokens["access_token"])  # not polled yet
        assert await verifier.sync()
        with pytest.raises(TokenError):
            await verifier.verify(tokens["access_token"])
        assert await verifier.verify(sibling["access_token"])  # another session is untouched


async def test_refresh_reuse_and_global_logout_reach_the_verifier(world: World) -> None:
    a, b = await world.login(), await world.login()
    async with world.verifier() as verifier:
        rotated = await world.client.post(
            "https://auth.test/auth/refresh", json={"refresh_token": a["refresh_token"]}
        )
        assert rotated.status_code == 200
        world.clock.advance(11)
        reused = await world.client.post(
            "https://auth.test/auth/refresh", json={"refresh_token": a["refresh_token"]}
        )
        assert reused.status_code == 401
        await verifier.sync()
        for token in (a["access_token"], rotated.json()["access_token"]):
            with pytest.raises(TokenError):
                await verifier.verify(token)
        await verifier.verify(b["access_token"])
        await world.logout(b["access_token"], scope="global")
        await verifier.sync()
        with pytest.raises(TokenError):
            await verifier.verify(b["access_token"])


async def test_the_background_poller_enforces_logout_within_the_interval(world: World) -> None:
    tokens = await world.login()
    async with world.verifier(poll_interval=0.05) as verifier:
        await verifier.verify(tokens["access_token"])
        await world.logout(tokens["access_token"])
        deadline = time.monotonic() + 30
        while True:
            try:
                await verifier.verify(tokens["access_token"])
            except TokenError:
                break
            assert time.monotonic() < deadline, "logout did not reach the verifier"
            await asyncio.sleep(0.01)


async def test_expired_tokens_are_refused_even_from_the_cache(world: World) -> None:
    tokens = await world.login()
    async with world.verifier(leeway=5) as verifier:
        await verifier.verify(tokens["access_token"])
        world.clock.advance(300 + 4)
        await verifier.verify(tokens["access_token"])  # inside the leeway
        world.clock.advance(1)
        with pytest.raises(TokenError):
            await verifier.verify(tokens["access_token"])


@pytest.mark.parametrize(
    ("claims", "headers"),
    [
        ({"aud": "other"}, {}),
        ({"aud": ["x", "y"]}, {}),
        # authsvc issues `aud` as one string (as the server checks it): a list is not ours.
        ({"aud": ["x", "api.test"]}, {}),
        ({"aud": ["api.test"]}, {}),
        ({"iss": "https://evil.test"}, {}),
        ({"exp": 1}, {}),
        ({"nbf": 4102444800}, {}),
        ({"iat": 4102444800}, {}),
        ({"jti": None}, {}),
        ({"sid": None}, {}),
        ({"exp": "soon"}, {}),
        ({"roles": "admin"}, {}),
        ({}, {"typ": "JWT"}),
        ({}, {"kid": "not-a-published-kid"}),
        ({}, {"jku": "https://evil.test/jwks"}),
    ],
)
async def test_pinned_checks_refuse(
    world: World, claims: dict[str, Any], headers: dict[str, Any]
) -> None:
    async with world.verifier() as verifier:
        await verifier.verify(world.sign(world.claims()))  # the baseline is good
        with pytest.raises(TokenError):
            await verifier.verify(world.sign(world.claims(**claims), headers))


async def test_other_algorithms_and_forged_signatures_are_refused(world: World) -> None:
    good = world.sign(world.claims())
    kid = jwt.get_unverified_header(good)["kid"]
    hs = jwt.encode(world.claims(), "s" * 32, algorithm="HS256", headers={"kid": kid})
    none = jwt.encode(world.claims(), "", algorithm="none", headers={"kid": kid})
    other_key = generate_private_key(2048)
    forged = jwt.encode(
        world.claims(), other_key, algorithm="RS256", headers={"kid": kid, "typ": "at+jwt"}
    )
    head, _, sig = good.split(".")
    swapped = f"{head}.{forged.split('.')[1]}.{sig}"
    async with world.verifier() as verifier:
        for token in (hs, none, forged, swapped, "", "a.b", good + "x" * 9000):
            with pytest.raises(TokenError):
                await verifier.verify(token)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_any_change_to_a_good_token_is_refused(world: World, data: st.DataObject) -> None:
    token = world.sign(world.claims())
    async with world.verifier(revocations=False) as verifier:
        position = data.draw(st.integers(0, len(token) - 1))
        char = data.draw(st.sampled_from("ABCxyz019-_.=+/ ~\u00e9"))
        mutated = token[:position] + char + token[position + 1 :]
        if mutated != token:
            with pytest.raises(TokenError):
                await verifier.verify(mutated)


async def test_jwks_is_cached_for_its_max_age(world: World) -> None:
    tokens = await world.login()
    async with world.verifier() as verifier:
        await verifier.verify(tokens["access_token"])
        fetched = verifier.jwks.fetches
        world.clock.advance(299)
        await verifier.verify(world.sign(world.claims()))
        assert verifier.jwks.fetches == fetched
        world.clock.advance(2)  # AUTHSVC_JWKS_MAX_AGE=300 has passed
        await verifier.verify(world.sign(world.claims()))
        assert verifier.jwks.fetches == fetched + 1


async def test_the_background_task_refreshes_the_jwks_before_requests_need_it(
    world: World,
) -> None:
    async with world.verifier(poll_interval=0.05) as verifier:
        fetched = verifier.jwks.fetches
        world.clock.advance(300)  # the JWKS max-age is up
        deadline = time.monotonic() + 30
        while verifier.jwks.stale:
            assert time.monotonic() < deadline, "the JWKS was not refreshed in the background"
            await asyncio.sleep(0.01)
        assert verifier.jwks.fetches > fetched


async def test_unknown_kid_refetches_at_most_once_per_interval(world: World) -> None:
    async with world.verifier(kid_refetch_interval=30) as verifier:
        world.clock.advance(31)
        fetched = verifier.jwks.fetches
        for _ in range(20):
            with pytest.raises(TokenError):
                await verifier.verify(world.sign(world.claims(), {"kid": "made-up"}))
        assert verifier.jwks.fetches == fetched + 1
        world.clock.advance(30)
        with pytest.raises(TokenError):
            await verifier.verify(world.sign(world.claims(), {"kid": "made-up"}))
        assert verifier.jwks.fetches == fetched + 2


async def test_a_rotated_key_is_picked_up_on_its_first_token(world: World) -> None:
    state = world.app.state.authsvc
    before = await world.login()
    async with world.verifier() as verifier:
        await verifier.verify(before["access_token"])
        world.clock.advance(31)
        async with state.database.transaction() as db:
            await state.keys.rotate(db, world.clock.now())
        world.clock.advance(world.settings.publish_ahead + 1)
        after = await world.login()
        assert (
            jwt.get_unverified_header(after["access_token"])["kid"]
            != jwt.get_unverified_header(before["access_token"])["kid"]
        )
        assert (await verifier.verify(after["access_token"])).sub
        # The old key stays published (and known) while its tokens can still be valid.
        assert jwt.get_unverified_header(before["access_token"])["kid"] in verifier.jwks.keys


async def test_last_good_keys_are_kept_when_authsvc_is_down(world: World) -> None:
    tokens = await world.login()
    async with world.verifier() as verifier:
        world.net.down = True
        world.clock.advance(301)  # the JWKS is stale and cannot be refetched
        assert await verifier.verify(tokens["access_token"])
        assert verifier.jwks.failures >= 1
        assert not await verifier.sync()
        # Fail open by default: a feed outage does not stop verification.
        assert await verifier.verify(tokens["access_token"])


async def test_fail_closed_when_the_feed_is_stale_if_asked(world: World) -> None:
    tokens = await world.login()
    async with world.verifier(max_feed_staleness=10) as verifier:
        assert await verifier.verify(tokens["access_token"])
        world.net.down = True
        world.clock.advance(11)
        assert not await verifier.sync()
        with pytest.raises(TokenError):
            await verifier.verify(tokens["access_token"])
        world.net.down = False
        assert await verifier.sync()
        assert await verifier.verify(tokens["access_token"])


async def test_a_stale_feed_is_accepted_by_default_and_its_age_is_exposed(world: World) -> None:
    tokens = await world.login()
    async with world.verifier(max_feed_age=30) as verifier:
        assert verifier.stale_feed == "accept"
        assert verifier.feed_age == 0 and not verifier.feed_stale
        world.net.down = True
        world.clock.advance(31)
        assert not await verifier.sync()
        assert verifier.feed_age == 31 and verifier.feed_stale
        assert await verifier.verify(tokens["access_token"])
        assert verifier.stats.accepted_stale == 1
        world.net.down = False
        assert await verifier.sync()
        assert verifier.feed_age == 0 and not verifier.feed_stale
        assert await verifier.verify(tokens["access_token"])
        assert verifier.stats.accepted_stale == 1


async def test_a_stale_feed_refuses_every_token_when_the_policy_is_refuse(world: World) -> None:
    tokens = await world.login()
    async with world.verifier(max_feed_age=30, stale_feed="refuse") as verifier:
        assert await verifier.verify(tokens["access_token"])
        world.net.down = True
        world.clock.advance(30)
        assert not await verifier.sync()
        assert await verifier.verify(tokens["access_token"])  # exactly max_feed_age: fresh
        world.clock.advance(1)
        with pytest.raises(TokenError, match="stale"):
            await verifier.verify(tokens["access_token"])
        assert verifier.stats.accepted_stale == 0
        world.net.down = False
        assert await verifier.sync()
        assert await verifier.verify(tokens["access_token"])


async def test_a_verifier_that_never_reached_the_feed_is_infinitely_stale(world: World) -> None:
    world.net.down = True
    refusing = world.verifier(stale_feed="refuse", jwks={"keys": []})
    async with refusing:
        assert refusing.feed_age == math.inf and refusing.feed_stale
    assert world.verifier(revocations=False).feed_age is None
    with pytest.raises(ValueError, match="stale_feed"):
        world.verifier(stale_feed="open")


async def test_verify_before_start_is_a_programming_error(world: World) -> None:
    verifier = world.verifier()
    with pytest.raises(RuntimeError, match="not started"):
        await verifier.verify("x.y.z")


async def test_lru_cache_is_bounded(world: World) -> None:
    async with world.verifier(cache_size=3) as verifier:
        for _ in range(10):
            await verifier.verify(world.sign(world.claims()))
        assert len(verifier._cache) == 3


def _resource_app(verifier: Verifier) -> FastAPI:
    app = FastAPI()

    @app.get("/data")
    async def data(claims: AccessClaims = Depends(verifier.require(scopes=["api"]))) -> Any:
        return {"sub": claims.sub}

    @app.get("/admin")
    async def admin(claims: AccessClaims = Depends(verifier.require(roles=["admin"]))) -> Any:
        return {"sub": claims.sub}

    @app.get("/write")
    async def write(claims: AccessClaims = Depends(verifier.require(scopes=["write"]))) -> Any:
        return {"sub": claims.sub}

    return app


async def _expect_auth_behaviour(client: httpx.AsyncClient, world: World) -> None:
    tokens = await world.login()
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    missing = await client.get("/data")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="api.test"'
    bad = await client.get("/data", headers={"Authorization": "Bearer not.a.token"})
    assert bad.status_code == 401
    assert bad.headers["www-authenticate"] == 'Bearer realm="api.test", error="invalid_token"'
    malformed = await client.get("/data", headers={"Authorization": "Basic abc"})
    assert malformed.status_code == 401
    assert (await client.get("/data", headers=bearer)).status_code == 200
    assert (await client.get("/admin", headers=bearer)).status_code == 200


async def test_fastapi_dependency_answers_401_and_403(world: World) -> None:
    async with world.verifier() as verifier:
        app = _resource_app(verifier)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rs") as client:
            await _expect_auth_behaviour(client, world)
            tokens = await world.login()
            denied = await client.get(
                "/write", headers={"Authorization": f"Bearer {tokens['access_token']}"}
            )
            assert denied.status_code == 403
            assert denied.headers["www-authenticate"] == (
                'Bearer realm="api.test", error="insufficient_scope", scope="write"'
            )
            no_role = world.sign(world.claims(roles=["viewer"]))
            forbidden = await client.get("/admin", headers={"Authorization": f"Bearer {no_role}"})
            assert forbidden.status_code == 403


async def test_asgi_middleware_guards_a_plain_app(world: World) -> None:
    async def downstream(request: Request) -> Any:
        from starlette.responses import JSONResponse

        claims: AccessClaims | None = request.scope.get("auth")
        return JSONResponse({"sub": claims.sub if claims else None})

    from starlette.applications import Starlette
    from starlette.routing import Route

    async with world.verifier() as verifier:
        inner = Starlette(
            routes=[Route(p, downstream) for p in ("/data", "/admin", "/write", "/healthz")]
        )
        guarded = VerifierMiddleware(
            inner, verifier=verifier, scopes=["api"], exempt_paths=["/healthz"]
        )
        admin_only = VerifierMiddleware(inner, verifier=verifier, roles=["ops"])
        transport = httpx.ASGITransport(app=guarded)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            await _expect_auth_behaviour(client, world)
            missing = await client.get("/data")
            assert missing.json()["error"] == "invalid_token"
            assert missing.headers["cache-control"] == "no-store"
            health = await client.get("/healthz")
            assert health.status_code == 200 and health.json() == {"sub": None}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=admin_only), base_url="http://gw"
        ) as client:
            tokens = await world.login()
            denied = await client.get(
                "/data", headers={"Authorization": f"Bearer {tokens['access_token']}"}
            )
            assert denied.status_code == 403
            assert denied.json()["error"] == "insufficient_scope"
