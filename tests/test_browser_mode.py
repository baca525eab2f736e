"""Browser (SPA) mode: the refresh token in the __Host-authsvc_rt cookie, and CSRF checks."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import PASSWORD, Harness

pytestmark = pytest.mark.anyio

COOKIE = "__Host-authsvc_rt"
ORIGIN = "https://auth.test"  # the issuer's own origin is always allowed
BROWSER = {"Origin": ORIGIN, "X-Authsvc-CSRF": "1", "X-Authsvc-Token-Transport": "cookie"}


def refresh_cookie(response: httpx.Response) -> tuple[str, str]:
    """(value, attributes) of the refresh cookie the response sets."""
    headers = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{COOKIE}=")]
    assert len(headers) == 1, response.headers
    value, _, attributes = headers[0].partition(";")
    return value.split("=", 1)[1].strip('"'), attributes.lower()


async def browser_login(harness: Harness, **headers: str) -> tuple[dict[str, Any], str]:
    response = await harness.client.post(
        "/auth/login",
        json={"username": "alice", "password": PASSWORD},
        headers={**BROWSER, **headers},
    )
    assert response.status_code == 200, response.text
    value, _ = refresh_cookie(response)
    return response.json(), value


async def test_login_sets_host_cookie_instead_of_body_token(harness: Harness) -> None:
    await harness.create_user()
    response = await harness.client.post(
        "/auth/login", json={"username": "alice", "password": PASSWORD}, headers=BROWSER
    )
    assert response.status_code == 200
    assert "refresh_token" not in response.json()
    assert response.headers["cache-control"] == "no-store"
    value, attributes = refresh_cookie(response)
    assert value.startswith("rt_")
    parts = {p.strip().split("=")[0] for p in attributes.split(";")}
    assert {"httponly", "secure", "path", "max-age", "samesite"} <= parts
    assert "samesite=strict" in attributes and "path=/" in attributes
    assert "domain" not in parts
    assert (await harness.me(response.json()["access_token"])).status_code == 200


async def test_refresh_and_logout_read_the_cookie(harness: Harness) -> None:
    await harness.create_user()
    tokens, cookie = await browser_login(harness)
    refreshed = await harness.client.post(
        "/auth/refresh", headers={**BROWSER, "Cookie": f"{COOKIE}={cookie}"}
    )
    assert refreshed.status_code == 200, refreshed.text
    assert "refresh_token" not in refreshed.json()
    new_cookie, _ = refresh_cookie(refreshed)
    assert new_cookie != cookie
    out = await harness.client.post(
        "/auth/logout",
        headers={
            "Origin": ORIGIN,
            "X-Authsvc-CSRF": "1",
            "Cookie": f"{COOKIE}={new_cookie}",
            "Authorization": f"Bearer {refreshed.json()['access_token']}",
        },
    )
    assert out.status_code == 204
    cleared = out.headers["set-cookie"].lower()
    assert cleared.startswith(f"{COOKIE.lower()}=") and "max-age=0" in cleared
    assert (await harness.me(refreshed.json()["access_token"])).status_code == 401
    assert (await harness.me(tokens["access_token"])).status_code == 401
    again = await harness.client.post(
        "/auth/refresh", headers={**BROWSER, "Cookie": f"{COOKIE}={new_cookie}"}
    )
    assert again.status_code == 401


async def test_concurrent_cookie_refreshes_within_grace_get_the_same_successor(
    harness: Harness,
) -> None:
    await harness.create_user()
    _, cookie = await browser_login(harness)
    headers = {**BROWSER, "Cookie": f"{COOKIE}={cookie}"}
    first = await harness.client.post("/auth/refresh", headers=headers)
    second = await harness.client.post("/auth/refresh", headers=headers)
    assert first.status_code == second.status_code == 200
    assert refresh_cookie(first)[0] == refresh_cookie(second)[0]


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example", "X-Authsvc-CSRF": "1"},  # wrong origin
        {"X-Authsvc-CSRF": "1"},  # no origin
        {"Origin": ORIGIN},  # no custom header
    ],
    ids=["foreign-origin", "no-origin", "no-csrf-header"],
)
async def test_cookie_requests_without_csrf_proof_are_403(
    harness: Harness, headers: dict[str, str]
) -> None:
    await harness.create_user()
    _, cookie = await browser_login(harness)
    for path in ("/auth/refresh", "/auth/logout"):
        response = await harness.client.post(
            path, headers={**headers, "Cookie": f"{COOKIE}={cookie}"}
        )
        assert response.status_code == 403
        assert response.json()["error"] == "csrf_rejected"
    login = await harness.client.post(
        "/auth/login",
        json={"username": "alice", "password": PASSWORD},
        headers={**headers, "X-Authsvc-Token-Transport": "cookie"},
    )
    assert login.status_code == 403
    # Nothing was spent: the cookie still refreshes from the right origin.
    ok = await harness.client.post(
        "/auth/refresh", headers={**BROWSER, "Cookie": f"{COOKIE}={cookie}"}
    )
    assert ok.status_code == 200


async def test_cross_site_form_post_is_403(harness: Harness) -> None:
    await harness.create_user()
    _, cookie = await browser_login(harness)
    response = await harness.client.post(
        "/auth/logout",
        content="scope=global",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": "https://evil.example",
            "Cookie": f"{COOKIE}={cookie}",
        },
    )
    assert response.status_code == 403
    assert response.json()["error"] == "csrf_rejected"


@pytest.mark.parametrize(
    "settings_overrides",
    [{"allowed_origins": "https://app.example, https://admin.example/"}],
)
async def test_allowlisted_origins_and_cookie_transport_by_setting(harness: Harness) -> None:
    harness.state.settings.refresh_token_transport = "cookie"
    await harness.create_user()
    response = await harness.client.post(
        "/auth/login",
        json={"username": "alice", "password": PASSWORD},
        headers={"Origin": "https://admin.example", "X-Authsvc-CSRF": "1"},
    )
    assert response.status_code == 200
    refresh_cookie(response)
    # A per-request opt-out keeps the JSON body transport.
    body = await harness.client.post(
        "/auth/login",
        json={"username": "alice", "password": PASSWORD},
        headers={"X-Authsvc-Token-Transport": "body"},
    )
    assert body.status_code == 200
    assert body.json()["refresh_token"].startswith("rt_")


async def test_body_transport_is_unchanged_by_default(harness: Harness) -> None:
    await harness.create_user()
    tokens = await harness.login()
    assert (
        "set-cookie"
        not in (
            await harness.client.post(
                "/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
            )
        ).headers
    )
    missing = await harness.client.post("/auth/refresh")
    assert missing.status_code == 401
    assert missing.json()["error"] == "invalid_refresh_token"


@pytest.mark.parametrize("settings_overrides", [{"allowed_origins": "https://app.example"}])
async def test_cors_preflight_only_for_allowlisted_origins(harness: Harness) -> None:
    def preflight(origin: str) -> dict[str, str]:
        return {
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-authsvc-csrf, content-type",
        }

    allowed = await harness.client.options(
        "/auth/refresh", headers=preflight("https://app.example")
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert allowed.headers["access-control-allow-credentials"] == "true"
    refused = await harness.client.options(
        "/auth/refresh", headers=preflight("https://evil.example")
    )
    assert "access-control-allow-origin" not in refused.headers


async def test_openapi_lists_the_new_endpoints(harness: Harness) -> None:
    paths = (await harness.client.get("/openapi.json")).json()["paths"]
    for path in (
        "/oauth/token",
        "/oauth/revoke",
        "/oauth/introspect",
        "/auth/sessions",
        "/auth/sessions/{session_id}",
        "/auth/password",
        "/.well-known/oauth-authorization-server",
    ):
        assert path in paths
