"""Set-up mistakes through the CLI: one line on stderr with a hint, exit 2, no traceback (and
the traceback with --debug). Each test runs the real `python -m authsvc` process."""

from __future__ import annotations

import os
import secrets
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from authsvc.store.db import upgrade
from tests import pg
from tests.conftest import TEST_KEK
from tests.live import CLI, clean_env, cli, free_port

pytestmark = pytest.mark.slow  # every test runs the CLI as a process

OTHER_KEK = "kZ0s2oXqJ7mCfMhbqD3l6R8yQm0GZp0ZkR2A5aS9m1o="


def one_line(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The refusal: exit 2, one line on stderr that says `fragments`, nothing on stdout."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    line = result.stderr.strip()
    assert "\n" not in line, result.stderr
    assert line.startswith("error: "), line
    assert "Traceback" not in line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert result.stdout == ""
    return line


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'authsvc.db'}"
    upgrade(url)
    return url


def test_a_garbage_database_url(tmp_path: Path) -> None:
    for command in (["users", "list"], ["migrate"], ["serve"]):
        line = one_line(
            cli(tmp_path, *command, AUTHSVC_DATABASE_URL="garbage"),
            "AUTHSVC_DATABASE_URL is not a database URL",
            "postgresql://",
        )
        assert "sqlalche.me" not in line


def test_an_unsupported_database(tmp_path: Path) -> None:
    one_line(
        cli(tmp_path, "users", "list", AUTHSVC_DATABASE_URL="mysql://root@localhost/authsvc"),
        "AUTHSVC_DATABASE_URL: unsupported database 'mysql'",
        "use sqlite:///",
    )


def test_an_unreachable_postgresql(tmp_path: Path) -> None:
    url = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/authsvc"
    for command in (["users", "list"], ["migrate"], ["serve"]):
        line = one_line(
            cli(tmp_path, *command, AUTHSVC_DATABASE_URL=url),
            "cannot connect to the database at postgresql://postgres:***@127.0.0.1",
            "connection refused",
            "is PostgreSQL running",
        )
        assert "hunter2" not in line


def test_a_database_never_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    env = {"AUTHSVC_DATABASE_URL": url, "AUTHSVC_AUTO_MIGRATE": "false"}
    for command in (["users", "list"], ["serve"]):
        one_line(
            cli(tmp_path, *command, **env),
            "the database has no authsvc schema",
            "run `authsvc migrate`",
        )
    migrated = cli(tmp_path, "migrate", **env)
    assert migrated.returncode == 0, migrated.stderr
    assert cli(tmp_path, "users", "list", **env).stdout == "no users\n"


@pytest.mark.postgresql
def test_a_postgresql_database_never_migrated(tmp_path: Path) -> None:
    admin = pg.admin_url()
    name = f"authsvc_cli_{os.getpid()}_{secrets.token_hex(3)}"
    pg.create_database(admin, name)
    try:
        url = make_url(admin).set(database=name).render_as_string(hide_password=False)
        one_line(
            cli(tmp_path, "users", "list", AUTHSVC_DATABASE_URL=url),
            "the database has no authsvc schema; run `authsvc migrate`",
        )
        assert cli(tmp_path, "migrate", AUTHSVC_DATABASE_URL=url).returncode == 0
        assert cli(tmp_path, "users", "list", AUTHSVC_DATABASE_URL=url).returncode == 0
    finally:
        pg.drop_database(admin, name)


