"""DPoP (RFC 9449) in authsvc.verifier: the FastAPI dependency and the ASGI middleware take a
DPoP-bound token only under the DPoP scheme with a fresh proof for the request, checked against
the resource server's own public URL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from fastapi import Depends, FastAPI
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from authsvc.verifier import AccessClaims, Verifier, VerifierMiddleware
from tests.conftest import PASSWORD, Harness
from tests.dpop_keys import ProofKey


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """Request handling, not storage, is under test here: SQLite alone."""
    return sqlite_url


pytestmark = pytest.mark.anyio

API = "https://api.test"


async def dpop_tokens(harness: Harness, key: ProofKey) -> dict[str, Any]:
    await harness.create_user()
    response = await harness.client.post(
        "/auth/login",
        json={"username": "alice", "password": PASSWORD},
        headers={"DPoP": key.proof("POST", "https://auth.test/auth/login")},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def verifier_for(harness: Harness, **overrides: Any) -> Verifier:
    jwks = (await harness.client.get("/.well-known/jwks.json")).json()
    values: dict[str, Any] = {
        "issuer": "https://auth.test",
        "audience": "api.test",
        "jwks": jwks,
        "revocations": False,
        "public_url": API,
        "clock": lambda: harness.clock.now().timestamp(),
    }
    values.update(overrides)
    return Verifier(**values)


def dependency_app(verifier: Verifier) -> FastAPI:
    app = FastAPI()

    @app.get("/things")
    async def things(claims: AccessClaims = Depends(verifier.require(scopes=["api"]))) -> Any:
        return {"sub": claims.sub, "jkt": claims.jkt}

    return app


def middleware_app(verifier: Verifier) -> VerifierMiddleware:
    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        await JSONResponse({"sub": scope["auth"].sub})(scope, receive, send)

    return VerifierMiddleware(inner, verifier=verifier)


Build = Callable[[Verifier], Any]


@pytest.fixture(params=["dependency", "middleware"])
def build(request: pytest.FixtureRequest) -> Build:
    return dependency_app if request.param == "dependency" else middleware_app


async def call(
    app: Any, token: str, proof: str | None, scheme: str = "DPoP", method: str = "GET"
) -> httpx.Response:
    headers = {"Authorization": f"{scheme} {token}"}
    if proof is not None:
        headers["DPoP"] = proof
    transport = httpx.ASGITransport(app=app)
    # The Host the client names is not what htu is checked against: the public_url is.
    async with httpx.AsyncClient(transport=transport, base_url="http://internal:8080") as client:
        return await client.request(method, "/things", headers=headers)


def assert_refused(response: httpx.Response, error: str) -> None:
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("DPoP ")
    assert f'error="{error}"' in challenge
    assert 'algs="ES256 RS256"' in challenge


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
async def test_bound_token_with_proof_is_accepted(harness: Harness, build: Build, alg: str) -> None:
    key = ProofKey(alg)
    token = (await dpop_tokens(harness, key))["access_token"]
    verifier = await verifier_for(harness)
    async with verifier:
        app = build(verifier)
        response = await call(app, token, key.proof("GET", API + "/things", access_token=token))
        assert response.status_code == 200, response.text


async def test_bound_token_as_bearer_is_refused(harness: Harness, build: Build) -> None:
    token = (await dpop_tokens(harness, ProofKey()))["access_token"]
    async with await verifier_for(harness) as verifier:
        assert_refused(await call(build(verifier), token, None, scheme="Bearer"), "invalid_token")


async def test_replayed_proof_is_refused(harness: Harness, build: Build) -> None:
    key = ProofKey()
    token = (await dpop_tokens(harness, key))["access_token"]
    async with await verifier_for(harness) as verifier:
        app = build(verifier)
        proof = key.proof("GET", API + "/things", access_token=token)
        assert (await call(app, token, proof)).status_code == 200
        assert_refused(await call(app, token, proof), "invalid_dpop_proof")


async def test_wrong_url_method_iat_or_ath_is_refused(harness: Harness, build: Build) -> None:
    key = ProofKey()
    token = (await dpop_tokens(harness, key))["access_token"]
    now = harness.clock.now().timestamp()
    async with await verifier_for(harness) as verifier:
        app = build(verifier)
        for proof in (
            key.proof("GET", "http://internal:8080/things", access_token=token),
            key.proof("POST", API + "/things", access_token=token),
            key.proof("GET", API + "/things", access_token=token, iat=now - 120),
            key.proof("GET", API + "/things", access_token="another"),
        ):
            assert_refused(await call(app, token, proof), "invalid_dpop_proof")
        other_key = ProofKey().proof("GET", API + "/things", access_token=token)
        assert_refused(await call(app, token, other_key), "invalid_token")


async def test_unbound_token_as_bearer_still_works(harness: Harness, build: Build) -> None:
    await harness.create_user()
    token = (await harness.login())["access_token"]
    async with await verifier_for(harness) as verifier:
        app = build(verifier)
        assert (await call(app, token, None, scheme="Bearer")).status_code == 200
        proof = ProofKey().proof("GET", API + "/things", access_token=token)
        assert_refused(await call(app, token, proof), "invalid_token")


async def test_without_public_url_bound_tokens_are_refused(harness: Harness) -> None:
    key = ProofKey()
    token = (await dpop_tokens(harness, key))["access_token"]
    async with await verifier_for(harness, public_url=None) as verifier:
        proof = key.proof("GET", "http://internal:8080/things", access_token=token)
        assert_refused(await call(dependency_app(verifier), token, proof), "invalid_token")


async def test_replay_cache_is_pluggable(harness: Harness) -> None:
    class Shared:
        def __init__(self) -> None:
            self.keys: set[str] = set()

        async def first_use(self, key: str, ttl: float, now: float) -> bool:
            if key in self.keys:
                return False
            self.keys.add(key)
            return True

    shared = Shared()
    key = ProofKey()
    token = (await dpop_tokens(harness, key))["access_token"]
    proof = key.proof("GET", API + "/things", access_token=token)
    one = await verifier_for(harness, replay_cache=shared)
    two = await verifier_for(harness, replay_cache=shared)
    async with one, two:
        assert (await call(dependency_app(one), token, proof)).status_code == 200
        assert_refused(await call(dependency_app(two), token, proof), "invalid_dpop_proof")
    assert len(shared.keys) == 1


async def test_malformed_cnf_is_refused_by_verifier_and_server(harness: Harness) -> None:
    """A `cnf` that is not a jkt confirmation is not a token we issued: refused, not ignored."""
    await harness.create_user()
    good = (await harness.login())["access_token"]
    claims = jwt.decode(good, options={"verify_signature": False})
    key = harness.state.keys.ring.signing_key(harness.clock.now())
    assert key is not None
    for cnf in ({"jkt": 5}, {"x5t#S256": "abc"}, "jkt"):
        token = jwt.encode(
            {**claims, "cnf": cnf},
            key.private,
            algorithm="RS256",
            headers={"kid": key.kid, "typ": "at+jwt"},
        )
        assert (await harness.me(token)).status_code == 401
        async with await verifier_for(harness) as verifier:
            response = await call(dependency_app(verifier), token, None, scheme="Bearer")
            assert response.status_code == 401
