"""Bad input gets a clear 4xx in the error envelope, never a 500, and writes nothing."""

from __future__ import annotations

from typing import Any

import anyio.from_thread
import anyio.to_thread
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from authsvc.store.models import RefreshToken, Session
from tests.conftest import Harness


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """Request handling, not storage, is under test here: SQLite alone."""
    return sqlite_url


pytestmark = pytest.mark.anyio

ENDPOINTS = ["/auth/login", "/auth/refresh", "/auth/logout"]


async def _rows(harness: Harness) -> tuple[int, int]:
    async with harness.state.database.read() as db:
        sessions = (await db.execute(select(func.count()).select_from(Session))).scalar_one()
        tokens = (await db.execute(select(func.count()).select_from(RefreshToken))).scalar_one()
    return int(sessions), int(tokens)


def _assert_envelope(response: Any, status: int) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message"}
    assert isinstance(body["error"], str) and body["error"]


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    "content",
    [b"{", b"not json", b"[]", b"null", b'"string"', b"\xff\xfe\xfd", b'{"username": }'],
)
async def test_malformed_json_is_400(harness: Harness, path: str, content: bytes) -> None:
    response = await harness.client.post(
        path, content=content, headers={"Content-Type": "application/json"}
    )
    if path in ("/auth/logout", "/auth/refresh") and content == b"null":
        _assert_envelope(response, 401)  # the body is optional: no credentials, then
        return
    _assert_envelope(response, 400)
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"username": "alice"},
        {"password": "x"},
        {"username": 1, "password": "x" * 10},
        {"username": ["alice"], "password": "x" * 10},
        {"username": "alice", "password": None},
        {"username": "alice", "password": {"$ne": ""}},
        {"username": "a" * 5000, "password": "x"},
    ],
)
async def test_login_with_wrong_shapes_is_400(harness: Harness, body: dict[str, Any]) -> None:
    await harness.create_user()
    response = await harness.client.post("/auth/login", json=body)
    _assert_envelope(response, 400)
    assert await _rows(harness) == (0, 0)


async def test_validation_errors_never_echo_secrets(harness: Harness) -> None:
    response = await harness.client.post(
        "/auth/login", json={"username": 12345, "password": "hunter2-secret"}
    )
    assert "hunter2-secret" not in response.text
    assert "12345" not in response.text


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_huge_body_is_413(harness: Harness, path: str) -> None:
    response = await harness.client.post(
        path,
        content=b'{"username": "' + b"a" * 200_000 + b'"}',
        headers={"Content-Type": "application/json"},
    )
    _assert_envelope(response, 413)


async def test_huge_chunked_body_is_413(harness: Harness) -> None:
    async def chunks() -> Any:
        for _ in range(100):
            yield b"x" * 4096

    response = await harness.client.post(
        "/auth/login", content=chunks(), headers={"Content-Type": "application/json"}
    )
    _assert_envelope(response, 413)


async def test_unknown_route_and_method_use_the_envelope(harness: Harness) -> None:
    _assert_envelope(await harness.client.get("/nope"), 404)
    _assert_envelope(await harness.client.get("/auth/login"), 405)


@pytest.mark.parametrize(
    ("content", "content_type", "hint"),
    [
        (b"username=alice&password=x", "application/x-www-form-urlencoded", True),
        (b'"alice"', "application/json", False),
        (b"[]", "application/json; charset=utf-8", False),
        (b"", None, True),
    ],
)
async def test_a_body_that_is_not_a_json_object_says_so(
    harness: Harness, content: bytes, content_type: str | None, hint: bool
) -> None:
    """Not pydantic's type names: what to send, and how, when the Content-Type was not JSON."""
    headers = {"Content-Type": content_type} if content_type else {}
    response = await harness.client.post("/auth/login", content=content, headers=headers)
    _assert_envelope(response, 400)
    message = response.json()["message"]
    assert message.startswith("Invalid request: the body must be a JSON object"), message
    assert ("Content-Type: application/json" in message) == hint, message


async def test_refresh_wrong_types(harness: Harness) -> None:
    for body in ({}, {"refresh_token": 5}, {"refresh_token": None}, {"refresh_token": ["a"]}):
        _assert_envelope(await harness.client.post("/auth/refresh", json=body), 400)


async def test_logout_bad_scope_is_400(harness: Harness) -> None:
    await harness.create_user()
    tokens = await harness.login()
    response = await harness.client.post(
        "/auth/logout",
        json={"scope": "everything"},
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    _assert_envelope(response, 400)
    assert (await harness.me(tokens["access_token"])).status_code == 200


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=10,
)


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_arbitrary_json_never_500s(harness: Harness, path: str) -> None:
    failures: list[str] = []

    @settings(
        max_examples=50,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        body=st.dictionaries(
            st.sampled_from(["username", "password", "refresh_token", "scope", "x"]),
            json_values,
        )
    )
    def check(body: dict[str, Any]) -> None:
        # Hypothesis drives a plain function in a worker thread; each request runs back on
        # the test's event loop.
        response = anyio.from_thread.run(lambda: harness.client.post(path, json=body))
        if response.status_code >= 500 or set(response.json()) != {"error", "message"}:
            failures.append(f"{body!r} -> {response.status_code}")

    await anyio.to_thread.run_sync(check)
    assert not failures, failures[:5]


async def test_every_operation_with_a_body_documents_its_413(harness: Harness) -> None:
    """The body limit answers 413 before any route runs: the schema must say so."""
    schema = (await harness.client.get("/openapi.json")).json()
    missing = [
        f"{method.upper()} {path}"
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if "requestBody" in operation and "413" not in operation["responses"]
    ]
    assert missing == []
    response = await harness.client.post(
        "/auth/password", content=b"x" * 100_000, headers={"Content-Type": "application/json"}
    )
    _assert_envelope(response, 413)