def test_a_schema_behind_or_ahead_of_this_version(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    upgrade(f"sqlite:///{path}", "0003")
    env = {"AUTHSVC_DATABASE_URL": f"sqlite:///{path}", "AUTHSVC_AUTO_MIGRATE": "false"}
    one_line(
        cli(tmp_path, "users", "list", **env),
        "the database schema is at revision 0003, this authsvc needs ",
        "run `authsvc migrate`",
    )
    with sqlite3.connect(path) as db:
        db.execute("UPDATE alembic_version SET version_num = '9999'")
    for command in (["users", "list"], ["migrate"], ["serve"]):
        one_line(cli(tmp_path, *command, **env), "revision 9999, which this authsvc does not know")


def test_signing_keys_under_another_kek(tmp_path: Path, sqlite_url: str) -> None:
    env = {"AUTHSVC_DATABASE_URL": sqlite_url}
    assert (
        cli(tmp_path, "keys", "rotate", AUTHSVC_KEY_ENCRYPTION_KEY=TEST_KEK, **env).returncode == 0
    )
    for command in (["keys", "list"], ["serve", "--workers", "2"]):
        started = time.monotonic()
        one_line(
            cli(tmp_path, *command, AUTHSVC_KEY_ENCRYPTION_KEY=OTHER_KEK, **env),
            "cannot be decrypted: no key-encryption key configured",
            "AUTHSVC_KEY_ENCRYPTION_KEY",
            "AUTHSVC_PREVIOUS_KEY_ENCRYPTION_KEYS",
        )
        assert time.monotonic() - started < 30  # refused before any worker started


def test_development_keys_whose_kek_file_is_gone(tmp_path: Path) -> None:
    assert cli(tmp_path, "keys", "rotate").returncode == 0
    (tmp_path / ".authsvc" / "key-encryption-key").unlink()
    one_line(
        cli(tmp_path, "serve"),
        "cannot be decrypted: no key-encryption key configured",
        ".authsvc/key-encryption-key is missing",
    )
    assert not (tmp_path / ".authsvc" / "key-encryption-key").exists()


def test_a_bad_setting_is_named_as_its_variable(tmp_path: Path) -> None:
    line = one_line(
        cli(tmp_path, "users", "list", AUTHSVC_ACCESS_TOKEN_TTL="five minutes"),
        "AUTHSVC_ACCESS_TOKEN_TTL: not an integer",
    )
    assert "pydantic" not in line and "input_value" not in line and "five minutes" not in line
    one_line(
        cli(tmp_path, "serve", AUTHSVC_ACCESS_TOKEN_TTL="1", AUTHSVC_LOG_FORMAT="xml"),
        "AUTHSVC_ACCESS_TOKEN_TTL: must be at least 10",
        "AUTHSVC_LOG_FORMAT: must be 'json' or 'text'",
    )
    one_line(
        cli(tmp_path, "users", "list", AUTHSVC_KEY_ENCRYPTION_KEY="not-a-key"),
        "AUTHSVC_KEY_ENCRYPTION_KEY must be 32 url-safe base64-encoded bytes",
    )
    one_line(
        cli(tmp_path, "migrate", AUTHSVC_ENV="production"),
        "AUTHSVC_KEY_ENCRYPTION_KEY is required when AUTHSVC_ENV=production",
    )


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    dotenv = tmp_path / "with-dotenv"
    dotenv.mkdir()
    (dotenv / ".env").write_text("AUTHSVC_LOG_LEVEL=debug\n")
    for result in (
        cli(tmp_path, "--debug", "users", "list", AUTHSVC_DATABASE_URL="garbage"),
        cli(tmp_path, "users", "list", AUTHSVC_DATABASE_URL="garbage", AUTHSVC_LOG_LEVEL="DEBUG"),
        cli(dotenv, "users", "list", AUTHSVC_DATABASE_URL="garbage"),
    ):
        assert result.returncode == 2
        assert result.stderr.startswith("Traceback (most recent call last):")
        assert "ArgumentError" in result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: AUTHSVC_DATABASE_URL is not a database URL")


def test_a_password_prompt_without_a_terminal_is_refused(tmp_path: Path) -> None:
    # stdin is a pipe here: getpass would warn and read it, or wait on /dev/tty.
    for command in (["users", "create", "alice"], ["users", "set-password", "alice"]):
        line = one_line(
            cli(tmp_path, *command, stdin="a password\n"),
            "no terminal to ask for the password on",
            "--password-stdin",
        )
        assert "GetPassWarning" not in line
    assert cli(tmp_path, "users", "list").stdout == "no users\n"


def test_serve_refuses_before_starting(tmp_path: Path) -> None:
    """The same refusal from `serve` as from any command: nothing listens, no worker starts."""
    port = free_port()
    result = subprocess.run(
        [*CLI, "serve", "--port", str(port), "--workers", "2"],
        cwd=tmp_path,
        env=clean_env(AUTHSVC_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/x"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    one_line(result, "cannot connect to the database")
    assert "uvicorn" not in result.stderr.lower() and "started" not in result.stderr.lower()


INSPECT_ENV = {"AUTHSVC_ISSUER": "https://auth.test", "AUTHSVC_AUDIENCE": "api.test"}


def test_a_missing_jwks_file_is_a_usage_error(tmp_path: Path) -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
    result = cli(tmp_path, "token", "inspect", token, "--jwks", "jwks.json", **INSPECT_ENV)
    assert result.returncode == 2
    assert "Invalid value for '--jwks': no such file: jwks.json" in result.stderr
    assert "/.well-known/jwks.json" in result.stderr  # and how to get it
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_string_that_is_not_a_jwt_says_so(tmp_path: Path) -> None:
    for text in ("not-a-token", "rt_0123456789abcdef", "a.b", ""):
        result = cli(tmp_path, "token", "inspect", "-", stdin=text + "\n", **INSPECT_ENV)
        assert result.returncode == 2, result
        assert result.stderr.startswith("error: this is not a JWT (an access token is three")
        assert result.stderr.count("\n") == 1 and "refresh tokens are opaque" in result.stderr
