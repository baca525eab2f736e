"""One structured log line per request, with a request id; never a secret in any line."""

from __future__ import annotations

import json
import logging

import pytest
from sqlalchemy import text

from authsvc.observability.logs import (
    JsonFormatter,
    RequestIdFilter,
    TextFormatter,
    logging_config,
)
from tests.conftest import PASSWORD, TEST_KEK, Harness

pytestmark = pytest.mark.anyio


async def test_each_request_logs_one_json_line_with_its_request_id(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="authsvc")
    given = await harness.client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    made = await harness.client.get("/healthz")
    forged = "a b\u00e9\r\n{}" * 40
    hostile = await harness.client.get(
        "/healthz", headers={b"X-Request-ID": forged.encode("latin-1", "replace")}
    )
    assert given.headers["x-request-id"] == "abc-123"
    assert len(made.headers["x-request-id"]) == 32
    assert len(hostile.headers["x-request-id"]) == 32  # replaced, not echoed
    lines = [
        json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "authsvc.access"
    ]
    assert len(lines) == 3
    first = lines[0]
    assert first["request_id"] == "abc-123"
    assert (first["method"], first["path"], first["route"], first["status"]) == (
        "GET",
        "/healthz",
        "/healthz",
        200,
    )
    assert first["duration_ms"] >= 0 and first["level"] == "info" and first["ts"]
    assert [line["request_id"] for line in lines[1:]] == [
        made.headers["x-request-id"],
        hostile.headers["x-request-id"],
    ]


async def test_no_token_password_or_secret_reaches_the_logs(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await harness.create_user()
    tokens = await harness.login()
    rotated = (await harness.refresh(tokens["refresh_token"])).json()
    bearer = {"Authorization": f"Bearer {rotated['access_token']}"}
    await harness.client.get("/auth/me", headers=bearer)
    # Secrets in the query string and in failing requests too.
    await harness.client.get(f"/auth/me?access_token={rotated['access_token']}")
    await harness.client.post("/auth/login", json={"username": PASSWORD, "password": PASSWORD})
    await harness.client.post("/auth/login", content=b'{"password": "' + PASSWORD.encode())
    await harness.client.post("/auth/logout", headers=bearer)
    await harness.client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})

    secrets = [
        PASSWORD,
        tokens["access_token"],
        tokens["refresh_token"],
        rotated["access_token"],
        rotated["refresh_token"],
        TEST_KEK,
    ]
    # Everything the server side logged (httpx/httpcore are this test's client).
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    output = "\n".join(
        formatter.format(r) for r in server_side for formatter in (JsonFormatter(), TextFormatter())
    )
    assert "authsvc.access" in output
    for secret in secrets:
        # Also no recognisable part of one (a JWT's signature, a refresh token's body).
        for fragment in {secret, secret[-20:]}:
            assert fragment not in output


async def test_other_lines_written_during_a_request_carry_its_request_id(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    if harness.state.database.dialect != "sqlite":
        pytest.skip("drops a table: only on the per-test SQLite copy")
    caplog.set_level(logging.INFO, logger="authsvc")
    caplog.handler.addFilter(RequestIdFilter())
    await harness.create_user()
    # A failed login whose audit row cannot be written logs an error; it names the request.
    async with harness.state.database.transaction() as db:
        await db.execute(text("DROP TABLE audit_events"))
    response = await harness.client.post(
        "/auth/login",
        json={"username": "alice", "password": "wrong password"},
        headers={"X-Request-ID": "req-42"},
    )
    assert response.status_code == 401
    failures = [r for r in caplog.records if r.name == "authsvc.api"]
    assert failures and all(getattr(r, "request_id", None) == "req-42" for r in failures)


def test_log_format_defaults_to_text_in_development_and_json_in_production() -> None:
    from authsvc.config import Settings

    dev = Settings(key_encryption_key=TEST_KEK)
    prod = Settings(env="production", key_encryption_key=TEST_KEK, database_url="sqlite:///x.db")
    assert (dev.resolved_log_format, prod.resolved_log_format) == ("text", "json")
    assert Settings(log_format="json").resolved_log_format == "json"
    config = logging_config("json", "info")
    assert config["formatters"]["default"]["()"].endswith("JsonFormatter")


async def test_database_errors_never_show_bound_values(harness: Harness) -> None:
    # Unexpected errors are logged with their message; it must not carry what was bound.
    secret = "rt_" + "S" * 43
    with pytest.raises(Exception) as caught:
        async with harness.state.database.transaction() as db:
            await db.execute(text("SELECT * FROM no_such_table WHERE x = :v"), {"v": secret})
    assert secret not in str(caught.value)
    assert "hidden due to hide_parameters" in str(caught.value)
