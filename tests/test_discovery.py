"""The discovery document: OpenID Connect Discovery 1.0 section 3 and RFC 8414 section 2, served
at both well-known paths, and honest about what the server does."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Harness


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """Request handling, not storage, is under test here: SQLite alone."""
    return sqlite_url


pytestmark = pytest.mark.anyio

PATHS = ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"]
# OpenID Connect Discovery 1.0 section 3: REQUIRED (token_endpoint: unless only the implicit
# flow is used, which it is not).
OIDC_REQUIRED = (
    "issuer",
    "authorization_endpoint",
    "token_endpoint",
    "jwks_uri",
    "response_types_supported",
    "subject_types_supported",
    "id_token_signing_alg_values_supported",
)
# RECOMMENDED there, and provided.
OIDC_RECOMMENDED = ("userinfo_endpoint", "scopes_supported", "claims_supported")


async def document(harness: Harness, path: str = PATHS[0]) -> dict[str, Any]:
    response = await harness.client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "public, max-age=300"
    doc: dict[str, Any] = response.json()
    return doc


async def test_both_paths_serve_the_same_document(harness: Harness) -> None:
    assert await document(harness, PATHS[0]) == await document(harness, PATHS[1])


async def test_required_and_recommended_fields(harness: Harness) -> None:
    doc = await document(harness)
    for field in (*OIDC_REQUIRED, *OIDC_RECOMMENDED):
        assert doc.get(field), field
    # Section 4.3: the issuer is exactly the URL the document was asked of, minus the suffix.
    assert doc["issuer"] == "https://auth.test"
    assert "RS256" in doc["id_token_signing_alg_values_supported"]
    assert "openid" in doc["scopes_supported"]
    assert set(doc["subject_types_supported"]) <= {"public", "pairwise"}
    # Every URL is an absolute https URL under the issuer.
    for field, value in doc.items():
        if field.endswith(("_endpoint", "_uri")):
            assert value.startswith("https://auth.test/"), field


async def test_it_says_what_the_server_does(harness: Harness) -> None:
    doc = await document(harness)
    assert doc["authorization_endpoint"] == "https://auth.test/oauth/authorize"
    assert doc["userinfo_endpoint"] == "https://auth.test/oauth/userinfo"
    assert doc["end_session_endpoint"] == "https://auth.test/oauth/logout"
    assert doc["response_types_supported"] == ["code"]
    assert doc["response_modes_supported"] == ["query"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["grant_types_supported"] == list(harness.state.oauth._grants())
    assert doc["subject_types_supported"] == ["public"]
    assert doc["authorization_response_iss_parameter_supported"] is True
    assert doc["dpop_signing_alg_values_supported"] == ["ES256", "RS256"]
    assert doc["scopes_supported"] == sorted({"admin", "api", "openid", "profile", "email"})
    assert set(doc["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "none",
    }
    # Defaults that would claim too much if left out (Discovery section 3).
    assert doc["request_uri_parameter_supported"] is False
    assert doc["request_parameter_supported"] is False
    assert doc["claims_parameter_supported"] is False
    # UserInfo's claims are among those announced.
    assert {"sub", "preferred_username"} <= set(doc["claims_supported"])
    assert "email" not in doc["claims_supported"]  # users have no email address


async def test_grant_types_are_those_the_token_endpoint_answers(harness: Harness) -> None:
    assert {"password", "refresh_token", "client_credentials"} <= set(
        (await document(harness))["grant_types_supported"]
    )


async def test_the_endpoints_it_names_are_served(harness: Harness) -> None:
    doc = await document(harness)
    named = {
        "token_endpoint": "POST",
        "userinfo_endpoint": "GET",
        "revocation_endpoint": "POST",
        "introspection_endpoint": "POST",
        "end_session_endpoint": "GET",
        "jwks_uri": "GET",
    }
    for field, method in named.items():
        path = doc[field].removeprefix("https://auth.test")
        # Without credentials or parameters: refused, but by the endpoint, not the router.
        response = await harness.client.request(method, path)
        assert response.status_code not in (404, 405), field
