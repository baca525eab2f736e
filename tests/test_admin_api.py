"""/admin: the admin API, for access tokens whose user has the admin role (now, in the database)."""

from __future__ import annotations

import base64
import functools
import json
import uuid
from typing import Any
from urllib.parse import quote

import anyio.from_thread
import anyio.to_thread
import httpx
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authsvc.services.admin import ADMIN_ROLE
from tests.conftest import PASSWORD, Harness
from tests.test_client_credentials import issued, make_client

pytestmark = pytest.mark.anyio

NEW_PASSWORD = "a brand new admin-set passphrase"

# Every admin operation, with a path whose ids may not exist: the gate answers before them. A
# fixed id: every pytest-xdist worker must collect the same test names.
_SOME_ID = "7d3f0c2a-5b1e-4c8d-9a6f-2e4b8c1d0f3a"
OPERATIONS = [
    ("GET", "/admin/users"),
    ("POST", "/admin/users"),
    ("GET", f"/admin/users/{_SOME_ID}"),
    ("PATCH", f"/admin/users/{_SOME_ID}"),
    ("DELETE", f"/admin/users/{_SOME_ID}"),
    ("POST", f"/admin/users/{_SOME_ID}/password"),
    ("DELETE", f"/admin/users/{_SOME_ID}/mfa"),
    ("GET", f"/admin/users/{_SOME_ID}/sessions"),
    ("DELETE", f"/admin/sessions/{_SOME_ID}"),
    ("GET", "/admin/clients"),
    ("POST", "/admin/clients"),
    ("DELETE", "/admin/clients/some-client"),
    ("POST", "/admin/clients/some-client/secret"),
    ("GET", "/admin/keys"),
    ("POST", "/admin/keys/rotate"),
    ("GET", "/admin/audit"),
    ("GET", "/admin/audit/export"),
]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Admin:
    """An admin's side of the API: the harness plus the admin's access token."""

    def __init__(self, harness: Harness, token: str, user_id: str) -> None:
        self.harness = harness
        self.token = token
        self.user_id = user_id

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        return await self.harness.client.request(method, path, headers=bearer(self.token), **kwargs)

    async def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        response = await self.call(method, path, **kwargs)
        assert response.status_code == status, response.text
        return response.json() if response.content else None


@pytest.fixture
async def admin(harness: Harness) -> Admin:
    user_id = await harness.create_user("root", roles=[ADMIN_ROLE])
    tokens = await harness.login("root")
    return Admin(harness, tokens["access_token"], user_id)


async def _feed_sids(harness: Harness) -> set[str]:
    body = (await harness.client.get("/auth/revocations")).json()
    return {e["sid"] for e in body["revoked_sids"]}


def _sid(access_token: str) -> str:
    sid: str = jwt.decode(access_token, options={"verify_signature": False})["sid"]
    return sid


# -- The gate


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
async def test_no_token_is_401_a_bad_one_401_and_a_non_admin_403(
    harness: Harness, method: str, path: str
) -> None:
    await harness.create_user("alice", roles=["editor"])
    user = await harness.login("alice")
    body: dict[str, Any] = {"json": {}} if method in ("POST", "PATCH") else {}

    missing = await harness.client.request(method, path, **body)
    assert missing.status_code == 401
    assert missing.json()["error"] == "invalid_token"
    assert missing.headers["www-authenticate"] == 'Bearer realm="authsvc"'

    forged = await harness.client.request(method, path, headers=bearer("x.y.z"), **body)
    assert forged.status_code == 401

    refused = await harness.client.request(
        method, path, headers=bearer(user["access_token"]), **body
    )
    assert refused.status_code == 403, refused.text
    assert refused.json() == {"error": "forbidden", "message": "This needs the admin role."}


async def test_the_role_is_read_from_the_database_not_the_token(
    harness: Harness, admin: Admin
) -> None:
    await admin.ok("GET", "/admin/users")
    # The token still says "admin"; the users row no longer does.
    async with harness.state.database.transaction() as db:
        root = await harness.state.users.get(db, "root")
        await harness.state.admin.set_roles(db, root, [], harness.clock.now(), "cli")
    assert (await admin.call("GET", "/admin/users")).status_code == 403
    # And a logged-out admin's token is refused like any revoked token.
    async with harness.state.database.transaction() as db:
        root = await harness.state.users.get(db, "root")
        await harness.state.admin.set_roles(db, root, ["admin"], harness.clock.now(), "cli")
    await harness.client.post("/auth/logout", headers=bearer(admin.token))
    assert (await admin.call("GET", "/admin/users")).status_code == 401


