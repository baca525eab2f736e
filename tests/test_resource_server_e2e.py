"""Real processes: authsvc and the example resource server, each under uvicorn. A logout at
authsvc reaches the resource server within its poll interval; a key rotation does not break it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from tests.live import CLI, clean_env, cli, free_port

ROOT = Path(__file__).resolve().parent.parent
POLL_INTERVAL = 0.5
PASSWORD = "a password for erin"


def _wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def _ready(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    return check


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., None]]:
    started: list[subprocess.Popen[bytes]] = []

    def spawn(args: list[str], env: dict[str, str], ready_url: str, log_name: str) -> None:
        log = tmp_path / log_name
        with log.open("w") as out:
            proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=out, stderr=out)
        started.append(proc)

        def check() -> bool:
            if proc.poll() is not None:
                raise AssertionError(log.read_text())
            return _ready(ready_url)()

        _wait_until(check, 30, f"{log_name} to become ready")

    try:
        yield spawn
    finally:
        for proc in started:
            proc.send_signal(signal.SIGTERM)
        for proc in started:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.mark.slow
def test_logout_and_key_rotation_reach_the_resource_server(
    processes: Callable[..., None], tmp_path: Path
) -> None:
    auth_port, rs_port = free_port(), free_port()
    authsvc = f"http://127.0.0.1:{auth_port}"
    resource = f"http://127.0.0.1:{rs_port}"
    auth_env = clean_env(
        AUTHSVC_ISSUER=authsvc,
        AUTHSVC_ACCESS_TOKEN_TTL="60",
        AUTHSVC_KEY_PUBLISH_AHEAD="2",
        AUTHSVC_JWKS_MAX_AGE="2",
        AUTHSVC_KEY_RELOAD_INTERVAL="1",
        AUTHSVC_REVOCATION_POLL_AFTER="1",
        AUTHSVC_RATE_LIMIT_ENABLED="false",
        AUTHSVC_LOG_LEVEL="warning",
    )
    processes([*CLI, "serve", "--port", str(auth_port)], auth_env, f"{authsvc}/readyz", "auth.log")
    created = cli(tmp_path, "users", "create", "erin", "--password-stdin",
                  stdin=PASSWORD + "\n", **auth_env)  # fmt: skip
    assert created.returncode == 0, created.stderr
    rs_env = clean_env(
        AUTHSVC_URL=authsvc,
        RESOURCE_AUDIENCE="authsvc",
        RESOURCE_POLL_INTERVAL=str(POLL_INTERVAL),
        RESOURCE_KID_REFETCH_INTERVAL="1",
    )
    processes(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(ROOT / "examples" / "resource_server"),
         "app:app", "--port", str(rs_port), "--log-level", "warning"],
        rs_env, f"{resource}/healthz", "resource.log",
    )  # fmt: skip

    with httpx.Client(timeout=5) as http:

        def login() -> str:
            response = http.post(
                f"{authsvc}/auth/login", json={"username": "erin", "password": PASSWORD}
            )
            assert response.status_code == 200, response.text
            token: str = response.json()["access_token"]
            return token

        def hello(token: str) -> int:
            return http.get(
                f"{resource}/hello", headers={"Authorization": f"Bearer {token}"}
            ).status_code

        # Log in, use the resource server, log out at authsvc: refused within the interval.
        access = login()
        assert hello(access) == 200
        assert http.get(f"{resource}/hello").status_code == 401
        inspected = cli(tmp_path, "token", "inspect", access, **auth_env)
        assert inspected.returncode == 0, inspected.stdout
        out = http.post(f"{authsvc}/auth/logout", headers={"Authorization": f"Bearer {access}"})
        assert out.status_code == 204
        took = _wait_until(lambda: hello(access) == 401, 10, "the logout to reach the server")
        assert took <= POLL_INTERVAL + 2.5, took  # one interval, plus a loaded machine's slack
        inspected = cli(tmp_path, "token", "inspect", access, **auth_env)
        assert inspected.returncode == 1
        assert "FAIL  revocation" in inspected.stdout

        # Rotate: the new key signs after the publish-ahead time; both keys keep working.
        before = login()
        old_kid = jwt.get_unverified_header(before)["kid"]
        rotated = cli(tmp_path, "keys", "rotate", **auth_env)
        assert rotated.returncode == 0, rotated.stderr
        fresh: list[str] = []

        def new_kid_in_use() -> bool:
            fresh[:] = [login()]
            return bool(jwt.get_unverified_header(fresh[0])["kid"] != old_kid)

        _wait_until(new_kid_in_use, 10, "the rotated key to sign")
        assert hello(fresh[0]) == 200
        assert hello(before) == 200
