"""GET /auth/sessions, DELETE /auth/sessions/{id} and POST /auth/password."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import PASSWORD, Harness

pytestmark = pytest.mark.anyio

NEW_PASSWORD = "a different long passphrase"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_list_shows_live_sessions_with_current_flag(harness: Harness) -> None:
    await harness.create_user()
    await harness.create_user("bob")
    first = await harness.login()
    harness.clock.advance(5)
    second = await harness.client.post(
        "/auth/login",
        json={"username": "alice", "password": PASSWORD},
        headers={"User-Agent": "TestBrowser/1.0"},
    )
    await harness.login("bob")
    ended = await harness.login()
    await harness.client.post("/auth/logout", headers=bearer(ended["access_token"]))
    harness.clock.advance(5)
    rotated = (await harness.refresh(first["refresh_token"])).json()

    response = await harness.client.get("/auth/sessions", headers=bearer(rotated["access_token"]))
    assert response.status_code == 200
    sessions = response.json()["sessions"]
    assert len(sessions) == 2  # bob's and the logged-out one are not listed
    newest, oldest = sessions
    assert newest["user_agent"] == "TestBrowser/1.0"
    assert newest["current"] is False and oldest["current"] is True
    assert oldest["ip"] == "203.0.113.7"
    assert oldest["last_used_at"] > oldest["created_at"]
    assert oldest["client_id"] is None
    assert second.status_code == 200
    unauthenticated = await harness.client.get("/auth/sessions")
    assert unauthenticated.status_code == 401


async def test_delete_own_session_revokes_it(harness: Harness) -> None:
    await harness.create_user()
    a, b = await harness.login(), await harness.login()
    sessions = (
        await harness.client.get("/auth/sessions", headers=bearer(a["access_token"]))
    ).json()
    other = next(s["id"] for s in sessions["sessions"] if not s["current"])
    response = await harness.client.delete(
        f"/auth/sessions/{other}", headers=bearer(a["access_token"])
    )
    assert response.status_code == 204
    assert (await harness.me(b["access_token"])).status_code == 401
    assert (await harness.refresh(b["refresh_token"])).status_code == 401
    assert (await harness.me(a["access_token"])).status_code == 200
    # Already revoked: gone.
    again = await harness.client.delete(
        f"/auth/sessions/{other}", headers=bearer(a["access_token"])
    )
    assert again.status_code == 404


async def test_delete_someone_elses_session_is_404(harness: Harness) -> None:
    await harness.create_user()
    await harness.create_user("bob")
    alice = await harness.login()
    bob = await harness.login("bob")
    bobs = (await harness.client.get("/auth/sessions", headers=bearer(bob["access_token"]))).json()
    bob_sid = bobs["sessions"][0]["id"]
    for target in (bob_sid, str(uuid.uuid4()), "not-a-uuid"):
        response = await harness.client.delete(
            f"/auth/sessions/{target}", headers=bearer(alice["access_token"])
        )
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"
    assert (await harness.me(bob["access_token"])).status_code == 200


async def test_password_change_revokes_every_other_session(harness: Harness) -> None:
    await harness.create_user()
    current, other = await harness.login(), await harness.login()
    response = await harness.client.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(current["access_token"]),
    )
    assert response.status_code == 204
    assert (await harness.me(current["access_token"])).status_code == 200
    assert (await harness.refresh(current["refresh_token"])).status_code == 200
    assert (await harness.me(other["access_token"])).status_code == 401
    assert (await harness.refresh(other["refresh_token"])).status_code == 401
    old = await harness.client.post("/auth/login", json={"username": "alice", "password": PASSWORD})
    assert old.status_code == 401
    await harness.login(password=NEW_PASSWORD)


async def test_password_change_with_wrong_current_password_is_401(harness: Harness) -> None:
    await harness.create_user()
    tokens, other = await harness.login(), await harness.login()
    wrong = await harness.client.post(
        "/auth/password",
        json={"current_password": "not my password", "new_password": NEW_PASSWORD},
        headers=bearer(tokens["access_token"]),
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_credentials"
    assert (await harness.me(other["access_token"])).status_code == 200
    short = await harness.client.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": "short"},
        headers=bearer(tokens["access_token"]),
    )
    assert short.status_code == 400
    assert short.json()["error"] == "password_policy"
    await harness.login()
