"""Authlib's OAuth2Session runs the authorization code flow with PKCE against a live authsvc
process, the hosted login driven over HTTP like a browser without JavaScript; it refreshes on its
own, and PyJWT verifies the ID tokens through the JWKS."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from authlib.integrations.requests_client import OAuth2Session  # type: ignore[import-untyped]

from tests.live import cli, live_server

pytestmark = pytest.mark.slow

# Shorter than Authlib's 60 s refresh leeway: each request refreshes first.
LIVE_ENV = {"AUTHSVC_ACCESS_TOKEN_TTL": "10"}
REDIRECT = "http://127.0.0.1:9/callback"  # a native app's loopback redirect (RFC 8252)
HIDDEN = r'<input type="hidden" name="([^"]+)" value="([^"]*)">'


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("code-live")


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[str]:
    with live_server(workdir, environ=LIVE_ENV) as base:
        yield base


def sign_in_like_a_browser(url: str, base: str, username: str, password: str) -> str:
    """GET the authorization URL, fill in the hosted form, post it; the redirect's Location."""
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        page = browser.get(url)
        assert page.status_code == 200, page.text
        fields = dict(
            re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text)
        )
        fields = {unescape(k): unescape(v) for k, v in fields.items()}
        fields.update(username=username, password=password, action="login")
        answer = browser.post(f"{base}/oauth/authorize", data=fields)
        assert answer.status_code == 303, answer.text
        return answer.headers["location"]


def test_authlib_code_flow_with_pkce_refresh_and_id_token(server: str, workdir: Path) -> None:
    made = cli(workdir, "users", "create", "hana", "--password-stdin", stdin="hana's password\n")
    assert made.returncode == 0, made.stderr
    created = cli(workdir, "clients", "create", "Hana's app", "--redirect-uri", REDIRECT)
    assert created.returncode == 0, created.stderr
    client_id = dict(line.split(": ", 1) for line in created.stdout.splitlines() if ": " in line)[
        "client_id"
    ]
    metadata = httpx.get(f"{server}/.well-known/openid-configuration").json()
    assert metadata["code_challenge_methods_supported"] == ["S256"]

    updates: list[dict[str, Any]] = []

    def update_token(token: dict[str, Any], refresh_token: str | None = None, **_: Any) -> None:
        updates.append(dict(token))

    nonce = secrets.token_urlsafe(16)
    verifier = secrets.token_urlsafe(48)
    with OAuth2Session(
        client_id=client_id,
        token_endpoint_auth_method="none",
        redirect_uri=REDIRECT,
        scope="openid api",
        code_challenge_method="S256",
        token_endpoint=metadata["token_endpoint"],
        update_token=update_token,
    ) as session:
        url, state = session.create_authorization_url(
            metadata["authorization_endpoint"], code_verifier=verifier, nonce=nonce
        )
        location = sign_in_like_a_browser(url, server, "hana", "hana's password")
        assert f"state={state}" in location and "iss=" in location
        token = session.fetch_token(
            metadata["token_endpoint"], authorization_response=location, code_verifier=verifier
        )
        assert token["token_type"] == "Bearer" and token["scope"] == "openid api"

        jwks = jwt.PyJWKClient(metadata["jwks_uri"])
        id_token = token["id_token"]
        claims = jwt.decode(
            id_token,
            jwks.get_signing_key_from_jwt(id_token).key,
            algorithms=metadata["id_token_signing_alg_values_supported"],
            audience=client_id,
            issuer=metadata["issuer"],
        )
        assert claims["nonce"] == nonce and claims["azp"] == client_id

        me = session.get(f"{server}/auth/me", timeout=10)
        assert me.status_code == 200, me.text
        assert me.json()["username"] == "hana" and me.json()["id"] == claims["sub"]
        # Authlib refreshed on its own; the refreshed pair carries a new ID token.
        assert len(updates) == 1
        refreshed = updates[0]["id_token"]
        again = jwt.decode(
            refreshed,
            jwks.get_signing_key_from_jwt(refreshed).key,
            algorithms=["RS256"],
            audience=client_id,
            issuer=metadata["issuer"],
        )
        assert again["auth_time"] == claims["auth_time"] and "nonce" not in again

        # The same code again: refused, and the session it opened is revoked.
        with pytest.raises(Exception, match="invalid_grant"):
            session.fetch_token(
                metadata["token_endpoint"], authorization_response=location, code_verifier=verifier
            )
        # Authlib's automatic refresh now fails: the session is gone.
        with pytest.raises(Exception, match="invalid_grant"):
            session.get(f"{server}/auth/me", timeout=10)
