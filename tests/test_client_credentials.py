"""The client credentials grant (RFC 6749 section 4.4): a confidential client's own token."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import jwt
import pytest

from authsvc.verifier import TokenError, Verifier
from tests.conftest import Harness, sql_sent
from tests.test_oauth import basic, claims_of

pytestmark = pytest.mark.anyio


async def make_client(
    harness: Harness,
    *,
    audience: str | None = None,
    scopes: Sequence[str] | None = None,
    grants: tuple[str, ...] = ("client_credentials",),
) -> tuple[str, str]:
    async with harness.state.database.transaction() as db:
        made = await harness.state.clients.create(
            db,
            "backend job",
            harness.clock.now(),
            confidential=True,
            audience=audience,
            grant_types=grants,
            scopes=scopes,
            actor="test",
        )
    assert made.secret is not None
    return made.client.client_id, made.secret


async def client_token(
    harness: Harness, client_id: str, secret: str, **form: str
) -> httpx.Response:
    return await harness.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", **form},
        headers=basic(client_id, secret),
    )


async def issued(harness: Harness, client_id: str, secret: str, **form: str) -> dict[str, Any]:
    response = await client_token(harness, client_id, secret, **form)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def verified(harness: Harness, token: str, audience: str) -> dict[str, Any]:
    """As a resource server would: PyJWT with the published JWKS."""
    jwks = (await harness.client.get("/.well-known/jwks.json")).json()
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["RS256"], audience=audience, issuer="https://auth.test"
    )
    return claims


async def test_a_confidential_client_gets_a_token_for_itself_without_refresh_token(
    harness: Harness,
) -> None:
    client_id, secret = await make_client(harness, audience="orders")
    response = await client_token(harness, client_id, secret)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    # RFC 6749 section 4.4.3: a refresh token SHOULD NOT be included.
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    assert body["scope"] == "api"
    claims = await verified(harness, body["access_token"], "orders")
    # RFC 9068 section 2.2: the client is the subject.
    assert claims["sub"] == client_id and claims["client_id"] == client_id
    assert claims["roles"] == [] and claims["scope"] == "api"
    assert jwt.get_unverified_header(body["access_token"])["typ"] == "at+jwt"


async def test_client_secret_post_works_too_and_a_wrong_secret_is_invalid_client(
    harness: Harness,
) -> None:
    client_id, secret = await make_client(harness)
    ok = await harness.client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
        },
    )
    assert ok.status_code == 200, ok.text
    bad = await client_token(harness, client_id, secret + "x")
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"


async def test_a_malformed_secret_is_answered_as_a_wrong_one(harness: Harness) -> None:
    client_id, secret = await make_client(harness)
    wrong = "cs_" + "A" * 43

    async def answers(presented: str) -> list[tuple[int, Any, str | None]]:
        by_basic = await client_token(harness, client_id, presented)
        by_post = await harness.client.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": presented,
            },
        )
        return [
            (r.status_code, r.json(), r.headers.get("www-authenticate"))
            for r in (by_basic, by_post)
        ]

    expected = await answers(wrong)
    assert [status for status, _, _ in expected] == [401, 401]
    for malformed in (
        "x",
        secret[:-1],
        secret + "A",
        "rt_" + secret[3:],
        secret[:-1] + "~",
        "cs_" + "A" * 500,
    ):
        with sql_sent(harness.state) as sent:
            assert await answers(malformed) == expected, malformed
        # Refused on its shape, before the client is looked up.
        assert not [s for s in sent if "clients" in s], malformed


async def test_scope_is_limited_to_the_clients(harness: Harness) -> None:
    client_id, secret = await make_client(harness, scopes=["api"])
    assert (await issued(harness, client_id, secret, scope="api"))["scope"] == "api"
    for asked in ("admin", "api admin"):
        refused = await client_token(harness, client_id, secret, scope=asked)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_scope"


async def test_openid_scopes_are_refused_since_no_user_is_involved(harness: Harness) -> None:
    client_id, secret = await make_client(harness)
    for asked in ("openid", "api profile", "email"):
        refused = await client_token(harness, client_id, secret, scope=asked)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == "invalid_scope"


async def test_a_client_not_registered_for_the_grant_is_unauthorized(harness: Harness) -> None:
    client_id, secret = await make_client(harness, grants=("password", "refresh_token"))
    refused = await client_token(harness, client_id, secret)
    assert refused.status_code == 400 and refused.json()["error"] == "unauthorized_client"
    async with harness.state.database.transaction() as db:
        public = await harness.state.clients.create(
            db,
            "spa",
            harness.clock.now(),
            grant_types=("refresh_token",),
            actor="test",
        )
    anonymous = await harness.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": public.client.client_id},
    )
    assert anonymous.status_code == 400 and anonymous.json()["error"] == "unauthorized_client"


async def test_public_clients_cannot_be_registered_for_it(harness: Harness) -> None:
    async with harness.state.database.transaction() as db:
        with pytest.raises(ValueError, match="confidential"):
            await harness.state.clients.create(
                db,
                "spa",
                harness.clock.now(),
                grant_types=("client_credentials",),
                actor="test",
            )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/auth/me"),
        ("GET", "/auth/sessions"),
        ("GET", "/oauth/userinfo"),
        ("POST", "/auth/logout"),
    ],
)
async def test_the_token_speaks_for_no_user(harness: Harness, method: str, path: str) -> None:
    # Issued for authsvc's own audience, so only the subject check refuses it.
    client_id, secret = await make_client(harness)
    token = (await issued(harness, client_id, secret))["access_token"]
    response = await harness.client.request(
        method, path, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_introspection_answers_for_the_client_and_its_resource_servers(
    harness: Harness,
) -> None:
    client_id, secret = await make_client(harness, audience="orders")
    token = (await issued(harness, client_id, secret))["access_token"]
    resource_id, resource_secret = await make_client(
        harness, audience="orders", grants=("refresh_token",)
    )
    for who in ((client_id, secret), (resource_id, resource_secret)):
        response = await harness.client.post(
            "/oauth/introspect", data={"token": token}, headers=basic(*who)
        )
        body = response.json()
        assert body["active"] is True, body
        assert body["sub"] == client_id and body["client_id"] == client_id
        assert body["aud"] == "orders" and body["scope"] == "api"
        # It names no user and no session.
        assert "username" not in body and "sid" not in body


async def test_revocation_denylists_the_jti_and_the_feed_carries_it(harness: Harness) -> None:
    client_id, secret = await make_client(harness)
    token = (await issued(harness, client_id, secret))["access_token"]
    other = (await issued(harness, client_id, secret))["access_token"]
    revoked = await harness.client.post(
        "/oauth/revoke", data={"token": token}, headers=basic(client_id, secret)
    )
    assert revoked.status_code == 200
    introspect = [
        (
            await harness.client.post(
                "/oauth/introspect", data={"token": t}, headers=basic(client_id, secret)
            )
        ).json()["active"]
        for t in (token, other)
    ]
    assert introspect == [False, True]
    feed = (await harness.client.get("/auth/revocations")).json()
    assert claims_of(token)["jti"] in {e["jti"] for e in feed["revoked_jtis"]}


async def test_another_client_may_not_revoke_it(harness: Harness) -> None:
    client_id, secret = await make_client(harness)
    token = (await issued(harness, client_id, secret))["access_token"]
    other_id, other_secret = await make_client(harness)
    refused = await harness.client.post(
        "/oauth/revoke", data={"token": token}, headers=basic(other_id, other_secret)
    )
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


async def test_deleting_the_client_ends_its_tokens_everywhere(harness: Harness) -> None:
    client_id, secret = await make_client(harness, audience="orders")
    token = (await issued(harness, client_id, secret))["access_token"]
    resource = await make_client(harness, audience="orders", grants=("refresh_token",))
    async with harness.state.database.transaction() as db:
        assert (
            await harness.state.clients.delete(db, client_id, harness.clock.now(), actor="test")
            == 0
        )
    body = (
        await harness.client.post(
            "/oauth/introspect", data={"token": token}, headers=basic(*resource)
        )
    ).json()
    assert body == {"active": False}
    # Resource servers following the feed hear of it through the token's sid.
    feed = (await harness.client.get("/auth/revocations")).json()
    assert claims_of(token)["sid"] == client_id
    assert client_id in {e["sid"] for e in feed["revoked_sids"]}


async def test_metadata_lists_the_grant(harness: Harness) -> None:
    doc = (await harness.client.get("/.well-known/openid-configuration")).json()
    assert "client_credentials" in doc["grant_types_supported"]


async def test_a_resource_server_accepts_it_until_the_client_is_deleted(harness: Harness) -> None:
    client_id, secret = await make_client(harness, audience="orders")
    token = (await issued(harness, client_id, secret))["access_token"]
    verifier = Verifier(
        issuer="https://auth.test",
        audience="orders",
        http_client=harness.client,
        clock=lambda: harness.clock.now().timestamp(),
    )
    async with verifier:
        claims = await verifier.verify(token)
        assert claims.sub == client_id and claims.client_id == client_id
        assert claims.roles == () and claims.scopes == frozenset({"api"})
        async with harness.state.database.transaction() as db:
            await harness.state.clients.delete(db, client_id, harness.clock.now(), actor="test")
        assert await verifier.sync()
        with pytest.raises(TokenError):
            await verifier.verify(token)
