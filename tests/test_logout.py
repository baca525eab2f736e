"""POST /auth/logout and the jti/sid checks on GET /auth/me."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from authsvc.store.models import DeniedAccessToken
from tests.conftest import Harness

pytestmark = pytest.mark.anyio


async def _logout(harness: Harness, access: str | None = None, **body: str) -> int:
    headers = {"Authorization": f"Bearer {access}"} if access else {}
    response = await harness.client.post("/auth/logout", json=body or None, headers=headers)
    return response.status_code


async def test_logout_with_access_token_revokes_session_and_denylists_jti(
    harness: Harness,
) -> None:
    await harness.create_user()
    tokens = await harness.login()
    sibling = (await harness.refresh(tokens["refresh_token"])).json()
    assert await _logout(harness, tokens["access_token"]) == 204
    me = await harness.me(tokens["access_token"])
    assert me.status_code == 401
    assert me.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert me.json()["error"] == "invalid_token"
    # Every other access token of the session is refused by sid, refresh tokens too.
    assert (await harness.me(sibling["access_token"])).status_code == 401
    assert (await harness.refresh(sibling["refresh_token"])).status_code == 401
    async with harness.state.database.read() as db:
        denied = (await db.execute(select(DeniedAccessToken))).scalars().all()
    assert len(denied) == 1
    assert int(denied[0].expires_at.timestamp()) > int(harness.clock.now().timestamp())


async def test_logout_with_refresh_token_only(harness: Harness) -> None:
    await harness.create_user()
    tokens = await harness.login()
    assert await _logout(harness, refresh_token=tokens["refresh_token"]) == 204
    assert (await harness.me(tokens["access_token"])).status_code == 401
    assert (await harness.refresh(tokens["refresh_token"])).status_code == 401
    # Logging out twice is not an error.
    assert await _logout(harness, refresh_token=tokens["refresh_token"]) == 204


async def test_logout_local_leaves_other_sessions(harness: Harness) -> None:
    await harness.create_user()
    a, b = await harness.login(), await harness.login()
    assert await _logout(harness, a["access_token"]) == 204
    assert (await harness.me(b["access_token"])).status_code == 200


async def test_logout_others_keeps_only_the_current_session(harness: Harness) -> None:
    await harness.create_user()
    await harness.create_user("bob")
    a, b, c = await harness.login(), await harness.login(), await harness.login()
    bob = await harness.login("bob")
    response = await harness.client.post(
        "/auth/logout",
        json={"scope": "others"},
        headers={"Authorization": f"Bearer {a['access_token']}"},
    )
    assert response.status_code == 204
    assert (await harness.me(a["access_token"])).status_code == 200
    assert (await harness.refresh(a["refresh_token"])).status_code == 200
    for other in (b, c):
        assert (await harness.me(other["access_token"])).status_code == 401
        assert (await harness.refresh(other["refresh_token"])).status_code == 401
    assert (await harness.me(bob["access_token"])).status_code == 200


async def test_logout_global_revokes_every_session(harness: Harness) -> None:
    await harness.create_user()
    a, b = await harness.login(), await harness.login()
    response = await harness.client.post(
        "/auth/logout",
        json={"scope": "global", "refresh_token": a["refresh_token"]},
    )
    assert response.status_code == 204
    for s in (a, b):
        assert (await harness.me(s["access_token"])).status_code == 401
        assert (await harness.refresh(s["refresh_token"])).status_code == 401


async def test_logout_without_credentials_is_401(harness: Harness) -> None:
    response = await harness.client.post("/auth/logout")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="authsvc"'


async def test_logout_with_tokens_of_different_sessions_is_refused(harness: Harness) -> None:
    await harness.create_user()
    a, b = await harness.login(), await harness.login()
    response = await harness.client.post(
        "/auth/logout",
        json={"refresh_token": b["refresh_token"]},
        headers={"Authorization": f"Bearer {a['access_token']}"},
    )
    assert response.status_code == 400
    assert (await harness.me(a["access_token"])).status_code == 200
    assert (await harness.me(b["access_token"])).status_code == 200


async def test_logout_with_unknown_refresh_token_is_401(harness: Harness) -> None:
    assert await _logout(harness, refresh_token="rt_" + "B" * 43) == 401


async def test_revoked_session_token_cannot_log_out_other_sessions(harness: Harness) -> None:
    await harness.create_user()
    a, b = await harness.login(), await harness.login()
    assert await _logout(harness, refresh_token=a["refresh_token"]) == 204
    response = await harness.client.post(
        "/auth/logout", json={"refresh_token": a["refresh_token"], "scope": "global"}
    )
    assert response.status_code == 401
    assert (await harness.me(b["access_token"])).status_code == 200


async def test_me_returns_the_user_and_session(harness: Harness) -> None:
    user_id = await harness.create_user("alice", roles=["admin", "ops"])
    tokens = await harness.login()
    response = await harness.me(tokens["access_token"])
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == user_id
    assert body["username"] == "alice"
    assert body["roles"] == ["admin", "ops"]
    assert body["session_id"]


async def test_expired_access_token_is_refused(harness: Harness) -> None:
    await harness.create_user()
    tokens = await harness.login()
    harness.clock.advance(300 + 5 + 1)
    assert (await harness.me(tokens["access_token"])).status_code == 401


@pytest.mark.parametrize(
    "header",
    ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc", "Bearer a b", "bearer  "],
)
async def test_malformed_authorization_header_is_401(harness: Harness, header: str) -> None:
    response = await harness.client.get("/auth/me", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert "www-authenticate" in response.headers


async def test_bearer_scheme_is_case_insensitive(harness: Harness) -> None:
    await harness.create_user()
    tokens = await harness.login()
    response = await harness.client.get(
        "/auth/me", headers={"Authorization": f"bEaReR {tokens['access_token']}"}
    )
    assert response.status_code == 200
