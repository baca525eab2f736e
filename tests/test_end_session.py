"""RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0) at /oauth/logout.

The ID tokens here are signed with the server's own signing key, taken from the key ring the app
holds, and carry what authsvc's ID tokens carry for this endpoint: iss, sub, aud, sid.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from authsvc.store.models import AuditEvent, Session
from tests.conftest import PASSWORD, Harness

pytestmark = pytest.mark.anyio

CALLBACK = "https://app.example/signed-out"


async def app_client(harness: Harness, *redirect_uris: str) -> str:
    async with harness.state.database.transaction() as db:
        made = await harness.state.clients.create(
            db,
            "web app",
            harness.clock.now(),
            grant_types=("password", "refresh_token"),
            redirect_uris=redirect_uris or (CALLBACK,),
            actor="test",
        )
    return made.client.client_id


async def sign_in(harness: Harness, client_id: str, username: str = "alice") -> dict[str, Any]:
    """A session of `username` opened by the client; its tokens and its sid."""
    response = await harness.client.post(
        "/oauth/token",
        data={
            "grant_type": "password",
            "client_id": client_id,
            "username": username,
            "password": PASSWORD,
            "scope": "openid",
        },
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    tokens["sid"], tokens["sub"] = claims["sid"], claims["sub"]
    return tokens


async def id_token(harness: Harness, *, key: rsa.RSAPrivateKey | None = None, **claims: Any) -> str:
    """An ID token signed with the app's current signing key (or `key`)."""
    now = harness.clock.now()
    async with harness.state.database.read() as db:
        ring = await harness.state.keys.ring_at(db, now)
    signing = ring.signing_key(now)
    assert signing is not None
    iat = int(now.timestamp())
    payload = {"iss": "https://auth.test", "iat": iat, "exp": iat + 300, **claims}
    return jwt.encode(
        payload,
        key or signing.private,
        algorithm="RS256",
        headers={"kid": signing.kid, "typ": "JWT"},
    )


async def hint_for(harness: Harness, client_id: str, tokens: dict[str, Any], **extra: Any) -> str:
    return await id_token(harness, sub=tokens["sub"], aud=client_id, sid=tokens["sid"], **extra)


async def session_revoked(harness: Harness, sid: str) -> bool:
    async with harness.state.database.read() as db:
        session = await db.get(Session, uuid.UUID(sid))
    assert session is not None
    return session.revoked_at is not None


async def logout(harness: Harness, method: str = "GET", **params: str) -> httpx.Response:
    if method == "GET":
        return await harness.client.get("/oauth/logout", params=params)
    return await harness.client.post("/oauth/logout", data=params)


