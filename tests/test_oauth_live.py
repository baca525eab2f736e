"""A standard OAuth 2 client library (Authlib's OAuth2Session) against a live authsvc process:
clients made with the CLI, the password grant, an automatic refresh, introspection, revocation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from authlib.integrations.requests_client import OAuth2Session  # type: ignore[import-untyped]

from tests.live import cli, live_server

pytestmark = pytest.mark.slow

# Shorter than Authlib's 60 s refresh leeway: every request finds the token "expiring" and
# refreshes it first, as a client would after a real expiry.
LIVE_ENV = {"AUTHSVC_ACCESS_TOKEN_TTL": "10"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("oauth-live")


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[str]:
    # One live server (and its SQLite database) for the tests of this module.
    with live_server(workdir, environ=LIVE_ENV) as base:
        yield base


def create_client(workdir: Path, *args: str) -> dict[str, str]:
    # These tests drive the password grant, which a client gets only when it asks for it.
    grants = ("--grant", "password", "--grant", "refresh_token")
    made = cli(workdir, "clients", "create", *args, *grants, **LIVE_ENV)
    assert made.returncode == 0, made.stderr
    fields = dict(line.split(": ", 1) for line in made.stdout.splitlines() if ": " in line)
    return fields


def test_authlib_password_grant_and_automatic_refresh(server: str, workdir: Path) -> None:
    assert (
        cli(
            workdir, "users", "create", "frank", "--password-stdin", stdin="frank's password\n"
        ).returncode
        == 0
    )
    app = create_client(workdir, "Frank's app", "--confidential")
    assert app["type"] == "confidential" and app["client_secret"].startswith("cs_")
    listed = cli(workdir, "clients", "list").stdout
    assert app["client_id"] in listed and app["client_secret"] not in listed

    updates: list[dict[str, Any]] = []

    def update_token(token: dict[str, Any], refresh_token: str | None = None, **_: Any) -> None:
        updates.append({"token": dict(token), "old_refresh_token": refresh_token})

    metadata = httpx.get(f"{server}/.well-known/oauth-authorization-server").json()
    with OAuth2Session(
        client_id=app["client_id"],
        client_secret=app["client_secret"],  # client_secret_basic, Authlib's default
        token_endpoint=metadata["token_endpoint"],
        update_token=update_token,
    ) as session:
        token = session.fetch_token(
            metadata["token_endpoint"], username="frank", password="frank's password"
        )
        assert token["token_type"] == "Bearer" and token["scope"] == "api"
        first_refresh = token["refresh_token"]

        me = session.get(f"{server}/auth/me", timeout=10)
        assert me.status_code == 200, me.text
        assert me.json()["username"] == "frank"
        # Authlib saw the token expiring and refreshed it through /oauth/token on its own.
        assert len(updates) == 1
        assert updates[0]["old_refresh_token"] == first_refresh
        assert session.token["refresh_token"] != first_refresh

        again = session.get(f"{server}/auth/me", timeout=10)
        assert again.status_code == 200
        assert len(updates) == 2

        current = session.token["access_token"]
        live = session.introspect_token(metadata["introspection_endpoint"], token=current)
        assert live.json()["active"] is True
        assert live.json()["client_id"] == app["client_id"]
        revoked = session.revoke_token(
            metadata["revocation_endpoint"],
            token=session.token["refresh_token"],
            token_type_hint="refresh_token",
        )
        assert revoked.status_code == 200
        dead = session.introspect_token(metadata["introspection_endpoint"], token=current)
        assert dead.json() == {"active": False}

    deleted = cli(workdir, "clients", "delete", app["client_id"])
    assert deleted.returncode == 0, deleted.stderr
    again = cli(workdir, "clients", "delete", app["client_id"])
    assert again.returncode == 1, (again.returncode, again.stdout, again.stderr)


def test_authlib_public_client(server: str, workdir: Path) -> None:
    assert (
        cli(
            workdir, "users", "create", "gina", "--password-stdin", stdin="gina's password\n"
        ).returncode
        == 0
    )
    app = create_client(workdir, "Gina's SPA", "--audience", "orders")
    assert app["type"] == "public" and "client_secret" not in app
    with OAuth2Session(client_id=app["client_id"], token_endpoint_auth_method="none") as session:
        token = session.fetch_token(
            f"{server}/oauth/token", username="gina", password="gina's password"
        )
        refreshed = session.refresh_token(f"{server}/oauth/token")
        assert refreshed["refresh_token"] != token["refresh_token"]
        with pytest.raises(Exception, match="invalid_grant"):
            session.fetch_token(f"{server}/oauth/token", username="gina", password="wrong")
