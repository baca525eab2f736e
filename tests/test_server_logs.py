"""What a real `authsvc serve` writes to its log: no secret or hash at any level, no line a client
can forge, no terminal escapes, start-up news once, and a line for each new signing key."""

from __future__ import annotations

import json
import logging
import socket
import sys
from pathlib import Path

import httpx
import pytest

from authsvc.observability.logs import JsonFormatter, TextFormatter
from tests import pg
from tests.conftest import Harness, backends
from tests.live import cli, live_server

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "another horse, another staple"


def _lines(workdir: Path) -> list[str]:
    return (workdir / "serve.log").read_text(encoding="utf-8").splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("backend", backends())
def test_debug_logs_show_no_hash_token_or_password(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = ""  # an empty setting is unset: the embedded SQLite database
    if backend == "postgresql":
        url = request.getfixturevalue("postgres_url")
        pg.truncate_all(url)
    made = cli(
        tmp_path,
        *("users", "create", "alice", "--password-stdin"),
        stdin=PASSWORD + "\n",
        AUTHSVC_DATABASE_URL=url,
    )
    assert made.returncode == 0, made.stderr
    with live_server(
        tmp_path, AUTHSVC_LOG_LEVEL="debug", AUTHSVC_LOG_FORMAT="text", AUTHSVC_DATABASE_URL=url
    ) as base:
        first = httpx.post(f"{base}/auth/login", json={"username": "alice", "password": PASSWORD})
        assert first.status_code == 200, first.text
        tokens = first.json()
        second = httpx.post(
            f"{base}/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        ).json()
        changed = httpx.post(
            f"{base}/auth/password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers={"Authorization": f"Bearer {second['access_token']}"},
        )
        assert changed.status_code == 204, changed.text
        again = httpx.post(
            f"{base}/auth/login", json={"username": "alice", "password": NEW_PASSWORD}
        )
        assert again.status_code == 200
    log = (tmp_path / "serve.log").read_text(encoding="utf-8")
    assert " DEBUG " in log or "POST /auth/password 204" in log  # the server did log
    secrets = [
        "$argon2",
        PASSWORD,
        NEW_PASSWORD,
        tokens["refresh_token"],
        tokens["access_token"],
        second["refresh_token"],
        second["access_token"],
        again.json()["refresh_token"],
    ]
    assert [s for s in secrets if s in log] == []


def _raw_get(base: str, target: bytes) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return answer


FORGED = b"2026-01-01 00:00:00,000 INFO    authsvc.access GET /admin 200 1.0ms"


@pytest.mark.slow
def test_a_path_cannot_forge_a_text_log_line_or_send_terminal_escapes(tmp_path: Path) -> None:
    with live_server(tmp_path, AUTHSVC_LOG_FORMAT="text") as base:
        target = b"/x%0a" + FORGED.replace(b" ", b"%20") + b"%0d%1b%5b31m%e2%80%a8%c2%9b"
        assert _raw_get(base, target).startswith(b"HTTP/1.1 404")
    lines = _lines(tmp_path)
    assert not [line for line in lines if line.startswith(FORGED.decode()[:20])]
    assert not [line for line in lines if any(c in line for c in "\x1b\r\x9b\u2028")]
    access = [line for line in lines if "authsvc.access GET /x" in line]
    assert len(access) == 1
    assert "/x\\n2026-01-01 00:00:00,000 INFO" in access[0]
    assert "\\r\\x1b[31m\\u2028\\x9b 404" in access[0]


@pytest.mark.slow
def test_json_logs_from_two_workers_are_plain_and_say_start_up_news_once(tmp_path: Path) -> None:
    with live_server(tmp_path, args=("--workers", "2"), AUTHSVC_LOG_FORMAT="json") as base:
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert _raw_get(base, b"/x%c2%9b31m%e2%80%a8").startswith(b"HTTP/1.1 404")
    text = (tmp_path / "serve.log").read_text(encoding="utf-8")
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    # No colours (uvicorn's color_message), and what JSON leaves raw is escaped too.
    assert not [c for c in "\x1b\x9b\u2028" if c in text] and "\\u001b" not in text
    assert '"path": "/x\\u009b31m\\u2028"' in text
    assert not [e for e in entries if "color_message" in e]
    assert sum("Started server process" in e["msg"] for e in entries) == 2
    # Alembic speaks once, in the serving process, not once more per worker.
    assert [e["msg"] for e in entries if e["logger"].startswith("alembic")][:2] == [
        "Context impl SQLiteImpl.",
        "Will assume non-transactional DDL.",
    ]
    assert sum(e["msg"] == "Context impl SQLiteImpl." for e in entries) == 1
    assert not [e for e in entries if e["logger"] == "alembic.runtime.plugins"]
    created = [e for e in entries if e["logger"] == "authsvc.keys"]
    assert len(created) == 1 and created[0]["msg"].startswith("created signing key ")


@pytest.mark.anyio
async def test_a_rotation_is_logged(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="authsvc.keys")
    async with harness.state.database.transaction() as db:
        info = await harness.state.keys.rotate(db, harness.clock.now())
    [record] = [r for r in caplog.records if r.name == "authsvc.keys"]
    assert record.getMessage().startswith(f"rotated signing keys: published {info.kid}")


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad\n2026-01-01 00:00:00,000 INFO    forged")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("authsvc.api", logging.ERROR, __file__, 1, msg, args, exc_info)


def test_text_lines_escape_values_and_indent_tracebacks() -> None:
    line = TextFormatter().format(_record("user %s failed", "eve\n\x1b[2J", exc=True))
    first, *rest = line.split("\n")
    assert first.endswith("user eve\\n\\x1b[2J failed")
    assert rest and all(part.startswith("  ") for part in rest)
    assert "\x1b" not in line


def test_json_lines_escape_what_json_leaves_raw() -> None:
    line = JsonFormatter().format(_record("a\u2028b\x9bc\x7fd\x1be"))
    assert "\\u2028" in line and "\\u009b" in line
    assert not any(c in line for c in "\u2028\x9b\x7f\x1b")
    assert json.loads(line)["msg"] == "a\u2028b\x9bc\x7fd\x1be"
