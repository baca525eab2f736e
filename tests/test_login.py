"""POST /auth/login."""

from __future__ import annotations

import jwt
import pytest
from passlib.hash import pbkdf2_sha256

from tests.conftest import PASSWORD, Harness

pytestmark = pytest.mark.anyio


async def test_login_returns_access_and_refresh_tokens(harness: Harness) -> None:
    user_id = await harness.create_user("alice", roles=["admin"])
    response = await harness.client.post(
        "/auth/login", json={"username": "alice", "password": PASSWORD}
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["refresh_token"].startswith("rt_")
    assert body["refresh_expires_in"] == 14 * 86400
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "RS256"
    assert header["typ"] == "at+jwt"
    assert header["kid"]
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == user_id
    assert claims["iss"] == "https://auth.test"
    assert claims["aud"] == "api.test"
    assert claims["roles"] == ["admin"]
    assert claims["exp"] - claims["iat"] == 300
    assert {"jti", "sid", "nbf", "scope", "client_id"} <= set(claims)


async def test_username_is_matched_case_insensitively(harness: Harness) -> None:
    await harness.create_user("Alice")
    response = await harness.client.post(
        "/auth/login", json={"username": "ALICE", "password": PASSWORD}
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", "wrong password!"), ("nobody", PASSWORD), ("bob", PASSWORD), ("", PASSWORD)],
)
async def test_bad_credentials_get_one_indistinguishable_answer(
    harness: Harness, username: str, password: str
) -> None:
    await harness.create_user("alice")
    await harness.create_user("bob")
    async with harness.state.database.transaction() as db:
        await harness.state.users.set_active(db, "bob", False, harness.clock.now())
    response = await harness.client.post(
        "/auth/login", json={"username": username, "password": password}
    )
    if username == "":
        assert response.status_code == 400
        return
    assert response.status_code == 401
    assert response.json() == {
        "error": "invalid_credentials",
        "message": "Invalid username or password.",
    }


async def test_old_scheme_hash_is_upgraded_on_login(harness: Harness) -> None:
    await harness.create_user("alice")
    async with harness.state.database.transaction() as db:
        user = await harness.state.users.get(db, "alice")
        user.password_hash = pbkdf2_sha256.hash(PASSWORD)
    await harness.login()
    async with harness.state.database.read() as db:
        user = await harness.state.users.get(db, "alice")
        assert user.password_hash.startswith("$argon2id$")
    await harness.login()  # and the new hash verifies


async def test_weaker_argon2_parameters_are_upgraded(harness: Harness) -> None:
    await harness.create_user("alice")
    async with harness.state.database.transaction() as db:
        user = await harness.state.users.get(db, "alice")
        weak = harness.state.users.passwords.context.copy(argon2__memory_cost=512)
        user.password_hash = weak.hash(PASSWORD)
    await harness.login()
    async with harness.state.database.read() as db:
        user = await harness.state.users.get(db, "alice")
        assert "m=1024" in user.password_hash


async def test_login_records_client_ip_and_user_agent(harness: Harness) -> None:
    await harness.create_user()
    response = await harness.client.post(
        "/auth/login",
        json={"username": "alice", "password": PASSWORD},
        headers={"User-Agent": "pytest-agent/1"},
    )
    sid = jwt.decode(response.json()["access_token"], options={"verify_signature": False})["sid"]
    async with harness.state.database.read() as db:
        import uuid

        from authsvc.store.repositories import SessionRepository

        session = await SessionRepository(db).get(uuid.UUID(sid))
    assert session is not None
    assert session.client_ip == "203.0.113.7"
    assert session.user_agent == "pytest-agent/1"
