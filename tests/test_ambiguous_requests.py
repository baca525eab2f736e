"""Requests that different readers could read differently are refused, not guessed at:
repeated headers, ambiguous JSON bodies, repeated OAuth parameters, near-miss Origins; and no
answer is built from the Host header."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from authsvc.api.http_guard import CSP
from authsvc.app import create_app
from tests.conftest import PASSWORD, Harness
from tests.test_oauth import basic, make_client


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """Request handling, not storage, is under test here: SQLite alone."""
    return sqlite_url


pytestmark = pytest.mark.anyio

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def assert_refused(response: httpx.Response, oauth: bool = False) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    assert ("error_description" if oauth else "message") in body
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["cache-control"] == "no-store"


async def test_two_authorization_headers_are_refused(harness: Harness) -> None:
    await harness.create_user()
    good = f"Bearer {(await harness.login())['access_token']}"
    for pair in ([good, "Bearer nope"], ["Bearer nope", good], [good, good]):
        response = await harness.client.get(
            "/auth/me", headers=[("Authorization", value) for value in pair]
        )
        assert_refused(response)
    alone = await harness.client.get("/auth/me", headers={"Authorization": good})
    assert alone.status_code == 200


async def test_two_authorization_headers_on_oauth_get_the_rfc_error(harness: Harness) -> None:
    client_id, secret = await make_client(harness, confidential=True)
    assert secret is not None
    header = basic(client_id, secret)["Authorization"]
    response = await harness.client.post(
        "/oauth/introspect",
        content="token=x",
        headers=[*FORM.items(), ("Authorization", header), ("Authorization", "Basic eDp5")],
    )
    assert_refused(response, oauth=True)


@pytest.mark.parametrize("name", ["Origin", "Content-Type", "X-Authsvc-CSRF", "Host"])
async def test_other_single_value_headers_may_not_repeat(harness: Harness, name: str) -> None:
    response = await harness.client.get("/healthz", headers=[(name, "a"), (name, "b")])
    assert_refused(response)


async def test_repeated_unrelated_headers_pass(harness: Harness) -> None:
    response = await harness.client.get("/healthz", headers=[("Accept", "*/*"), ("Accept", "x")])
    assert response.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        b'{"refresh_token": "rt_a", "refresh_token": "rt_b"}',
        b'{"username": "alice", "password": "x", "username": "bob"}',
        b'{"a": {"b": 1, "b": 2}}',
        b'[{"x": 1, "x": 1}]',
    ],
)
@pytest.mark.parametrize("path", ["/auth/login", "/auth/refresh", "/auth/password"])
async def test_duplicate_json_members_are_refused(harness: Harness, path: str, body: bytes) -> None:
    response = await harness.client.post(
        path, content=body, headers={"Content-Type": "application/json"}
    )
    assert_refused(response)
    assert "repeats a member" in response.json()["message"]


async def test_duplicate_members_cannot_pick_the_login_identity(harness: Harness) -> None:
    await harness.create_user()
    body = json.dumps({"username": "nobody", "password": PASSWORD})[:-1] + ', "username": "alice"}'
    response = await harness.client.post(
        "/auth/login", content=body, headers={"Content-Type": "application/json"}
    )
    assert_refused(response)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig"])
async def test_non_utf8_json_is_refused(harness: Harness, encoding: str) -> None:
    await harness.create_user()
    body = json.dumps({"username": "alice", "password": PASSWORD}).encode(encoding)
    response = await harness.client.post(
        "/auth/login", content=body, headers={"Content-Type": "application/json"}
    )
    assert_refused(response)
    assert "UTF-8" in response.json()["message"]


async def test_deeply_nested_json_is_a_400_not_a_500(harness: Harness) -> None:
    body = b'{"refresh_token": ' + b"[" * 30000 + b"]" * 30000 + b"}"
    response = await harness.client.post(
        "/auth/refresh", content=body, headers={"Content-Type": "application/json"}
    )
    assert_refused(response)


async def test_plain_json_still_works_and_malformed_keeps_its_message(harness: Harness) -> None:
    await harness.create_user()
    tokens = await harness.login()
    refreshed = await harness.refresh(tokens["refresh_token"])
    assert refreshed.status_code == 200
    # Non-ASCII UTF-8 is fine (it is only UTF-8 that is required).
    response = await harness.client.post(
        "/auth/login",
        content=json.dumps({"username": "élodie", "password": "pässwörd!"}, ensure_ascii=False),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 401
    malformed = await harness.client.post(
        "/auth/refresh", content=b'{"refresh_token": ', headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 400
    assert "malformed JSON" in malformed.json()["message"]


async def test_chunked_json_bodies_are_checked_whole(harness: Harness) -> None:
    async def chunks() -> Any:
        yield b'{"refresh_token": "rt_a",'
        yield b' "refresh_token": "rt_b"}'

    response = await harness.client.post(
        "/auth/refresh", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert_refused(response)


@pytest.mark.parametrize(
    "origin",
    ["https://auth.test/", "https://auth.test//", "https://AUTH.test", "https://auth.test:443x"],
)
async def test_origin_must_match_exactly(harness: Harness, origin: str) -> None:
    await harness.create_user()
    response = await harness.client.post(
        "/auth/login",
        json={"username": "alice", "password": PASSWORD},
        headers={"Origin": origin, "X-Authsvc-CSRF": "1", "X-Authsvc-Token-Transport": "cookie"},
    )
    assert response.status_code == 403
    assert response.json()["error"] == "csrf_rejected"


@pytest.mark.parametrize("path", ["/auth/me/", "/healthz/", "/oauth/token/", "/auth/sessions/"])
async def test_no_trailing_slash_redirects_from_the_host_header(
    harness: Harness, path: str
) -> None:
    response = await harness.client.get(path, headers={"Host": "evil.example"})
    assert response.status_code == 404
    assert "location" not in response.headers
    assert "evil.example" not in response.text


async def test_nothing_echoes_the_host_header(harness: Harness) -> None:
    paths = [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
        "/.well-known/jwks.json",
        "/openapi.json",
        "/docs",
        "/redoc",
        "/healthz",
        "/readyz",
    ]
    for path in paths:
        response = await harness.client.get(path, headers={"Host": "evil.example"})
        assert "evil.example" not in response.text, path
        assert all("evil.example" not in v for v in response.headers.values()), path


async def test_spa_directory_redirects_are_relative(settings: Any, tmp_path: Path) -> None:
    (tmp_path / "spa" / "sub").mkdir(parents=True)
    (tmp_path / "spa" / "index.html").write_text("<p>spa</p>")
    (tmp_path / "spa" / "sub" / "index.html").write_text("<p>sub</p>")
    app = create_app(settings.model_copy(update={"spa_dir": tmp_path / "spa"}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        evil = {"Host": "evil.example"}
        redirected = await client.get("/spa/sub", headers=evil)
        assert redirected.status_code == 307
        assert redirected.headers["location"] == "sub/"
        assert (await client.get("/spa/sub/", headers=evil)).text == "<p>sub</p>"
        assert (await client.get("/spa", headers=evil)).status_code == 404
