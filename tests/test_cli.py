"""The operator's CLI, run as a real process, and `authsvc serve` end to end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

CLI = [sys.executable, "-m", "authsvc"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
    env.update(
        AUTHSVC_ARGON2_TIME_COST="1",
        AUTHSVC_ARGON2_MEMORY_COST="1024",
        AUTHSVC_ARGON2_PARALLELISM="1",
    )
    env.update(extra)
    return env


def cli(cwd: Path, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        env=clean_env(**env),
        timeout=60,
        check=False,
    )


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
    assert [line.split("\t")[1] for line in listed] == ["active", "published"]
    assert cli(workdir, "prune").returncode == 0


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
    port = free_port()
    env = clean_env()
    log = workdir / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*CLI, "serve", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise AssertionError(log.read_text())
            time.sleep(0.2)
        else:
            raise AssertionError("server did not become ready")
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


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