# -- Users


async def test_create_get_and_patch_a_user(harness: Harness, admin: Admin) -> None:
    made = await admin.ok(
        "POST",
        "/admin/users",
        201,
        json={
            "username": "Bob",
            "password": PASSWORD,
            "email": " Bob@Example.COM ",
            "roles": ["editor"],
        },
    )
    assert made["username"] == "bob" and made["email"] == "bob@example.com"
    assert made["roles"] == ["editor"] and made["active"] is True
    uuid.UUID(made["id"])
    assert (await harness.login("bob"))["access_token"]
    assert await admin.ok("GET", f"/admin/users/{made['id']}") == made

    taken = await admin.call("POST", "/admin/users", json={"username": "BOB"})
    assert (taken.status_code, taken.json()["error"]) == (409, "user_exists")
    same_email = await admin.call(
        "POST", "/admin/users", json={"username": "carol", "email": "BOB@example.com"}
    )
    assert (same_email.status_code, same_email.json()["error"]) == (409, "email_exists")
    for bad, code in (
        ({"username": "carol", "email": "not an address"}, "invalid_email"),
        ({"username": "carol", "roles": ["two words"]}, "invalid_request"),
        ({"username": "carol", "password": "short"}, "password_policy"),
        ({"username": "bad name"}, "invalid_username"),
        ({"username": "carol", "is_admin": True}, "invalid_request"),
    ):
        response = await admin.call("POST", "/admin/users", json=bad)
        assert (response.status_code, response.json()["error"]) == (400, code), bad

    changed = await admin.ok(
        "PATCH",
        f"/admin/users/{made['id']}",
        json={"roles": ["editor", "auditor"], "email": "robert@example.com"},
    )
    assert changed["roles"] == ["editor", "auditor"]
    assert changed["email"] == "robert@example.com"
    # The old address is free again; a PATCH to a taken one is a conflict and changes nothing.
    carol = await admin.ok(
        "POST", "/admin/users", 201, json={"username": "carol", "email": "bob@example.com"}
    )
    clash = await admin.call(
        "PATCH", f"/admin/users/{carol['id']}", json={"email": "robert@example.com"}
    )
    assert (clash.status_code, clash.json()["error"]) == (409, "email_exists")
    assert (await admin.ok("GET", f"/admin/users/{carol['id']}"))["email"] == "bob@example.com"
    cleared = await admin.ok("PATCH", f"/admin/users/{carol['id']}", json={"email": None})
    assert cleared["email"] is None
    untouched = await admin.ok("PATCH", f"/admin/users/{made['id']}", json={})
    assert untouched["email"] == "robert@example.com"


async def test_a_user_made_without_a_password_cannot_log_in_until_one_is_set(
    harness: Harness, admin: Admin
) -> None:
    made = await admin.ok("POST", "/admin/users", 201, json={"username": "dana"})
    attempt = await harness.client.post(
        "/auth/login", json={"username": "dana", "password": PASSWORD}
    )
    assert attempt.status_code == 401
    short = await admin.call(
        "POST", f"/admin/users/{made['id']}/password", json={"password": "short"}
    )
    assert (short.status_code, short.json()["error"]) == (400, "password_policy")
    await admin.ok("POST", f"/admin/users/{made['id']}/password", 204, json={"password": PASSWORD})
    assert (await harness.login("dana"))["access_token"]


async def test_setting_a_password_revokes_every_session(harness: Harness, admin: Admin) -> None:
    user_id = await harness.create_user("erin")
    tokens = await harness.login("erin")
    await admin.ok("POST", f"/admin/users/{user_id}/password", 204, json={"password": NEW_PASSWORD})
    assert (await harness.refresh(tokens["refresh_token"])).status_code == 401
    assert (await harness.me(tokens["access_token"])).status_code == 401
    assert (await harness.login("erin", NEW_PASSWORD))["access_token"]


