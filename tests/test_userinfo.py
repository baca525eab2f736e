"""GET and POST /oauth/userinfo (OpenID Connect Core 1.0 section 5.3)."""

from __future__ import annotations

from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import update

from authsvc.store.models import User
from tests.conftest import PASSWORD, Harness

pytestmark = pytest.mark.anyio


async def user_token(harness: Harness, scope: str) -> dict[str, Any]:
    """A user's access token with `scope`, through a client registered for the password grant
    (the shortest way to a user's token with a chosen scope)."""
    async with harness.state.database.transaction() as db:
        made = await harness.state.clients.create(
            db,
            "app",
            harness.clock.now(),
            grant_types=("password", "refresh_token"),
            actor="test",
        )
    response = await harness.client.post(
        "/oauth/token",
        data={
            "grant_type": "password",
            "client_id": made.client.client_id,
            "username": "alice",
            "password": PASSWORD,
            "scope": scope,
        },
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def userinfo(harness: Harness, token: str | None, method: str = "GET") -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return await harness.client.request(method, "/oauth/userinfo", headers=headers)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_openid_gives_sub_and_profile_gives_the_username(
    harness: Harness, method: str
) -> None:
    user_id = await harness.create_user()
    token = (await user_token(harness, "openid profile"))["access_token"]
    response = await userinfo(harness, token, method)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {"sub": user_id, "preferred_username": "alice"}


async def test_claims_follow_the_scopes(harness: Harness) -> None:
    user_id = await harness.create_user()
    # `email` is granted, but users have no email address yet: nothing to add.
    for scope in ("openid", "openid api", "openid email"):
        token = (await user_token(harness, scope))["access_token"]
        assert (await userinfo(harness, token)).json() == {"sub": user_id}


async def test_without_openid_it_is_403_insufficient_scope(harness: Harness) -> None:
    await harness.create_user()
    token = (await user_token(harness, "api profile"))["access_token"]
    response = await userinfo(harness, token)
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    assert response.headers["www-authenticate"] == (
        'Bearer error="insufficient_scope", scope="openid"'
    )
    # The JSON API's own tokens (default scope) are not OpenID tokens either.
    first_party = (await harness.login())["access_token"]
    assert (await userinfo(harness, first_party)).status_code == 403


@pytest.mark.parametrize(
    "header", ["", "Bearer", "Bearer not-a-jwt", "Basic YTpi", "Bearer a b", "bearer x.y.z"]
)
async def test_a_bad_token_is_401_invalid_token(harness: Harness, header: str) -> None:
    response = await harness.client.get("/oauth/userinfo", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_no_token_at_all_gets_a_bare_challenge(harness: Harness) -> None:
    response = await userinfo(harness, None)
    assert response.status_code == 401
    # RFC 6750 section 3.1: no error code when the request carried no credentials.
    assert response.headers["www-authenticate"] == 'Bearer realm="authsvc"'


async def test_revocation_logout_and_disabling_apply(harness: Harness) -> None:
    await harness.create_user()
    tokens = await user_token(harness, "openid")
    assert (await userinfo(harness, tokens["access_token"])).status_code == 200
    # RFC 7009 on the access token: its jti is denied.
    client_id = jwt.decode(tokens["access_token"], options={"verify_signature": False})["client_id"]
    await harness.client.post(
        "/oauth/revoke", data={"token": tokens["access_token"], "client_id": client_id}
    )
    assert (await userinfo(harness, tokens["access_token"])).status_code == 401

    # Logout ends the session, so every token of it.
    second = await user_token(harness, "openid")
    out = await harness.client.post("/auth/logout", json={"refresh_token": second["refresh_token"]})
    assert out.status_code == 204
    assert (await userinfo(harness, second["access_token"])).status_code == 401

    third = await user_token(harness, "openid")
    async with harness.state.database.transaction() as db:
        await db.execute(update(User).values(is_active=False))
    assert (await userinfo(harness, third["access_token"])).status_code == 401


async def test_an_expired_token_is_refused(harness: Harness) -> None:
    await harness.create_user()
    token = (await user_token(harness, "openid"))["access_token"]
    harness.clock.advance(301 + harness.state.settings.token_leeway_seconds)
    assert (await userinfo(harness, token)).status_code == 401
