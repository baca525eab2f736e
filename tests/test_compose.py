"""docker-compose.yml, checked without Docker: every AUTHSVC_* variable is a setting and the set
validates as a production configuration, every command is a real CLI command with valid
options, the healthcheck asks a route the app serves, and the same topology (migrate once, then
`serve --workers 2` on PostgreSQL with Redis) runs as processes."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import typer
import yaml
from sqlalchemy.engine import make_url

from authsvc.app import create_app
from authsvc.cli import app as cli_app
from authsvc.config import Settings
from tests import pg
from tests.conftest import TEST_KEK
from tests.live import CLI, clean_env, cli, free_port

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
REDIS_URL = os.environ.get("AUTHSVC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PASSWORD = "a long enough password"

# What the operator exports before `docker compose up` (the compose file's own comment).
SHELL = {"AUTHSVC_KEY_ENCRYPTION_KEY": TEST_KEK}
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, shell: Mapping[str, str]) -> str:
    """Compose's variable substitution: $$, ${VAR}, ${VAR:-default}, ${VAR:?error}."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group(1), match.group(2), match.group(3)
        current = shell.get(name)
        unset = current is None or (current == "" and op is not None and op.startswith(":"))
        if op is not None and op.endswith("?") and unset:
            raise AssertionError(f"compose requires {name}: {arg}")
        if op is not None and op.endswith("-") and unset:
            return arg
        return current or ""

    return _VARIABLE.sub(one, value)


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def authsvc_services() -> dict[str, dict[str, Any]]:
    """The services that run authsvc (built from this repository's Dockerfile)."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if "build" in service or str(service.get("image", "")).startswith("authsvc")
    }


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): interpolate(str(v), SHELL) for k, v in env.items()}


def resolve(args: list[str]) -> tuple[str, Any]:
    """Parse `authsvc ...` arguments as the CLI would, without running the command: the
    command path and the leaf command's click context (its `params`)."""
    assert args and args[0] == "authsvc", args
    command: Any = typer.main.get_command(cli_app)
    path = ["authsvc"]
    rest = args[1:]
    parent = command.make_context("authsvc", [], resilient_parsing=True)
    while hasattr(command, "get_command"):  # a group (typer ships its own click)
        assert rest, f"{' '.join(path)} needs a command"
        sub = command.get_command(parent, rest[0])
        assert sub is not None, f"no such command: {' '.join([*path, rest[0]])}"
        path.append(rest[0])
        command, rest = sub, rest[1:]
        if hasattr(command, "get_command"):
            parent = command.make_context(path[-1], [], parent=parent, resilient_parsing=True)
    # make_context validates every option and argument (unknown ones raise a UsageError).
    return " ".join(path), command.make_context(path[-1], list(rest), parent=parent)