async def test_disabling_revokes_every_session_on_the_feed_and_refresh_fails(
    harness: Harness, admin: Admin
) -> None:
    user_id = await harness.create_user("frank")
    first, second = await harness.login("frank"), await harness.login("frank")
    disabled = await admin.ok("PATCH", f"/admin/users/{user_id}", json={"active": False})
    assert disabled["active"] is False
    for tokens in (first, second):
        assert (await harness.me(tokens["access_token"])).status_code == 401
        refused = await harness.refresh(tokens["refresh_token"])
        assert refused.status_code == 401
    assert {_sid(first["access_token"]), _sid(second["access_token"])} <= await _feed_sids(harness)
    login = await harness.client.post(
        "/auth/login", json={"username": "frank", "password": PASSWORD}
    )
    assert login.status_code == 401
    enabled = await admin.ok("PATCH", f"/admin/users/{user_id}", json={"active": True})
    assert enabled["active"] is True
    assert (await harness.login("frank"))["access_token"]


async def test_deleting_revokes_every_session_then_the_user_is_gone(
    harness: Harness, admin: Admin
) -> None:
    user_id = await harness.create_user("gina")
    tokens = await harness.login("gina")
    await admin.ok("DELETE", f"/admin/users/{user_id}", 204)
    assert _sid(tokens["access_token"]) in await _feed_sids(harness)
    assert (await harness.me(tokens["access_token"])).status_code == 401
    assert (await harness.refresh(tokens["refresh_token"])).status_code == 401
    assert (await admin.call("GET", f"/admin/users/{user_id}")).status_code == 404
    assert (await admin.call("DELETE", f"/admin/users/{user_id}")).status_code == 404


async def test_ids_that_name_nothing_are_404(admin: Admin) -> None:
    for raw in ("not-a-uuid", str(uuid.uuid4()), "%20"):
        for method, path in (
            ("GET", f"/admin/users/{raw}"),
            ("GET", f"/admin/users/{raw}/sessions"),
            ("DELETE", f"/admin/users/{raw}"),
            ("DELETE", f"/admin/sessions/{raw}"),
            ("DELETE", f"/admin/clients/{raw}"),
        ):
            response = await admin.call(method, path)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"] == "not_found"