async def test_logout_revokes_the_session_and_redirects_with_state(harness: Harness) -> None:
    await harness.create_user()
    client_id = await app_client(harness)
    tokens = await sign_in(harness, client_id)
    other = await sign_in(harness, client_id)
    hint = await hint_for(harness, client_id, tokens)
    response = await logout(
        harness,
        id_token_hint=hint,
        client_id=client_id,
        post_logout_redirect_uri=CALLBACK,
        state="af0ifjsldkj",
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == f"{CALLBACK}?state=af0ifjsldkj"
    assert await session_revoked(harness, tokens["sid"])
    assert not await session_revoked(harness, other["sid"])  # only the one it names
    # Its tokens are dead: the refresh token, and the access token through the sid.
    refreshed = await harness.client.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": client_id,
        },
    )
    assert refreshed.status_code == 400
    me = await harness.me(tokens["access_token"])
    assert me.status_code == 401
    # Resource servers hear of it on the revocation feed, and it is audited as a logout.
    feed = (await harness.client.get("/auth/revocations")).json()
    assert tokens["sid"] in {e["sid"] for e in feed["revoked_sids"]}
    async with harness.state.database.read() as db:
        events = (
            (await db.execute(select(AuditEvent).where(AuditEvent.event == "logout")))
            .scalars()
            .all()
        )
    assert [(str(e.session_id), (e.details or {}).get("via")) for e in events] == [
        (tokens["sid"], "end_session")
    ]


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_without_a_redirect_uri_it_shows_a_signed_out_page(
    harness: Harness, method: str
) -> None:
    await harness.create_user()
    client_id = await app_client(harness)
    tokens = await sign_in(harness, client_id)
    response = await logout(
        harness, method, id_token_hint=await hint_for(harness, client_id, tokens)
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "You are signed out." in response.text
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"
    assert await session_revoked(harness, tokens["sid"])


async def test_an_expired_id_token_still_names_the_session(harness: Harness) -> None:
    await harness.create_user()
    client_id = await app_client(harness)
    tokens = await sign_in(harness, client_id)
    hint = await hint_for(harness, client_id, tokens)
    harness.clock.advance(3600)  # the hint is long expired; the session is not
    response = await logout(harness, id_token_hint=hint, post_logout_redirect_uri=CALLBACK)
    assert response.status_code == 303
    assert response.headers["location"] == CALLBACK
    assert await session_revoked(harness, tokens["sid"])


async def test_logging_out_twice_is_not_an_error(harness: Harness) -> None:
    await harness.create_user()
    client_id = await app_client(harness)
    tokens = await sign_in(harness, client_id)
    hint = await hint_for(harness, client_id, tokens)
    for _ in range(2):
        response = await logout(harness, id_token_hint=hint, post_logout_redirect_uri=CALLBACK)
        assert response.status_code == 303


async def test_state_joins_a_registered_query(harness: Harness) -> None:
    await harness.create_user()
    uri = "https://app.example/cb?from=op"
    client_id = await app_client(harness, uri)
    tokens = await sign_in(harness, client_id)
    response = await logout(
        harness,
        id_token_hint=await hint_for(harness, client_id, tokens),
        post_logout_redirect_uri=uri,
        state="a b&c",
    )
    assert response.headers["location"] == f"{uri}&state=a+b%26c"


@pytest.mark.parametrize(
    "uri",
    [
        "https://app.example/signed-out/",
        "https://app.example/signed-out?x=1",
        "https://app.example/signed-outx",
        "https://app.example:8443/signed-out",
        "https://evil.example/signed-out",
        "https://app.example.evil.example/signed-out",
        "HTTPS://APP.EXAMPLE/signed-out",
    ],
)
async def test_an_unregistered_redirect_uri_is_never_followed(harness: Harness, uri: str) -> None:
    await harness.create_user()
    client_id = await app_client(harness)
    tokens = await sign_in(harness, client_id)
    response = await logout(
        harness,
        id_token_hint=await hint_for(harness, client_id, tokens),
        post_logout_redirect_uri=uri,
        state="s",
    )
    assert response.status_code == 400
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert "not registered" in response.text
    # Refused whole: nothing was revoked.
    assert not await session_revoked(harness, tokens["sid"])


async def test_another_clients_redirect_uri_is_refused(harness: Harness) -> None:
    await harness.create_user()
    client_id = await app_client(harness)
    await app_client(harness, "https://other.example/bye")
    tokens = await sign_in(harness, client_id)
    response = await logout(
        harness,
        id_token_hint=await hint_for(harness, client_id, tokens),
        post_logout_redirect_uri="https://other.example/bye",
    )
    assert response.status_code == 400 and "location" not in response.headers


async def test_bad_hints_are_refused_without_revoking(harness: Harness) -> None:
    await harness.create_user()
    client_id = await app_client(harness)
    tokens = await sign_in(harness, client_id)
    claims = {"sub": tokens["sub"], "aud": client_id, "sid": tokens["sid"]}
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    hints = {
        "someone else's key": await id_token(harness, key=stranger, **claims),
        "another issuer": await id_token(harness, **{**claims, "iss": "https://evil.example"}),
        "no sid": await id_token(harness, sub=tokens["sub"], aud=client_id),
        # An access token is ours and names the session, but it is not an ID token.
        "an access token": tokens["access_token"],
        "garbage": "not.a.jwt",
    }
    for name, hint in hints.items():
        response = await logout(harness, id_token_hint=hint, post_logout_redirect_uri=CALLBACK)
        assert response.status_code == 400, name
        assert "location" not in response.headers, name
    missing = await logout(harness, post_logout_redirect_uri=CALLBACK)
    assert missing.status_code == 400 and "id_token_hint" in missing.text
    assert not await session_revoked(harness, tokens["sid"])


async def test_a_client_id_the_token_was_not_issued_to_is_refused(harness: Harness) -> None:
    await harness.create_user()
    client_id = await app_client(harness)
    other = await app_client(harness)
    tokens = await sign_in(harness, client_id)
    response = await logout(
        harness,
        id_token_hint=await hint_for(harness, client_id, tokens),
        client_id=other,
        post_logout_redirect_uri=CALLBACK,
    )
    assert response.status_code == 400
    assert not await session_revoked(harness, tokens["sid"])


async def test_a_hint_ends_only_its_own_users_session_of_its_client(harness: Harness) -> None:
    await harness.create_user()
    await harness.create_user("bob")
    client_id = await app_client(harness)
    other_client = await app_client(harness)
    alice = await sign_in(harness, client_id)
    bob = await sign_in(harness, client_id, "bob")
    elsewhere = await sign_in(harness, other_client)
    # Alice's ID token with Bob's sid, and one for the wrong client: signed by us, but they do
    # not describe a session they own, so nothing is revoked.
    mismatched = [
        await id_token(harness, sub=alice["sub"], aud=client_id, sid=bob["sid"]),
        await id_token(harness, sub=alice["sub"], aud=client_id, sid=elsewhere["sid"]),
    ]
    for hint in mismatched:
        assert (await logout(harness, id_token_hint=hint)).status_code == 200
    assert not await session_revoked(harness, bob["sid"])
    assert not await session_revoked(harness, elsewhere["sid"])
    assert not await session_revoked(harness, alice["sid"])


async def test_repeated_parameters_are_refused(harness: Harness) -> None:
    response = await harness.client.get(
        "/oauth/logout?state=a&state=b&id_token_hint=x", follow_redirects=False
    )
    assert response.status_code == 400
    assert "repeated" in response.text
