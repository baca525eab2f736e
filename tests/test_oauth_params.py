"""The parameters of /oauth request bodies (RFC 6749 section 3.1): unknown ones ignored, known
ones at most once, empty ones as omitted."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import PASSWORD, Harness
from tests.test_ambiguous_requests import FORM, assert_refused
from tests.test_oauth import basic, make_client


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """Request handling, not storage, is under test here: SQLite alone."""
    return sqlite_url


pytestmark = pytest.mark.anyio


async def oauth_post(harness: Harness, path: str, body: str, **headers: str) -> httpx.Response:
    return await harness.client.post(path, content=body, headers={**FORM, **headers})


async def test_oauth_ignores_unknown_parameters_even_repeated(harness: Harness) -> None:
    await harness.create_user()
    client_id, _ = await make_client(harness)
    body = (
        f"grant_type=password&username=alice&password={PASSWORD.replace(' ', '+')}"
        f"&client_id={client_id}&resource=a&resource=b&x=&x=&token=t1&token=t2"
        + "".join(f"&ext{i}=v" for i in range(30))
    )
    response = await oauth_post(harness, "/oauth/token", body)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "repeat",
    ["grant_type=password", "username=alice", "scope=api", "client_id={c}", "password=x"],
)
async def test_oauth_refuses_repeated_known_parameters(harness: Harness, repeat: str) -> None:
    await harness.create_user()
    client_id, _ = await make_client(harness)
    body = (
        f"grant_type=password&username=alice&password={PASSWORD.replace(' ', '+')}"
        f"&client_id={client_id}&scope=api&{repeat.format(c=client_id)}"
    )
    response = await oauth_post(harness, "/oauth/token", body)
    assert_refused(response, oauth=True)
    assert "repeated" in response.json()["error_description"]


@pytest.mark.parametrize("path", ["/oauth/revoke", "/oauth/introspect"])
async def test_oauth_token_hint_endpoints_refuse_repeats_and_empty_tokens(
    harness: Harness, path: str
) -> None:
    client_id, secret = await make_client(harness, confidential=True)
    assert secret is not None
    auth = basic(client_id, secret)
    assert_refused(await oauth_post(harness, path, "token=a&token=b", **auth), oauth=True)
    assert_refused(await oauth_post(harness, path, "token=", **auth), oauth=True)
    hinted = "token=a&token_type_hint=refresh_token&token_type_hint=access_token"
    assert_refused(await oauth_post(harness, path, hinted, **auth), oauth=True)
    # Parameters of other endpoints are unknown here, hence ignored.
    ignored = await oauth_post(harness, path, "token=a&grant_type=x&grant_type=y", **auth)
    assert ignored.status_code == 200, ignored.text


async def test_oauth_empty_required_parameters_are_refused(harness: Harness) -> None:
    """Section 3.1: a parameter without a value counts as omitted; a required one is missing."""
    await harness.create_user()
    client_id, _ = await make_client(harness)
    for body in (
        f"grant_type=&username=alice&password=x&client_id={client_id}",
        f"grant_type=password&username=&password=x&client_id={client_id}",
        f"grant_type=password&username=alice&password=&client_id={client_id}",
        f"grant_type=refresh_token&refresh_token=&client_id={client_id}",
    ):
        assert_refused(await oauth_post(harness, "/oauth/token", body), oauth=True)


async def test_oauth_refuses_form_bytes_that_are_not_utf8(harness: Harness) -> None:
    client_id, _ = await make_client(harness)
    response = await oauth_post(
        harness, "/oauth/token", f"grant_type=password&username=%FF%FE&client_id={client_id}"
    )
    assert_refused(response, oauth=True)