async def test_users_are_paged_by_name_with_an_opaque_cursor_and_searched(
    harness: Harness, admin: Admin
) -> None:
    for name in ("uma", "victor", "walt", "xena"):
        await admin.ok(
            "POST", "/admin/users", 201, json={"username": name, "email": f"{name}@corp.test"}
        )
    await admin.ok("POST", "/admin/users", 201, json={"username": "yann", "email": "y@home.test"})
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = await admin.ok("GET", "/admin/users", params=params)
        seen += [u["username"] for u in page["users"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["root", "uma", "victor", "walt", "xena", "yann"]
    assert pages == 3

    by_email = await admin.ok("GET", "/admin/users", params={"query": "CORP.test", "limit": 3})
    assert [u["username"] for u in by_email["users"]] == ["uma", "victor", "walt"]
    rest = await admin.ok(
        "GET",
        "/admin/users",
        params={"query": "corp.test", "limit": 3, "cursor": by_email["next_cursor"]},
    )
    assert [u["username"] for u in rest["users"]] == ["xena"] and rest["next_cursor"] is None
    by_name = await admin.ok("GET", "/admin/users", params={"query": "Ann"})
    assert [u["username"] for u in by_name["users"]] == ["yann"]
    # LIKE wildcards are matched literally.
    assert (await admin.ok("GET", "/admin/users", params={"query": "%"}))["users"] == []

    forged = base64.urlsafe_b64encode(b"[1]").decode()
    for bad in ("!!!", "bm90IGpzb24", forged):
        response = await admin.call("GET", "/admin/users", params={"cursor": bad})
        assert (response.status_code, response.json()["error"]) == (400, "invalid_request")
    for limit in ("0", "201", "x"):
        response = await admin.call("GET", "/admin/users", params={"limit": limit})
        assert response.status_code == 400


# -- Sessions


async def test_list_and_revoke_a_users_sessions(harness: Harness, admin: Admin) -> None:
    user_id = await harness.create_user("hana")
    older = await harness.login("hana")
    harness.clock.advance(5)
    newer = await harness.login("hana")
    listed = await admin.ok("GET", f"/admin/users/{user_id}/sessions")
    ids = [s["id"] for s in listed["sessions"]]
    assert ids == [_sid(newer["access_token"]), _sid(older["access_token"])]
    assert listed["sessions"][0]["user_id"] == user_id
    assert listed["sessions"][0]["ip"] == "203.0.113.7"

    await admin.ok("DELETE", f"/admin/sessions/{ids[1]}", 204)
    assert (await harness.me(older["access_token"])).status_code == 401
    assert (await harness.refresh(older["refresh_token"])).status_code == 401
    assert (await harness.me(newer["access_token"])).status_code == 200
    assert ids[1] in await _feed_sids(harness)
    again = await admin.call("DELETE", f"/admin/sessions/{ids[1]}")
    assert again.status_code == 404
    remaining = await admin.ok("GET", f"/admin/users/{user_id}/sessions")
    assert [s["id"] for s in remaining["sessions"]] == [ids[0]]


# -- Clients and keys


async def test_clients_are_created_listed_rotated_and_deleted(
    harness: Harness, admin: Admin
) -> None:
    made = await admin.ok(
        "POST",
        "/admin/clients",
        201,
        json={
            "name": "billing",
            "confidential": True,
            "redirect_uris": ["https://billing.example/cb"],
        },
    )
    client_id, secret = made["client_id"], made["client_secret"]
    assert made["type"] == "confidential" and secret.startswith("cs_")
    assert made["grant_types"] == ["authorization_code", "refresh_token"]
    assert made["redirect_uris"] == ["https://billing.example/cb"] and made["first_party"]
    public = await admin.ok(
        "POST",
        "/admin/clients",
        201,
        json={"name": "spa", "audience": "api.spa", "grant_types": ["password"]},
    )
    assert public["client_secret"] is None and public["audience"] == "api.spa"
    listed = await admin.ok("GET", "/admin/clients")
    assert {c["client_id"] for c in listed["clients"]} == {client_id, public["client_id"]}
    assert all("client_secret" not in c for c in listed["clients"])

    async def introspects(secret: str) -> int:
        response = await harness.client.post(
            "/oauth/introspect",
            data={"token": "x", "client_id": client_id, "client_secret": secret},
        )
        return response.status_code

    assert await introspects(secret) == 200
    rotated = await admin.ok("POST", f"/admin/clients/{client_id}/secret")
    assert rotated["client_id"] == client_id and rotated["client_secret"] != secret
    assert await introspects(secret) == 401
    assert await introspects(rotated["client_secret"]) == 200

    no_secret = await admin.call("POST", f"/admin/clients/{public['client_id']}/secret")
    assert (no_secret.status_code, no_secret.json()["error"]) == (400, "invalid_request")
    unknown = await admin.call("POST", "/admin/clients/nope/secret")
    assert unknown.status_code == 404
    bad_grant = await admin.call(
        "POST", "/admin/clients", json={"name": "x", "grant_types": ["authorization_code"]}
    )
    assert (bad_grant.status_code, bad_grant.json()["error"]) == (400, "invalid_request")
    bad_uri = await admin.call(
        "POST", "/admin/clients", json={"name": "x", "redirect_uris": ["http://evil.example/"]}
    )
    assert (bad_uri.status_code, bad_uri.json()["error"]) == (400, "invalid_request")
    blank = await admin.call("POST", "/admin/clients", json={"name": "   "})
    assert blank.status_code == 400

    await admin.ok("DELETE", f"/admin/clients/{client_id}", 204)
    assert await introspects(rotated["client_secret"]) == 401
    assert (await admin.call("DELETE", f"/admin/clients/{client_id}")).status_code == 404


async def test_keys_are_listed_and_rotated(harness: Harness, admin: Admin) -> None:
    before = await admin.ok("GET", "/admin/keys")
    assert [k["state"] for k in before["keys"]] == ["active"]
    rotated = await admin.ok("POST", "/admin/keys/rotate", 201)
    assert rotated["state"] == "published" and rotated["kid"] != before["keys"][0]["kid"]
    after = await admin.ok("GET", "/admin/keys")
    assert [k["kid"] for k in after["keys"]] == [before["keys"][0]["kid"], rotated["kid"]]
    jwks = (await harness.client.get("/.well-known/jwks.json")).json()
    assert rotated["kid"] in {k["kid"] for k in jwks["keys"]}


# -- The audit trail


async def test_every_admin_action_is_audited_with_the_acting_admin(
    harness: Harness, admin: Admin
) -> None:
    made = await admin.ok("POST", "/admin/users", 201, json={"username": "ivan"})
    user_id = made["id"]
    await harness.login("root")  # not an admin action: actor-less
    await admin.ok("PATCH", f"/admin/users/{user_id}", json={"roles": ["x"]})
    await admin.ok("PATCH", f"/admin/users/{user_id}", json={"email": "ivan@example.com"})
    await admin.ok("PATCH", f"/admin/users/{user_id}", json={"active": False})
    await admin.ok("POST", f"/admin/users/{user_id}/password", 204, json={"password": PASSWORD})
    await admin.ok("PATCH", f"/admin/users/{user_id}", json={"active": True})
    tokens = await harness.login("ivan")
    await admin.ok("DELETE", f"/admin/sessions/{_sid(tokens['access_token'])}", 204)
    client = await admin.ok(
        "POST",
        "/admin/clients",
        201,
        json={"name": "c", "confidential": True, "grant_types": ["client_credentials"]},
    )
    await admin.ok("POST", f"/admin/clients/{client['client_id']}/secret")
    await admin.ok("DELETE", f"/admin/clients/{client['client_id']}", 204)
    await admin.ok("POST", "/admin/keys/rotate", 201)
    await admin.ok("DELETE", f"/admin/users/{user_id}", 204)

    trail = (await admin.ok("GET", "/admin/audit", params={"limit": 200}))["events"]
    by_admin = [(e["event"], e["username"]) for e in trail if e["actor"] == f"user:{admin.user_id}"]
    assert by_admin[::-1] == [
        ("user_created", "ivan"),
        ("roles_changed", "ivan"),
        ("email_changed", "ivan"),
        ("user_disabled", "ivan"),
        ("password_changed", "ivan"),
        ("user_enabled", "ivan"),
        ("sessions_revoked", "ivan"),
        ("client_created", None),
        ("client_secret_rotated", None),
        ("client_deleted", None),
        ("key_rotated", None),
        ("user_deleted", "ivan"),
    ]
    logins = [e for e in trail if e["event"] == "login_succeeded"]
    assert logins and all(e["actor"] is None for e in logins)
    rotated = next(e for e in trail if e["event"] == "client_secret_rotated")
    assert rotated["details"] == {"client_id": client["client_id"]}

    # Filters: a deleted user by name or id, an event, a time window.
    about_ivan = await admin.ok("GET", "/admin/audit", params={"user": "IVAN"})
    assert {e["user_id"] for e in about_ivan["events"]} == {user_id}
    assert len(about_ivan["events"]) == len(
        (await admin.ok("GET", "/admin/audit", params={"user": user_id}))["events"]
    )
    created = await admin.ok("GET", "/admin/audit", params={"event": "user_created"})
    assert [e["username"] for e in created["events"]] == ["ivan", "root"]
    harness.clock.advance(60)
    later = harness.clock.now()
    await admin.ok("POST", "/admin/keys/rotate", 201)
    recent = await admin.ok("GET", "/admin/audit", params={"since": later.isoformat()})
    assert [e["event"] for e in recent["events"]] == ["key_rotated"]
    naive = later.replace(tzinfo=None).isoformat()
    older = await admin.ok("GET", "/admin/audit", params={"until": naive, "event": "key_rotated"})
    assert len(older["events"]) == 1
    nobody = await admin.ok("GET", "/admin/audit", params={"user": "no such name!"})
    assert nobody["events"] == []


async def test_the_audit_trail_pages_newest_first(harness: Harness, admin: Admin) -> None:
    for i in range(5):
        await admin.ok("POST", "/admin/users", 201, json={"username": f"user{i}"})
    everything = (await admin.ok("GET", "/admin/audit", params={"limit": 200}))["events"]
    ids: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = await admin.ok("GET", "/admin/audit", params=params)
        ids += [e["id"] for e in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert ids == [e["id"] for e in everything]
    assert ids == sorted(ids, reverse=True)  # one clock tick: newest first by id
    for bad in ("%%%", base64.urlsafe_b64encode(b'{"at": 1, "id": 1}').decode()):
        response = await admin.call("GET", "/admin/audit", params={"cursor": bad})
        assert response.status_code == 400
    for bad_time in ("yesterday", "0001-01-01T00:00:00+01:00"):
        response = await admin.call("GET", "/admin/audit", params={"since": bad_time})
        assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


async def test_the_audit_export_streams_json_lines(
    harness: Harness, admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(7):
        await admin.ok("POST", "/admin/users", 201, json={"username": f"member{i}"})
    # Small batches, so that the export crosses several of them.
    monkeypatch.setattr("authsvc.services.admin.EXPORT_BATCH", 3)
    listed = (await admin.ok("GET", "/admin/audit", params={"limit": 200}))["events"]
    response = await admin.call("GET", "/admin/audit/export")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["cache-control"] == "no-store"
    assert response.text.endswith("\n")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines == listed
    filtered = await admin.call(
        "GET", "/admin/audit/export", params={"event": "user_created", "user": "member3"}
    )
    assert [json.loads(line)["username"] for line in filtered.text.splitlines()] == ["member3"]
    empty = await admin.call("GET", "/admin/audit/export", params={"user": "nobody"})
    assert (empty.status_code, empty.text) == (200, "")


# -- Arbitrary input behind the gate

_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)
_FIELDS = ["username", "password", "email", "roles", "active", "name", "confidential"]
_FIELDS += ["audience", "grant_types", "x"]
_PARAMS = ["query", "limit", "cursor", "user", "event", "since", "until"]


async def test_arbitrary_input_from_an_admin_never_500s(harness: Harness, admin: Admin) -> None:
    """Whatever an admin sends, the answer is a JSON error or a success, never a 5xx (NUL
    characters included, which PostgreSQL refuses in text)."""
    target = await harness.create_user("target")
    failures: list[str] = []
    writes = [
        ("POST", "/admin/users"),
        ("PATCH", f"/admin/users/{target}"),
        ("POST", "/admin/clients"),
        ("POST", f"/admin/users/{target}/password"),
    ]
    reads = ["/admin/users", "/admin/audit", "/admin/audit/export"]
    paths = ["/admin/users/{}", "/admin/users/{}/sessions", "/admin/clients/{}/secret"]

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        write=st.sampled_from(writes),
        body=st.dictionaries(st.sampled_from(_FIELDS), _values),
        read=st.sampled_from(reads),
        params=st.dictionaries(st.sampled_from(_PARAMS), st.text(max_size=16)),
        path=st.sampled_from(paths),
        segment=st.text(min_size=1, max_size=16),
    )
    def check(
        write: tuple[str, str],
        body: dict[str, Any],
        read: str,
        params: dict[str, str],
        path: str,
        segment: str,
    ) -> None:
        method = "POST" if path.endswith("secret") else "GET"
        calls = [
            (write[0], write[1], {"json": body}),
            ("GET", read, {"params": params}),
            (method, path.format(quote(segment, safe="")), {}),
        ]
        for method, url, kwargs in calls:
            # Hypothesis drives a plain function in a worker thread; requests run on the loop.
            response = anyio.from_thread.run(functools.partial(admin.call, method, url, **kwargs))
            if response.status_code >= 500 or (
                response.status_code >= 400 and set(response.json()) != {"error", "message"}
            ):
                failures.append(f"{method} {url} {kwargs!r} -> {response.status_code}")

    await anyio.to_thread.run_sync(check)
    assert not failures, failures[:5]


async def test_nul_characters_are_refused_or_match_nothing(harness: Harness, admin: Admin) -> None:
    target = await harness.create_user("target")
    for method, path, kwargs, status in (
        ("POST", "/admin/users", {"json": {"username": "a\x00b"}}, 400),
        ("POST", "/admin/users", {"json": {"username": "ab", "email": "a\x00@b.c"}}, 400),
        ("POST", "/admin/users", {"json": {"username": "ab", "roles": ["a\x00"]}}, 400),
        ("PATCH", f"/admin/users/{target}", {"json": {"roles": ["\x00"]}}, 400),
        ("POST", "/admin/clients", {"json": {"name": "a\x00"}}, 400),
        ("POST", "/admin/clients", {"json": {"name": "a", "audience": "\x00"}}, 400),
        ("DELETE", "/admin/clients/a%00b", {}, 404),
        ("POST", "/admin/clients/a%00b/secret", {}, 404),
        ("GET", "/admin/users", {"params": {"query": "a\x00"}}, 200),
        ("GET", "/admin/audit", {"params": {"event": "a\x00", "user": "\x00"}}, 200),
    ):
        response = await admin.call(method, path, **kwargs)
        assert response.status_code == status, (method, path, kwargs, response.text)
    forged = base64.urlsafe_b64encode(json.dumps({"u": "a\x00"}).encode()).decode()
    response = await admin.call("GET", "/admin/users", params={"cursor": forged})
    assert response.status_code == 400


async def test_admin_answers_are_not_cached(admin: Admin) -> None:
    response = await admin.call("GET", "/admin/users")
    assert response.headers["cache-control"] == "no-store"


async def test_the_admin_api_is_in_the_openapi_document(harness: Harness) -> None:
    schema = (await harness.client.get("/openapi.json")).json()
    admin_ops = {
        (method.upper(), path)
        for path, item in schema["paths"].items()
        if path.startswith("/admin")
        for method in item
    }
    assert len(admin_ops) == len(OPERATIONS)
    for path, item in schema["paths"].items():
        if path.startswith("/admin"):
            for operation in item.values():
                assert operation["tags"] == ["admin"]
                assert {"401", "403"} <= set(operation["responses"])


async def test_a_client_registered_for_the_admin_scope_may_call_it(harness: Harness) -> None:
    async def client_token(scopes: list[str] | None) -> httpx.Response:
        async with harness.state.database.transaction() as db:
            made = await harness.state.clients.create(
                db,
                "provisioning",
                harness.clock.now(),
                confidential=True,
                grant_types=["client_credentials"],
                scopes=scopes,
                actor="test",
            )
        assert made.secret is not None
        return await harness.client.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "scope": "admin",
                "client_id": made.client.client_id,
                "client_secret": made.secret,
            },
        )

    # Without `admin` named at registration, the scope is not the client's to ask for.
    refused = await client_token(None)
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_scope")
    granted = await client_token(["admin"])
    assert granted.status_code == 200, granted.text
    token = granted.json()["access_token"]
    listed = await harness.client.get("/admin/users", headers=bearer(token))
    assert listed.status_code == 200, listed.text
    made = await harness.client.post(
        "/admin/users", headers=bearer(token), json={"username": "provisioned"}
    )
    assert made.status_code == 201
    audit = (await harness.client.get("/admin/audit", headers=bearer(token))).json()
    assert audit["events"][0]["actor"].startswith("client:")
    # A user token never passes as a client's: it still needs the role.
    await harness.create_user("nobody")
    user_token = (await harness.login("nobody"))["access_token"]
    assert (await harness.client.get("/admin/users", headers=bearer(user_token))).status_code == 403


async def test_a_client_token_without_the_admin_scope_is_403(harness: Harness) -> None:
    # Registered for `admin` but asking only for `api`: the token's scope is what counts.
    for registered in (["api"], ["api", "admin"]):
        client_id, secret = await make_client(harness, scopes=registered)
        token = (await issued(harness, client_id, secret, scope="api"))["access_token"]
        for method, path in (("GET", "/admin/users"), ("POST", "/admin/keys/rotate")):
            refused = await harness.client.request(method, path, headers=bearer(token))
            assert refused.status_code == 403, refused.text
            assert refused.json() == {
                "error": "forbidden",
                "message": "This needs the admin scope.",
            }
