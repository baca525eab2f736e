"""The operator's user management, run as real CLI processes against the database the app under
test uses (SQLite and PostgreSQL): users delete and set-roles, sessions list and revoke, and the
audit trail's names. What a revocation must do is checked through the app: /auth/me refuses,
the refresh token is dead, and the revocation feed carries the session."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest

from authsvc.config import Settings
from tests.conftest import PASSWORD, TEST_KEK, Harness
from tests.live import cli

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """What the commands print and refuse is under test here, not storage: SQLite alone (every
    command's service runs on both databases in the HTTP tests)."""
    return sqlite_url


class Operator:
    """`authsvc` run as a process on the harness's database."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.workdir = workdir
        self.env = {
            "AUTHSVC_DATABASE_URL": str(settings.database_url),
            "AUTHSVC_KEY_ENCRYPTION_KEY": TEST_KEK,
            "AUTHSVC_ISSUER": settings.issuer,
            "AUTHSVC_AUDIENCE": settings.audience,
            "AUTHSVC_AUTO_MIGRATE": "false",
        }

    def __call__(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return cli(self.workdir, *args, stdin=stdin, **self.env)

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def rows(self, *args: str) -> tuple[list[str], list[list[str]]]:
        header, *rows = self.ok(*args).splitlines()
        return header.split("\t"), [row.split("\t") for row in rows]


@pytest.fixture
def operator(settings: Settings, tmp_path: Path) -> Operator:
    return Operator(settings, tmp_path)


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


async def _revoked_sids(harness: Harness) -> set[str]:
    body = (await harness.client.get("/auth/revocations")).json()
    return {e["sid"] for e in body["revoked_sids"]}


def refused(result: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert result.stderr.strip().count("\n") == 0 and fragment in result.stderr, result.stderr


async def test_users_delete_revokes_the_sessions_then_deletes_the_account(
    harness: Harness, operator: Operator
) -> None:
    await harness.create_user("alice", roles=["ops"])
    first, second = await harness.login("alice"), await harness.login("alice")
    sids = {_claims(first["access_token"])["sid"], _claims(second["access_token"])["sid"]}

    refused(operator("users", "delete", "alice"), 2, "pass --yes")
    assert (await harness.me(first["access_token"])).status_code == 200
    assert operator.ok("users", "delete", "ALICE", "--yes") == (
        "deleted user alice; revoked 2 session(s)\n"
    )

    for tokens in (first, second):
        assert (await harness.me(tokens["access_token"])).status_code == 401
        assert (await harness.refresh(tokens["refresh_token"])).status_code == 401
    assert sids <= await _revoked_sids(harness)
    assert operator.ok("users", "list") == "no users\n"
    response = await harness.client.post(
        "/auth/login", json={"username": "alice", "password": PASSWORD}
    )
    assert response.status_code == 401
    refused(operator("users", "delete", "alice", "--yes"), 1, "No such user")

    _, events = operator.rows("audit", "--user", "alice")
    deleted = events[0]
    assert deleted[1:3] == ["user_deleted", "alice"] and deleted[5] == "cli"
    assert '"sessions_revoked": 2' in deleted[6]
    # The name is free again; the new alice is someone else.
    await harness.create_user("alice")
    assert operator.rows("users", "list")[1][0][0] == "alice"


async def test_users_set_roles_reach_new_tokens(harness: Harness, operator: Operator) -> None:
    await harness.create_user("alice", roles=["reader"])
    tokens = await harness.login("alice")
    assert operator.ok("users", "set-roles", "alice", "--role", "ops", "--role", "admin") == (
        "roles of alice: ops,admin (were reader)\n"
    )
    # The access token out there keeps its roles until it expires; a refresh gets the new ones.
    assert (await harness.me(tokens["access_token"])).status_code == 200
    assert _claims(tokens["access_token"])["roles"] == ["reader"]
    refreshed = await harness.refresh(tokens["refresh_token"])
    assert _claims(refreshed.json()["access_token"])["roles"] == ["ops", "admin"]
    header, users = operator.rows("users", "list")
    assert header == ["USERNAME", "STATUS", "ROLES", "CREATED", "ID"]
    assert users[0][:3] == ["alice", "active", "ops,admin"]

    # No --role: no roles; --revoke-sessions ends the tokens that carry the old ones.
    out = operator.ok("users", "set-roles", "alice", "--revoke-sessions")
    assert out == "roles of alice: (none) (were ops,admin)\nrevoked 1 session(s)\n"
    assert (await harness.me(refreshed.json()["access_token"])).status_code == 401
    assert _claims(tokens["access_token"])["sid"] in await _revoked_sids(harness)

    refused(operator("users", "set-roles", "alice", "--role", "two words"), 2, "invalid role")
    refused(operator("users", "set-roles", "nobody", "--role", "x"), 1, "No such user")
    _, events = operator.rows("audit", "--user", "alice")
    assert [e[1] for e in events[:2]] == ["roles_changed", "roles_changed"]


async def test_sessions_list_and_revoke(harness: Harness, operator: Operator) -> None:
    await harness.create_user("alice")
    await harness.create_user("bob")
    older, newer = await harness.login("alice"), await harness.login("alice")
    bobs = await harness.login("bob")
    sid_older, sid_newer = (_claims(t["access_token"])["sid"] for t in (older, newer))

    header, rows = operator.rows("sessions", "list", "alice")
    assert header == ["SESSION", "CREATED", "LAST_USED", "EXPIRES", "IP", "CLIENT", "USER_AGENT"]
    assert {row[0] for row in rows} == {sid_older, sid_newer}
    assert all(row[4] == "203.0.113.7" for row in rows)

    assert operator.ok("sessions", "revoke", sid_older) == (
        f"revoked session {sid_older} of alice\n"
    )
    assert (await harness.me(older["access_token"])).status_code == 401
    assert (await harness.refresh(older["refresh_token"])).status_code == 401
    assert (await harness.me(newer["access_token"])).status_code == 200
    assert sid_older in await _revoked_sids(harness)
    refused(operator("sessions", "revoke", sid_older), 1, "No such live session")
    refused(operator("sessions", "revoke", str(uuid.uuid4())), 1, "No such live session")
    refused(operator("sessions", "revoke", "not-an-id"), 1, "No such session")

    assert operator.ok("sessions", "revoke", "--user", "Alice", "--all") == (
        "revoked 1 session(s) of alice\n"
    )
    assert (await harness.me(newer["access_token"])).status_code == 401
    assert operator.ok("sessions", "list", "alice") == "no live sessions for alice\n"
    assert (await harness.me(bobs["access_token"])).status_code == 200

    for wrong in (
        [],
        ["--user", "alice"],
        ["--all"],
        [sid_newer, "--user", "alice", "--all"],
    ):
        refused(operator("sessions", "revoke", *wrong), 2, "give either a SESSION id")
    refused(operator("sessions", "list", "nobody"), 1, "No such user")
    _, events = operator.rows("audit", "--user", "alice")
    assert [(e[1], e[3]) for e in events[:2]] == [
        ("sessions_revoked", "-"),
        ("sessions_revoked", sid_older),
    ]


async def test_audit_names_users_whose_events_recorded_only_their_id(
    harness: Harness, operator: Operator
) -> None:
    await harness.create_user("alice")
    tokens = await harness.login("alice")
    out = await harness.client.post(
        "/auth/logout", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert out.status_code == 204
    header, events = operator.rows("audit")
    assert header == ["AT", "EVENT", "USER", "SESSION", "IP", "ACTOR", "DETAILS"]
    assert [e[1:3] for e in events] == [
        ["logout", "alice"],
        ["login_succeeded", "alice"],
        ["user_created", "alice"],
    ]
    # Deleted, the user is still named by what the trail recorded.
    operator.ok("users", "delete", "alice", "--yes")
    assert [e[1:3] for e in operator.rows("audit")[1]][1] == ["logout", "alice"]
    assert [e[1] for e in operator.rows("audit", "--user", "alice")[1]] == [
        "user_deleted",
        "logout",
        "login_succeeded",
        "user_created",
    ]


async def test_empty_lists_say_so(operator: Operator) -> None:
    assert operator.ok("users", "list") == "no users\n"
    assert operator.ok("clients", "list") == "no clients\n"
    assert operator.ok("audit") == "no audit events\n"
