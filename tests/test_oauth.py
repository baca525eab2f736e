"""The OAuth 2 adapter: /oauth/token (RFC 6749), /oauth/revoke (RFC 7009),
/oauth/introspect (RFC 7662) and the server metadata (RFC 8414)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote_plus

import anyio
import httpx
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from authsvc.store.models import Session
from tests.conftest import PASSWORD, Harness

pytestmark = pytest.mark.anyio


async def make_client(
    harness: Harness,
    *,
    confidential: bool = False,
    audience: str | None = None,
    grants: tuple[str, ...] = ("password", "refresh_token"),
) -> tuple[str, str | None]:
    async with harness.state.database.transaction() as db:
        made = await harness.state.clients.create(
            db,
            "test app",
            harness.clock.now(),
            confidential=confidential,
            audience=audience,
            grant_types=grants,
            actor="test",
        )
    return made.client.client_id, made.secret


def basic(client_id: str, secret: str) -> dict[str, str]:
    # RFC 6749 section 2.3.1: each part form-urlencoded, then Basic.
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


async def token(
    harness: Harness, headers: Mapping[str, str] | None = None, **form: str
) -> httpx.Response:
    return await harness.client.post("/oauth/token", data=form, headers=headers or {})


async def password_grant(harness: Harness, client_id: str, **extra: str) -> dict[str, Any]:
    response = await token(
        harness,
        None,
        grant_type="password",
        username="alice",
        password=PASSWORD,
        client_id=client_id,
        **extra,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def claims_of(access_token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(access_token, options={"verify_signature": False})
    return decoded


# -- token endpoint ----------------------------------------------------------------------------


async def test_password_grant_for_public_client_returns_rfc6749_body(harness: Harness) -> None:
    await harness.create_user()
    client_id, _ = await make_client(harness)
    response = await token(
        harness, grant_type="password", username="alice", password=PASSWORD, client_id=client_id
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "api"
    claims = claims_of(body["access_token"])
    assert claims["client_id"] == client_id
    assert claims["aud"] == "api.test"
    # The session remembers its client.
    async with harness.state.database.read() as db:
        session = (await db.execute(select(Session))).scalar_one()
    assert session.client_id == client_id
    assert (await harness.me(body["access_token"])).status_code == 200


async def test_confidential_client_basic_and_post_authentication(harness: Harness) -> None:
    await harness.create_user()
    client_id, secret = await make_client(harness, confidential=True, audience="orders")
    assert secret is not None
    via_basic = await token(
        harness,
        basic(client_id, secret),
        grant_type="password",
        username="alice",
        password=PASSWORD,
    )
    assert via_basic.status_code == 200, via_basic.text
    # `aud` defaults per client.
    assert claims_of(via_basic.json()["access_token"])["aud"] == "orders"
    via_post = await token(
        harness,
        grant_type="password",
        username="alice",
        password=PASSWORD,
        client_id=client_id,
        client_secret=secret,
    )
    assert via_post.status_code == 200


async def test_bad_client_secret_is_invalid_client_with_basic_challenge(harness: Harness) -> None:
    await harness.create_user()
    client_id, _ = await make_client(harness, confidential=True)
    wrong = await token(
        harness,
        basic(client_id, "cs_wrong"),
        grant_type="password",
        username="alice",
        password=PASSWORD,
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"
    assert set(wrong.json()) == {"error", "error_description"}
    assert wrong.headers["www-authenticate"].startswith("Basic")
    # Via the body: still 401, no Basic challenge (the client did not use the header).
    posted = await token(
        harness,
        grant_type="password",
        username="alice",
        password=PASSWORD,
        client_id=client_id,
        client_secret="cs_wrong",
    )
    assert posted.status_code == 401
    assert posted.json()["error"] == "invalid_client"
    assert "www-authenticate" not in posted.headers
    # A confidential client without its secret, an unknown client, no client at all.
    for form in ({"client_id": client_id}, {"client_id": "nope"}, {}):
        response = await token(
            harness, None, grant_type="password", username="alice", password=PASSWORD, **form
        )
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"


async def test_wrong_password_is_invalid_grant(harness: Harness) -> None:
    await harness.create_user()
    client_id, _ = await make_client(harness)
    for username, password in (("alice", "wrong password"), ("nobody", PASSWORD), ("a b", "x")):
        response = await token(
            harness,
            grant_type="password",
            username=username,
            password=password,
            client_id=client_id,
        )
        assert response.status_code == 400
        assert response.json() == {
            "error": "invalid_grant",
            "error_description": response.json()["error_description"],
        }
        assert response.headers["cache-control"] == "no-store"


async def test_request_errors_use_rfc_codes(harness: Harness) -> None:
    await harness.create_user()
    client_id, _ = await make_client(harness)
    pw_only, _ = await make_client(harness, grants=("password",))

    async def error_of(response: httpx.Response) -> tuple[int, str]:
        return response.status_code, response.json()["error"]

    assert await error_of(await token(harness, client_id=client_id)) == (400, "invalid_request")
    assert await error_of(
        await token(
            harness,
            grant_type="urn:ietf:params:oauth:grant-type:device_code",
            client_id=client_id,
            code="x",
        )
    ) == (400, "unsupported_grant_type")
    assert await error_of(
        await token(harness, grant_type="password", username="alice", client_id=client_id)
    ) == (400, "invalid_request")
    assert await error_of(
        await token(harness, grant_type="refresh_token", refresh_token="rt_x", client_id=pw_only)
    ) == (400, "unauthorized_client")
    assert await error_of(
        await token(
            harness,
            grant_type="password",
            username="alice",
            password=PASSWORD,
            client_id=client_id,
            scope="admin",
        )
    ) == (400, "invalid_scope")
    # JSON instead of a form, and a repeated parameter (RFC 6749 section 3.2).
    as_json = await harness.client.post(
        "/oauth/token", json={"grant_type": "password", "client_id": client_id}
    )
    assert await error_of(as_json) == (400, "invalid_request")
    repeated = await harness.client.post(
        "/oauth/token",
        content=f"grant_type=password&grant_type=password&client_id={client_id}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert await error_of(repeated) == (400, "invalid_request")


async def test_refresh_grant_rotates_and_only_for_the_same_client(harness: Harness) -> None:
    await harness.create_user()
    client_id, _ = await make_client(harness)
    other_id, _ = await make_client(harness)
    first = await password_grant(harness, client_id)
    # Another client, and the first-party JSON API, may not use this refresh token; trying
    # does not spend it.
    stolen = await token(
        harness,
        grant_type="refresh_token",
        refresh_token=first["refresh_token"],
        client_id=other_id,
    )
    assert stolen.status_code == 400
    assert stolen.json()["error"] == "invalid_grant"
    assert (await harness.refresh(first["refresh_token"])).status_code == 401
    rotated = await token(
        harness,
        grant_type="refresh_token",
        refresh_token=first["refresh_token"],
        client_id=client_id,
    )
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["refresh_token"] != first["refresh_token"]
    assert claims_of(rotated.json()["access_token"])["client_id"] == client_id
    # Likewise a first-party refresh token is no good at the OAuth endpoint.
    json_tokens = await harness.login()
    cross = await token(
        harness,
        grant_type="refresh_token",
        refresh_token=json_tokens["refresh_token"],
        client_id=client_id,
    )
    assert cross.json()["error"] == "invalid_grant"


async def test_refresh_grant_scope_may_narrow_never_widen(
    harness: Harness,
) -> None:
    harness.state.settings.default_scope = "api read"
    await harness.create_user()
    client_id, _ = await make_client(harness)
    first = await password_grant(harness, client_id, scope="read")
    assert first["scope"] == "read"
    wider = await token(
        harness,
        grant_type="refresh_token",
        refresh_token=first["refresh_token"],
        client_id=client_id,
        scope="api read",
    )
    assert wider.json()["error"] == "invalid_scope"
    same = await token(
        harness,
        grant_type="refresh_token",
        refresh_token=first["refresh_token"],
        client_id=client_id,
    )
    assert same.json()["scope"] == "read"
    assert claims_of(same.json()["access_token"])["scope"] == "read"


async def test_refresh_reuse_revokes_session_and_is_invalid_grant(harness: Harness) -> None:
    harness.state.settings.refresh_reuse_grace_seconds = 0
    await harness.create_user()
    client_id, _ = await make_client(harness)
    first = await password_grant(harness, client_id)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": first["refresh_token"],
        "client_id": client_id,
    }
    second = (await token(harness, **form)).json()
    reused = await token(harness, **form)
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    # The revocation was committed although the request failed.
    again = await token(
        harness,
        grant_type="refresh_token",
        refresh_token=second["refresh_token"],
        client_id=client_id,
    )
    assert again.json()["error"] == "invalid_grant"


# -- revocation --------------------------------------------------------------------------------


async def test_revoke_refresh_token_ends_the_session(harness: Harness) -> None:
    await harness.create_user()
    client_id, _ = await make_client(harness)
    tokens = await password_grant(harness, client_id)
    response = await harness.client.post(
        "/oauth/revoke",
        data={
            "token": tokens["refresh_token"],
            "token_type_hint": "refresh_token",
            "client_id": client_id,
        },
    )
    assert response.status_code == 200
    assert (await harness.me(tokens["access_token"])).status_code == 401
    refreshed = await token(
        harness,
        grant_type="refresh_token",
        refresh_token=tokens["refresh_token"],
        client_id=client_id,
    )
    assert refreshed.json()["error"] == "invalid_grant"


async def test_revoke_access_token_denylists_only_it(harness: Harness) -> None:
    await harness.create_user()
    client_id, secret = await make_client(harness, confidential=True)
    assert secret is not None
    tokens = (
        await token(
            harness,
            basic(client_id, secret),
            grant_type="password",
            username="alice",
            password=PASSWORD,
        )
    ).json()
    # Confidential clients must authenticate to revoke.
    anonymous = await harness.client.post(
        "/oauth/revoke", data={"token": tokens["access_token"], "client_id": client_id}
    )
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "invalid_client"
    response = await harness.client.post(
        "/oauth/revoke",
        data={"token": tokens["access_token"], "token_type_hint": "access_token"},
        headers=basic(client_id, secret),
    )
    assert response.status_code == 200
    assert (await harness.me(tokens["access_token"])).status_code == 401
    rotated = await token(
        harness,
        basic(client_id, secret),
        grant_type="refresh_token",
        refresh_token=tokens["refresh_token"],
    )
    assert rotated.status_code == 200


async def test_revoke_unknown_token_is_200_and_other_clients_token_refused(
    harness: Harness,
) -> None:
    await harness.create_user()
    client_id, _ = await make_client(harness)
    other_id, _ = await make_client(harness)
    for junk in ("rt_" + "A" * 43, "not a token", "a.b.c"):
        response = await harness.client.post(
            "/oauth/revoke", data={"token": junk, "client_id": client_id}
        )
        assert response.status_code == 200
    tokens = await password_grant(harness, client_id)
    refused = await harness.client.post(
        "/oauth/revoke", data={"token": tokens["refresh_token"], "client_id": other_id}
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
    assert (await harness.me(tokens["access_token"])).status_code == 200
    missing = await harness.client.post("/oauth/revoke", data={"client_id": client_id})
    assert missing.json()["error"] == "invalid_request"


# -- introspection -----------------------------------------------------------------------------


async def introspect(harness: Harness, creds: dict[str, str], tok: str) -> httpx.Response:
    return await harness.client.post("/oauth/introspect", data={"token": tok}, headers=creds)


async def test_introspection_of_live_access_and_refresh_tokens(harness: Harness) -> None:
    user_id = await harness.create_user()
    app_id, _ = await make_client(harness, audience="orders")
    # The resource server the tokens are for: a confidential client with that audience.
    rs_id, rs_secret = await make_client(harness, confidential=True, audience="orders")
    assert rs_secret is not None
    creds = basic(rs_id, rs_secret)
    tokens = await password_grant(harness, app_id)
    access = await introspect(harness, creds, tokens["access_token"])
    assert access.status_code == 200
    assert access.headers["cache-control"] == "no-store"
    body = access.json()
    claims = claims_of(tokens["access_token"])
    assert body == {
        "active": True,
        "token_type": "Bearer",
        "scope": "api",
        "client_id": app_id,
        "username": "alice",
        "sub": user_id,
        "aud": "orders",
        "iss": "https://auth.test",
        "iat": claims["iat"],
        "exp": claims["exp"],
        "jti": claims["jti"],
        "sid": claims["sid"],
    }
    # A refresh token is only ever the client's own, never a resource server's business.
    refresh = (await introspect(harness, creds, tokens["refresh_token"])).json()
    assert refresh == {"active": False}


async def test_introspection_of_its_own_refresh_token(harness: Harness) -> None:
    user_id = await harness.create_user()
    app_id, secret = await make_client(harness, confidential=True)
    assert secret is not None
    tokens = await password_grant(harness, app_id, client_secret=secret)
    refresh = (await introspect(harness, basic(app_id, secret), tokens["refresh_token"])).json()
    claims = claims_of(tokens["access_token"])
    assert refresh["active"] is True
    assert refresh["token_type"] == "refresh_token"
    assert refresh["client_id"] == app_id
    assert refresh["sid"] == claims["sid"]
    assert refresh["sub"] == user_id and refresh["username"] == "alice"


async def test_introspection_inactive_for_anything_not_valid_now(harness: Harness) -> None:
    await harness.create_user()
    # The client introspects its own tokens (the only client that may see its refresh tokens).
    app_id, secret = await make_client(harness, confidential=True)
    assert secret is not None
    creds = basic(app_id, secret)

    async def active(tok: str) -> bool:
        response = await introspect(harness, creds, tok)
        assert response.status_code == 200
        result: bool = response.json()["active"]
        if not result:
            assert response.json() == {"active": False}
        return result

    for junk in ("junk", "a.b.c", "rt_" + "A" * 43, "x" * 5000):
        assert not await active(junk)
    # Denylisted jti (logout with only the access token denylists it).
    a = await password_grant(harness, app_id, client_secret=secret)
    assert await active(a["access_token"])
    logout = await harness.client.post(
        "/auth/logout", headers={"Authorization": f"Bearer {a['access_token']}"}
    )
    assert logout.status_code == 204
    assert not await active(a["access_token"])
    assert not await active(a["refresh_token"])
    # Revoked session (by its refresh token), spent refresh token, expired access token.
    b = await password_grant(harness, app_id, client_secret=secret)
    rotated = (
        await token(
            harness,
            creds,
            grant_type="refresh_token",
            refresh_token=b["refresh_token"],
        )
    ).json()
    assert not await active(b["refresh_token"])
    assert await active(rotated["refresh_token"])
    harness.clock.advance(harness.state.settings.access_token_ttl + 60)
    assert not await active(rotated["access_token"])
    await harness.client.post(
        "/oauth/revoke", data={"token": rotated["refresh_token"]}, headers=creds
    )
    assert not await active(rotated["refresh_token"])


async def test_introspection_by_a_foreign_client_is_inactive(harness: Harness) -> None:
    await harness.create_user()
    app_id, _ = await make_client(harness, audience="orders")
    tokens = await password_grant(harness, app_id)
    # Confidential, but neither the token's client nor in its audience.
    other_id, other_secret = await make_client(harness, confidential=True, audience="billing")
    plain_id, plain_secret = await make_client(harness, confidential=True)
    assert other_secret is not None and plain_secret is not None
    for creds in (basic(other_id, other_secret), basic(plain_id, plain_secret)):
        for tok in (tokens["access_token"], tokens["refresh_token"]):
            response = await introspect(harness, creds, tok)
            assert response.status_code == 200
            assert response.json() == {"active": False}


async def test_introspection_refuses_a_token_whose_session_is_not_its_subjects(
    harness: Harness,
) -> None:
    # A validly signed token naming bob as subject and alice's live session: authenticate
    # refuses it, and so must introspection.
    await harness.create_user()
    bob = await harness.create_user("bob")
    app_id, secret = await make_client(harness, confidential=True)
    assert secret is not None
    alice = await password_grant(harness, app_id, client_secret=secret)
    state, now = harness.state, harness.clock.now()
    async with state.database.read() as db:
        ring = await state.keys.ring_at(db, now)
    forged, _ = state.issuer.access.issue(
        ring,
        now,
        subject=bob,
        session_id=claims_of(alice["access_token"])["sid"],
        roles=[],
        scope="api",
        client_id=app_id,
    )
    response = await introspect(harness, basic(app_id, secret), forged)
    assert response.json() == {"active": False}
    assert (await harness.me(forged)).status_code == 401
    # The genuine token of that session is active.
    genuine = await introspect(harness, basic(app_id, secret), alice["access_token"])
    assert genuine.json()["active"] is True


async def test_introspection_is_for_confidential_clients_only(harness: Harness) -> None:
    await harness.create_user()
    app_id, _ = await make_client(harness)
    tokens = await password_grant(harness, app_id)
    response = await harness.client.post(
        "/oauth/introspect", data={"token": tokens["access_token"], "client_id": app_id}
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    anonymous = await harness.client.post(
        "/oauth/introspect", data={"token": tokens["access_token"]}
    )
    assert anonymous.status_code == 401


# -- metadata ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["oauth-authorization-server", "openid-configuration"])
async def test_server_metadata(harness: Harness, path: str) -> None:
    response = await harness.client.get(f"/.well-known/{path}")
    assert response.status_code == 200
    doc = response.json()
    assert doc["issuer"] == "https://auth.test"
    assert doc["token_endpoint"] == "https://auth.test/oauth/token"
    assert doc["jwks_uri"] == "https://auth.test/.well-known/jwks.json"
    assert doc["revocation_endpoint"] == "https://auth.test/oauth/revoke"
    assert doc["introspection_endpoint"] == "https://auth.test/oauth/introspect"
    assert "client_secret_basic" in doc["token_endpoint_auth_methods_supported"]
    # The rest of the document: tests/test_discovery.py.


# -- hostile input -----------------------------------------------------------------------------

form_values = st.text(max_size=40) | st.sampled_from(
    ["password", "refresh_token", "alice", PASSWORD, "rt_" + "A" * 43, "api", ""]
)


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/revoke", "/oauth/introspect"])
async def test_arbitrary_forms_get_rfc_errors_never_500(harness: Harness, path: str) -> None:
    await harness.create_user()
    client_id, _ = await make_client(harness)
    failures: list[str] = []

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        form=st.dictionaries(
            st.sampled_from(
                ["grant_type", "username", "password", "refresh_token", "token", "scope", "x"]
            ),
            form_values,
        ),
        with_client=st.booleans(),
        authorization=st.none() | st.text(max_size=30) | st.just("Basic !!!"),
    )
    def check(form: dict[str, str], with_client: bool, authorization: str | None) -> None:
        if with_client:
            form = {**form, "client_id": client_id}
        headers = {} if authorization is None else {"Authorization": authorization}
        headers = {k: v for k, v in headers.items() if v.isascii() and v.isprintable()}
        response = anyio.from_thread.run(
            lambda: harness.client.post(path, data=form, headers=headers)
        )
        body = response.json() if response.content else {}
        ok = response.status_code < 500 and (
            response.status_code == 200 or set(body) == {"error", "error_description"}
        )
        if not ok:
            failures.append(f"{form!r} {headers!r} -> {response.status_code} {body!r}")

    await anyio.to_thread.run_sync(check)
    assert not failures, failures[:5]


async def test_deleting_a_client_revokes_its_sessions_and_secrets_are_digests(
    harness: Harness,
) -> None:
    await harness.create_user()
    client_id, secret = await make_client(harness, confidential=True)
    assert secret is not None
    tokens = (
        await token(
            harness,
            basic(client_id, secret),
            grant_type="password",
            username="alice",
            password=PASSWORD,
        )
    ).json()
    first_party = await harness.login()
    async with harness.state.database.transaction() as db:
        stored = await harness.state.clients.list(db)
        assert (
            stored[0].secret_digest is not None and secret.encode() not in stored[0].secret_digest
        )
        assert (
            await harness.state.clients.delete(db, client_id, harness.clock.now(), actor="test")
            == 1
        )
    assert (await harness.me(tokens["access_token"])).status_code == 401
    assert (await harness.me(first_party["access_token"])).status_code == 200
    gone = await token(
        harness,
        basic(client_id, secret),
        grant_type="refresh_token",
        refresh_token=tokens["refresh_token"],
    )
    assert gone.json()["error"] == "invalid_client"
    async with harness.state.database.transaction() as db:
        with pytest.raises(ValueError, match="grant types"):
            await harness.state.clients.create(
                db, "x", harness.clock.now(), grant_types=["implicit"], actor="test"
            )


async def test_oversized_oauth_request_gets_the_rfc_error_shape(harness: Harness) -> None:
    response = await harness.client.post(
        "/oauth/token",
        content=b"grant_type=password&username=" + b"a" * 200_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413
    assert set(response.json()) == {"error", "error_description"}


async def test_database_outage_gets_the_rfc_error_shape(harness: Harness) -> None:
    """The 503 the schema documents for /oauth comes in the RFC 6749 section 5.2 body too."""
    if harness.state.database.dialect != "sqlite":
        pytest.skip("a missing table is an outage only on SQLite (OperationalError)")
    client_id, _ = await make_client(harness)
    async with harness.state.database.transaction() as db:
        await db.execute(text("ALTER TABLE clients RENAME TO clients_away"))
    response = await token(
        harness, grant_type="password", username="alice", password=PASSWORD, client_id=client_id
    )
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "temporarily_unavailable"
    assert set(response.json()) == {"error", "error_description"}
    assert response.headers["retry-after"]