def test_every_authsvc_variable_is_a_setting_and_validates_in_production(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    services = authsvc_services()
    assert {"migrate", "authsvc"} <= set(services)
    fields = set(Settings.model_fields)
    for name, service in services.items():
        env = environment(service)
        assert env, f"{name} sets no environment"
        for key in env:
            assert key.startswith("AUTHSVC_"), f"{name}: {key} is not an authsvc setting"
            assert key.removeprefix("AUTHSVC_").lower() in fields, f"{name}: unknown {key}"
        # The whole set is a valid configuration (production refuses what it must).
        monkeypatch.chdir(tmp_path)  # no .env from the checkout
        for key in [k for k in os.environ if k.startswith("AUTHSVC_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        assert settings.env == "production"
        assert settings.redis_url and settings.database_url


def test_the_dockerfile_environment_is_made_of_settings() -> None:
    fields = set(Settings.model_fields)
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("ENV "):
            for pair in line.removeprefix("ENV ").split():
                key = pair.split("=", 1)[0]
                assert key.removeprefix("AUTHSVC_").lower() in fields, key


def test_every_command_is_a_cli_command_with_valid_options() -> None:
    commands = {name: service["command"] for name, service in authsvc_services().items()}
    assert commands["migrate"] == ["authsvc", "migrate"]
    for name, command in commands.items():
        assert isinstance(command, list), f"{name}: use the exec (list) form"
        resolve(command)  # raises on an unknown command or option
    path, ctx = resolve(commands["authsvc"])
    assert path == "authsvc serve"
    assert ctx.params["workers"] == 2 and ctx.params["port"] == 8000
    cmd_line = re.search(r"CMD \[(.*)\]", (ROOT / "Dockerfile").read_text())
    assert cmd_line is not None
    resolve([part.strip().strip('"') for part in cmd_line.group(1).split(",")])


def test_an_invalid_command_or_option_would_be_caught() -> None:
    with pytest.raises(AssertionError, match="no such command"):
        resolve(["authsvc", "serv"])
    with pytest.raises(Exception, match="No such option"):
        resolve(["authsvc", "serve", "--worker", "2"])
    with pytest.raises(Exception, match="valid integer"):
        resolve(["authsvc", "serve", "--workers", "two"])
    with pytest.raises(AssertionError, match="needs a command"):
        resolve(["authsvc", "feed"])


def test_the_healthcheck_asks_a_route_the_app_serves(tmp_path: Path) -> None:
    service = compose()["services"]["authsvc"]
    probe = " ".join(service["healthcheck"]["test"])
    url = re.search(r"https?://[^'\"\s)]+", probe)
    assert url is not None, probe
    target = httpx.URL(url.group(0))
    # The app answers it (on the embedded database, ready once started).
    app = create_app(Settings(data_dir=tmp_path, key_encryption_key=TEST_KEK))

    async def probe_app() -> httpx.Response:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
                return await client.get(target.path)

    answer = asyncio.run(probe_app())
    assert answer.status_code == 200, answer.text
    # It asks the port the server listens on, which is the one published.
    _, ctx = resolve(service["command"])
    assert target.port == ctx.params["port"]
    assert any(str(p).split(":")[-1] == str(target.port) for p in service["ports"])
    # Every service a dependency names exists.
    names = set(compose()["services"])
    for svc in compose()["services"].values():
        assert set(svc.get("depends_on") or {}) <= names


# -- the same topology as processes ------------------------------------------------------------


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def private_db() -> Iterator[str]:
    admin = pg.admin_url()
    name = f"authsvc_compose_{os.getpid()}_{secrets.token_hex(3)}"
    pg.create_database(admin, name)
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        pg.drop_database(admin, name)


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise AssertionError(log.read_text())
        time.sleep(0.2)
    raise AssertionError(f"not ready:\n{log.read_text()}")


@pytest.mark.slow
@pytest.mark.postgresql
def test_the_compose_topology_runs_as_processes(private_db: str, tmp_path: Path) -> None:
    if not _redis_up():
        pytest.skip(f"no Redis at {REDIS_URL}")
    services = authsvc_services()
    prefix = f"authsvc:compose:{secrets.token_hex(4)}:"
    # The compose environment, with the containers' host names pointed at this machine.
    env = {
        **environment(services["authsvc"]),
        "AUTHSVC_DATABASE_URL": private_db,
        "AUTHSVC_REDIS_URL": REDIS_URL,
        "AUTHSVC_RATE_LIMIT_KEY_PREFIX": prefix,
    }
    assert environment(services["migrate"]).keys() == environment(services["authsvc"]).keys()

    migrated = cli(tmp_path, *services["migrate"]["command"][1:], **env)
    assert migrated.returncode == 0, migrated.stderr
    made = cli(
        tmp_path, "users", "create", "alice", "--password-stdin", stdin=PASSWORD + "\n", **env
    )
    assert made.returncode == 0, made.stderr

    port = free_port()
    args = list(services["authsvc"]["command"][1:])
    args[args.index("--host") + 1] = "127.0.0.1"  # never listen on every interface in a test
    args[args.index("--port") + 1] = str(port)
    assert args[args.index("--workers") + 1] == "2"
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*CLI, *args], cwd=tmp_path, env=clean_env(**env), stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    store = redis.Redis.from_url(REDIS_URL)
    try:
        _wait_ready(base, proc, log)
        ready = httpx.get(f"{base}/readyz", timeout=5).json()
        assert ready["status"] == "ok", ready
        for _ in range(4):  # fresh connections, so both workers answer some
            login = httpx.post(
                f"{base}/auth/login", json={"username": "alice", "password": PASSWORD}, timeout=30
            )
            assert login.status_code == 200, login.text
            rotated = httpx.post(
                f"{base}/auth/refresh",
                json={"refresh_token": login.json()["refresh_token"]},
                timeout=30,
            )
            assert rotated.status_code == 200, rotated.text
            me = httpx.get(
                f"{base}/auth/me",
                headers={"Authorization": f"Bearer {rotated.json()['access_token']}"},
                timeout=30,
            )
            assert me.status_code == 200 and me.json()["username"] == "alice"
        # The rate limiter kept its counters in Redis, shared by both workers.
        assert list(store.scan_iter(match=f"{prefix}*"))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for key in store.scan_iter(match=f"{prefix}*"):
            store.delete(key)
        store.close()
    workers = {line for line in log.read_text().splitlines() if "Started server process" in line}
    assert len(workers) == 2, log.read_text()
