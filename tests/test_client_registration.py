"""Client registration rules: grants, redirect URIs, scopes (RFC 6749 section 2, RFC 9700)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authsvc.services.clients import DEFAULT_GRANTS, check_redirect_uri
from tests.conftest import Harness

pytestmark = pytest.mark.anyio


async def create(harness: Harness, **kwargs: object) -> dict[str, object]:
    async with harness.state.database.transaction() as db:
        made = await harness.state.clients.create(
            db,
            "app",
            harness.clock.now(),
            **kwargs,  # type: ignore[arg-type]
            actor="test",
        )
    client = made.client
    return {
        "grant_types": client.grant_types,
        "redirect_uris": client.redirect_uris,
        "scopes": client.scopes,
        "first_party": client.first_party,
    }


async def test_new_clients_get_the_code_grant_and_never_the_password_grant(
    harness: Harness,
) -> None:
    made = await create(harness, redirect_uris=["https://app.example/cb"])
    assert made["grant_types"] == list(DEFAULT_GRANTS) == ["authorization_code", "refresh_token"]
    assert made["first_party"] is True and made["scopes"] is None


async def test_the_password_grant_only_when_asked_for(harness: Harness) -> None:
    made = await create(harness, grant_types=["password", "refresh_token"])
    assert made["grant_types"] == ["password", "refresh_token"]


async def test_a_new_client_without_the_password_grant_is_refused_it(harness: Harness) -> None:
    async with harness.state.database.transaction() as db:
        made = await harness.state.clients.create(
            db,
            "spa",
            harness.clock.now(),
            redirect_uris=["https://app.example/cb"],
            actor="test",
        )
    response = await harness.client.post(
        "/oauth/token",
        data={
            "grant_type": "password",
            "client_id": made.client.client_id,
            "username": "alice",
            "password": "x",
        },
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"grant_types": ["authorization_code"]}, "needs at least one redirect URI"),
        ({"grant_types": ["client_credentials"]}, "confidential clients only"),
        ({"grant_types": []}, "grant types must be among"),
        ({"grant_types": ["implicit"]}, "grant types must be among"),
        ({"grant_types": ["password"], "scopes": ["a b"]}, "scope tokens"),
        ({"grant_types": ["password"], "scopes": []}, "scope tokens"),
        ({"redirect_uris": ["http://app.example/cb"]}, "loopback"),
    ],
)
async def test_registration_refuses_what_cannot_work(
    harness: Harness, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await create(harness, **kwargs)


@pytest.mark.parametrize(
    "uri",
    [
        "https://app.example/callback",
        "https://app.example:8443/cb?tenant=1",
        "http://127.0.0.1:8080/cb",
        "http://[::1]/cb",
        "http://localhost:3000/",
        "com.example.app:/oauth2redirect",
    ],
)
def test_redirect_uris_that_may_be_registered(uri: str) -> None:
    check_redirect_uri(uri)


@pytest.mark.parametrize(
    "uri",
    [
        "http://app.example/cb",  # plain http off loopback
        "https://app.example/cb#frag",
        "https://*.example/cb",
        "https://user@app.example/cb",
        "https://app.example:99999/cb",
        "javascript:alert(1)",
        "data:text/html,hi",
        "/relative/cb",
        "https:///nohost",
        " https://app.example/cb",
        "https://app.example/c b",
        "",
    ],
)
def test_redirect_uris_that_may_not(uri: str) -> None:
    with pytest.raises(ValueError, match="redirect URI"):
        check_redirect_uri(uri)


@given(st.text(max_size=80))
def test_redirect_uri_check_never_fails_other_than_by_value_error(uri: str) -> None:
    try:
        check_redirect_uri(uri)
    except ValueError:
        return
    assert uri.startswith(("https://", "http://")) or ":" in uri
