"""The operator's CLI, run as a real process, and `authsvc serve` end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
import typer
from typer.testing import CliRunner

from authsvc import __version__
from authsvc.cli import app
from authsvc.cli.clients import Grant
from authsvc.services.clients import SUPPORTED_GRANTS, new_client_id
from tests.live import cli, live_server


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def test_users_lifecycle_through_the_cli(workdir: Path) -> None:
    created = cli(
        workdir,
        "users",
        "create",
        "Carol",
        "--role",
        "admin",
        "--role",
        "ops",
        "--password-stdin",
        stdin="a long enough password\n",
    )
    assert created.returncode == 0, created.stderr
    assert "created user carol" in created.stdout
    again = cli(workdir, "users", "create", "CAROL", "--password-stdin", stdin="another password\n")
    assert again.returncode == 1
    assert "already exists" in again.stderr
    short = cli(workdir, "users", "create", "dave", "--password-stdin", stdin="short\n")
    assert short.returncode == 1
    listed = cli(workdir, "users", "list")
    assert "carol" in listed.stdout and "admin,ops" in listed.stdout
    assert cli(workdir, "users", "disable", "carol").returncode == 0
    assert "disabled" in cli(workdir, "users", "list").stdout
    assert cli(workdir, "users", "enable", "carol").returncode == 0
    missing = cli(workdir, "users", "disable", "nobody")
    assert missing.returncode == 1
    assert "No such user" in missing.stderr
    assert (
        cli(
            workdir,
            "users",
            "set-password",
            "carol",
            "--password-stdin",
            stdin="a new long password\n",
        ).returncode
        == 0
    )
    # The development KEK was made in the data dir, private to its owner.
    kek = workdir / ".authsvc" / "key-encryption-key"
    assert kek.stat().st_mode & 0o777 == 0o600


def test_keys_rotate_and_list(workdir: Path) -> None:
    rotated = cli(workdir, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    listed = cli(workdir, "keys", "list").stdout.splitlines()
    assert listed[0].split("\t") == ["KID", "STATE", "CREATED", "SIGNS_FROM", "RETIRES"]
    assert [line.split("\t")[1] for line in listed[1:]] == ["active", "published"]
    assert cli(workdir, "prune").returncode == 0


def test_client_ids_never_read_as_options(workdir: Path) -> None:
    # A base64url id starts with "-" one time in 32: as a command-line argument it read as an
    # unknown option.
    assert all(new_client_id()[0].isalnum() for _ in range(2000))
    # An id stored before that (or typed by hand) is still taken as the id.
    unknown = cli(workdir, "clients", "delete", "-fc1Gk-vwNQhD0m0tp")
    assert unknown.returncode == 1, unknown.stderr
    assert "No such option" not in unknown.stderr


def test_new_kek_and_production_requires_it(workdir: Path) -> None:
    kek = cli(workdir, "keys", "new-kek").stdout.strip()
    assert len(kek) == 44
    refused = cli(
        workdir,
        "migrate",
        AUTHSVC_ENV="production",
        AUTHSVC_DATABASE_URL=f"sqlite:///{workdir}/x.db",
    )
    assert refused.returncode == 2
    assert "AUTHSVC_KEY_ENCRYPTION_KEY" in refused.stderr
    bad = cli(workdir, "users", "list", AUTHSVC_KEY_ENCRYPTION_KEY="not-a-key")
    assert bad.returncode == 2


@pytest.fixture
def server(workdir: Path) -> Iterator[str]:
    """`authsvc serve` with no settings at all: the embedded default."""
    with live_server(workdir, set_issuer=False) as base:
        yield base


@pytest.mark.slow
def test_serve_embedded_default_full_lifecycle(server: str, workdir: Path) -> None:
    assert (
        cli(
            workdir, "users", "create", "erin", "--password-stdin", stdin="erin's password\n"
        ).returncode
        == 0
    )
    with httpx.Client(base_url=server, timeout=10) as http:
        tokens = http.post("/auth/login", json={"username": "erin", "password": "erin's password"})
        assert tokens.status_code == 200
        access = tokens.json()["access_token"]
        jwks = http.get("/.well-known/jwks.json").json()
        key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(access)["kid"]]
        claims = jwt.decode(
            access,
            key.key,
            algorithms=["RS256"],
            audience="authsvc",
            issuer="http://127.0.0.1:8000",
        )
        assert claims["sub"]
        rotated = http.post("/auth/refresh", json={"refresh_token": tokens.json()["refresh_token"]})
        assert rotated.status_code == 200
        me = http.get(
            "/auth/me", headers={"Authorization": f"Bearer {rotated.json()['access_token']}"}
        )
        assert me.json()["username"] == "erin"
        out = http.post(
            "/auth/logout", headers={"Authorization": f"Bearer {rotated.json()['access_token']}"}
        )
        assert out.status_code == 204
        again = http.get(
            "/auth/me", headers={"Authorization": f"Bearer {rotated.json()['access_token']}"}
        )
        assert again.status_code == 401
    assert (workdir / ".authsvc" / "authsvc.db").exists()


def _commands(command: object, path: list[str]) -> list[list[str]]:
    """Every command's path, `authsvc users create` as ["users", "create"]."""
    children = getattr(command, "commands", None)
    if not children:
        return [path]
    return [p for name, child in children.items() for p in _commands(child, [*path, name])]


def _help(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], prog_name="authsvc")
    assert result.exit_code == 0, result.output
    return result.output


def test_version(workdir: Path) -> None:
    result = cli(workdir, "--version")
    assert (result.returncode, result.stdout) == (0, f"authsvc {__version__}\n")


def test_help_describes_every_option_without_type_noise() -> None:
    commands = _commands(typer.main.get_command(app), [])
    assert ["users", "delete"] in commands and ["sessions", "revoke"] in commands
    for path in commands:
        page = _help(*path)
        for noise in ("<str>", "<int", "<bool>", "list[", "{", "x>=", "Input should be"):
            assert noise not in page, (path, noise, page)
        command = typer.main.get_command(app)
        for name in path:
            command = command.commands[name]  # type: ignore[attr-defined]
        for param in command.params:
            assert getattr(param, "help", None), (path, param.name)


def test_help_shows_defaults_and_allowed_values() -> None:
    serve = " ".join(_help("serve").split())
    assert "--host ADDRESS Address to listen on. [default: AUTHSVC_HOST, else 127.0.0.1]" in serve
    assert "--port PORT Port to listen on. [default: AUTHSVC_PORT, else 8000]" in serve
    assert (
        "--workers N Worker processes (PostgreSQL only for more than one host). [default: 1]"
        in serve
    )
    create = " ".join(_help("clients", "create").split())
    assert (
        "--grant GRANT A grant type it may use: authorization_code, refresh_token, "
        "client_credentials, password; repeatable. [default: authorization_code and "
        "refresh_token; password only when named]" in create
    )
    assert "--redirect-uri URI" in create and "--third-party" in create
    assert [g.value for g in Grant] == list(SUPPORTED_GRANTS)
    bad = CliRunner().invoke(app, ["clients", "create", "x", "--grant", "implicit"])
    assert bad.exit_code == 2 and "'implicit' is not one of 'authorization_code'" in bad.output
    assert "Usage: authsvc users create [OPTIONS] NAME" in _help("users", "create")
