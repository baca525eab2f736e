"""Key-encryption key rotation: the KEK ring, the stored HMAC keys, `keys rewrap`.

Rotating the KEK must lose no refresh token, client secret or signing key: what was written
under the old KEK reads while it is in AUTHSVC_PREVIOUS_KEY_ENCRYPTION_KEYS, `keys rewrap`
moves it all under the new one, and then the old one can go.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pyotp
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import delete, select, update
from sqlalchemy.engine import make_url

from authsvc.app import create_app
from authsvc.clock import MovableClock
from authsvc.config import ConfigError, Settings
from authsvc.security import keys as crypto
from authsvc.security.secrets import HmacKeys, KeyEncryptionKeys, UnreadableSecret, load_secrets
from authsvc.services.secrets import SecretService
from authsvc.store.db import Database
from authsvc.store.models import (
    OAuthClient,
    RefreshToken,
    ServerSecret,
    SigningKey,
    TotpCredential,
)
from tests import pg
from tests.conftest import PASSWORD, TEST_KEK, Harness, make_settings
from tests.live import CLI, clean_env, cli, free_port

pytestmark = pytest.mark.anyio

KEK_A = TEST_KEK
KEK_B = "xi6cje4BAgBmN2omH2clY8bWJxRfvTd5t_8N2L_zcBQ="


def _settings(database_url: str, tmp_path: Path, kek: str, *previous: str) -> Settings:
    return make_settings(
        database_url,
        tmp_path / "data",
        key_encryption_key=kek,
        previous_key_encryption_keys=",".join(previous) or None,
    )


@asynccontextmanager
async def _serve(settings: Settings, clock: MovableClock) -> AsyncIterator[Harness]:
    """The app over `settings`' database, started (and stopped) as a server process is."""
    app = create_app(settings, clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Harness(client=client, state=app.state.authsvc, clock=clock)


@pytest.fixture
def kek_a(database_url: str, tmp_path: Path) -> Settings:
    return _settings(database_url, tmp_path, KEK_A)


async def _client(harness: Harness) -> tuple[str, str]:
    async with harness.state.database.transaction() as db:
        made = await harness.state.clients.create(
            db,
            "backend",
            harness.clock.now(),
            confidential=True,
            grant_types=["password", "refresh_token"],
            actor="test",
        )
    assert made.secret is not None
    return made.client.client_id, made.secret


async def _client_refresh(harness: Harness, client: tuple[str, str], token: str) -> httpx.Response:
    return await harness.client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": token},
        auth=client,
    )


async def _client_login(harness: Harness, client: tuple[str, str]) -> dict[str, Any]:
    response = await harness.client.post(
        "/oauth/token",
        data={"grant_type": "password", "username": "alice", "password": PASSWORD},
        auth=client,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _stored(database: Database) -> dict[str, bytes]:
    async with database.read() as db:
        rows = (await db.execute(select(ServerSecret))).scalars().all()
    return {r.name: bytes(r.value_encrypted) for r in rows}


async def test_a_new_database_gets_random_hmac_keys_stored_under_the_kek(
    kek_a: Settings, clock: MovableClock
) -> None:
    async with _serve(kek_a, clock) as harness:
        stored = await _stored(harness.state.database)
    assert sorted(stored) == sorted(HmacKeys.NAMES)
    values = {name: Fernet(KEK_A.encode()).decrypt(blob) for name, blob in stored.items()}
    assert HmacKeys.from_named(values) == harness.state.secrets.secrets.hmac
    # Random, not derived from the KEK: knowing a KEK does not give the HMAC keys.
    ring = KeyEncryptionKeys(KEK_A)
    assert HmacKeys.from_named(values) != ring.derived_hmac_keys(0)
    assert len(set(values.values())) == len(HmacKeys.NAMES)


async def test_rotation_keeps_tokens_client_secrets_and_signing_keys(
    kek_a: Settings, database_url: str, tmp_path: Path, clock: MovableClock
) -> None:
    async with _serve(kek_a, clock) as old:
        await old.create_user()
        tokens = await old.login()
        client = await _client(old)
        client_tokens = await _client_login(old, client)
        kids = {k["kid"] for k in (await old.client.get("/.well-known/jwks.json")).json()["keys"]}

    # Rotated: B is the current KEK, A still reads what was written under it.
    rotated = _settings(database_url, tmp_path, KEK_B, KEK_A)
    async with _serve(rotated, clock) as new:
        assert (await new.me(tokens["access_token"])).status_code == 200
        refreshed = await new.refresh(tokens["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text
        tokens = refreshed.json()
        client_refreshed = await _client_refresh(new, client, client_tokens["refresh_token"])
        assert client_refreshed.status_code == 200, client_refreshed.text
        client_tokens = client_refreshed.json()
        # Until the rewrap, new secrets go under A: a signing key and a TOTP secret made now.
        async with new.state.database.transaction() as db:
            made = await new.state.keys.rotate(db, clock.now())
        bob = await new.create_user("bob")
        bob_access = {"Authorization": f"Bearer {(await new.login('bob'))['access_token']}"}
        enrolled = await new.client.post("/auth/mfa/totp/enroll", headers=bob_access)
        assert enrolled.status_code == 200, enrolled.text

    # So a process not yet restarted with B (the rolling restart) reads them: it starts (which
    # decrypts everything stored), publishes the new key and confirms bob's TOTP.
    async with _serve(kek_a, clock) as still_on_a:
        jwks = (await still_on_a.client.get("/.well-known/jwks.json")).json()
        assert made.kid in {k["kid"] for k in jwks["keys"]}
        code = pyotp.TOTP(enrolled.json()["secret"]).at(clock.now())
        confirmed = await still_on_a.client.post(
            "/auth/mfa/totp/confirm", json={"code": code}, headers=bob_access
        )
        assert confirmed.status_code == 200, confirmed.text

    async with _serve(rotated, clock) as new:
        async with new.state.database.transaction() as db:
            report = await new.state.secrets.rewrap(db, clock.now(), actor="test")
        # After the rewrap every process has B, and new secrets go under it.
        async with new.state.database.transaction() as db:
            made_after = await new.state.keys.rotate(db, clock.now())
    assert sorted(report.rewrapped) == sorted(
        [f"signing key {kid}" for kid in kids | {made.kid}]
        + [f"server secret {n}" for n in HmacKeys.NAMES]
        + [f"TOTP secret of user {bob}"]
    )
    assert report.current == []

    # A dropped: everything a client holds still works.
    async with _serve(_settings(database_url, tmp_path, KEK_B), clock) as after:
        assert (await after.me(tokens["access_token"])).status_code == 200
        assert (await after.refresh(tokens["refresh_token"])).status_code == 200
        assert (
            await _client_refresh(after, client, client_tokens["refresh_token"])
        ).status_code == 200
        assert (await after.login())["access_token"]
        jwks = (await after.client.get("/.well-known/jwks.json")).json()
        assert kids | {made.kid, made_after.kid} == {k["kid"] for k in jwks["keys"]}
        async with after.state.database.transaction() as db:
            again = await after.state.secrets.rewrap(db, clock.now())
    assert again.rewrapped == []


async def test_a_ring_without_the_old_kek_refuses_to_start(
    kek_a: Settings, database_url: str, tmp_path: Path, clock: MovableClock
) -> None:
    async with _serve(kek_a, clock):
        pass
    with pytest.raises(UnreadableSecret) as refused:
        async with _serve(_settings(database_url, tmp_path, KEK_B), clock):
            pass
    assert "cannot be decrypted: no key-encryption key configured" in str(refused.value)
    assert "AUTHSVC_PREVIOUS_KEY_ENCRYPTION_KEYS" in str(refused.value)
    # Nothing was written under B: with A back in the ring, all is well.
    async with (
        _serve(_settings(database_url, tmp_path, KEK_B, KEK_A), clock) as harness,
        harness.state.database.read() as db,
    ):
        await harness.state.secrets.check(db)


async def test_rewrap_writes_nothing_when_something_cannot_be_read(
    kek_a: Settings, database_url: str, tmp_path: Path, clock: MovableClock
) -> None:
    async with _serve(kek_a, clock) as harness:
        # One signing key written under a KEK that the next ring will not hold.
        stray = Fernet(Fernet.generate_key()).encrypt(b"not a key")
        async with harness.state.database.transaction() as db:
            await db.execute(update(SigningKey).values(private_key_encrypted=stray))
    service = SecretService(load_secrets(_settings(database_url, tmp_path, KEK_B, KEK_A)))
    database = Database(kek_a.resolved_database_url, pool_size=1)
    try:
        with pytest.raises(UnreadableSecret, match="signing key"):
            async with database.transaction() as db:
                await service.rewrap(db, clock.now())
        stored = await _stored(database)
    finally:
        await database.dispose()
    assert all(KeyEncryptionKeys(KEK_A).index_of(blob) == 0 for blob in stored.values())


def _old_digest(kek: str, label: str, value: str) -> bytes:
    """What a version that derived its HMAC keys from the KEK stored for `value`."""
    key = KeyEncryptionKeys(kek).derived_hmac_keys(0).named()[label]
    return hmac.new(key, value.encode(), hashlib.sha256).digest()


async def test_a_database_used_before_keeps_the_keys_derived_from_its_kek(
    kek_a: Settings, database_url: str, tmp_path: Path, clock: MovableClock
) -> None:
    async with _serve(kek_a, clock) as harness:
        await harness.create_user()
        tokens = await harness.login()
        client = await _client(harness)
    # Make the database what an earlier version left: digests under the KEK-derived keys, no
    # stored HMAC keys.
    database = Database(kek_a.resolved_database_url, pool_size=1)
    try:
        async with database.transaction() as db:
            await db.execute(delete(ServerSecret))
            await db.execute(
                update(RefreshToken).values(
                    digest=_old_digest(KEK_A, "refresh-token/digest", tokens["refresh_token"])
                )
            )
            await db.execute(
                update(OAuthClient).values(
                    secret_digest=_old_digest(KEK_A, "client-secret/digest", client[1])
                )
            )
    finally:
        await database.dispose()

    # Upgraded and rotated at once: the keys kept are A's (the signing keys' KEK), not B's.
    async with _serve(_settings(database_url, tmp_path, KEK_B, KEK_A), clock) as upgraded:
        refreshed = await upgraded.refresh(tokens["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text
        assert upgraded.state.secrets.secrets.hmac == KeyEncryptionKeys(KEK_A).derived_hmac_keys(0)
        client_tokens = await _client_login(upgraded, client)
        assert client_tokens["refresh_token"]


async def test_processes_starting_at_once_agree_on_one_set_of_keys(
    kek_a: Settings, clock: MovableClock
) -> None:
    databases = [Database(kek_a.resolved_database_url, pool_size=2) for _ in range(4)]
    try:
        loaded = await asyncio.gather(
            *(SecretService(load_secrets(kek_a)).load(d, clock.now()) for d in databases)
        )
        stored = await _stored(databases[0])
    finally:
        for d in databases:
            await d.dispose()
    assert all(keys == loaded[0] for keys in loaded)
    assert len(stored) == len(HmacKeys.NAMES)


def test_previous_keks_are_checked_as_keys(tmp_path: Path) -> None:
    settings = make_settings("sqlite://", tmp_path, previous_key_encryption_keys=f"{KEK_B}, nope")
    with pytest.raises(ConfigError, match=r"AUTHSVC_PREVIOUS_KEY_ENCRYPTION_KEYS \(entry 2\)"):
        load_secrets(settings)
    ring = load_secrets(make_settings("sqlite://", tmp_path, previous_key_encryption_keys=KEK_B))
    assert len(ring.keks) == 2


# The whole sequence with real server processes: two at a time on one database.


# On PostgreSQL, the topology where several processes share one database (the rules under test
# are the same on SQLite, which the in-process tests above run on too).
@pytest.fixture
def shared_url() -> Iterator[str]:
    admin = pg.admin_url()
    name = f"authsvc_kek_{os.getpid()}_{secrets.token_hex(3)}"
    pg.create_database(admin, name)
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        pg.drop_database(admin, name)


def _post(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, timeout=30, **kwargs)


def _holdings_work(bases: list[str], held: dict[str, Any], client: tuple[str, str]) -> None:
    """Everything a client holds still works on every process: the access token verifies, the
    refresh token and the client's refresh token rotate, a new login signs with a known key.
    `held` is updated with the rotated tokens."""
    for base in bases:
        me = httpx.get(
            f"{base}/auth/me",
            headers={"Authorization": f"Bearer {held['access_token']}"},
            timeout=30,
        )
        assert me.status_code == 200, me.text
        refreshed = _post(f"{base}/auth/refresh", json={"refresh_token": held["refresh_token"]})
        assert refreshed.status_code == 200, refreshed.text
        held.update(refreshed.json())
        by_client = _post(
            f"{base}/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": held["client_refresh"]},
            auth=client,
        )
        assert by_client.status_code == 200, by_client.text
        held["client_refresh"] = by_client.json()["refresh_token"]
        login = _post(f"{base}/auth/login", json={"username": "alice", "password": PASSWORD})
        assert login.status_code == 200, login.text
        kid = jwt.get_unverified_header(login.json()["access_token"])["kid"]
        jwks = httpx.get(f"{base}/.well-known/jwks.json", timeout=30).json()
        assert kid in {k["kid"] for k in jwks["keys"]}


@contextmanager
def _servers(workdirs: list[Path], env: dict[str, str]) -> Iterator[list[str]]:
    """`serve` in each of `workdirs` (one process each, all on one database), started together;
    yields their base URLs once all are ready, and stops them after."""
    procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    try:
        for workdir in workdirs:
            port = free_port()
            log = workdir / "serve.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [*CLI, "serve", "--port", str(port)],
                    cwd=workdir,
                    env=clean_env(**env),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            procs.append((f"http://127.0.0.1:{port}", proc, log))
        for base, proc, log in procs:
            deadline = time.monotonic() + 60
            while not _ready(base):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(log.read_text())
                time.sleep(0.1)
        yield [base for base, _, _ in procs]
    finally:
        for _, proc, _ in procs:
            proc.send_signal(signal.SIGTERM)
        for _, proc, _ in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow
# Seven server processes and nine CLI runs, one after another: more than the suite's default
# per-test limit on a busy machine.
@pytest.mark.timeout(360)
@pytest.mark.postgresql
def test_kek_rotation_with_two_server_processes(shared_url: str, tmp_path: Path) -> None:
    common = {
        "AUTHSVC_DATABASE_URL": shared_url,
        "AUTHSVC_KEY_RELOAD_INTERVAL": "1",
        "AUTHSVC_RATE_LIMIT_ENABLED": "false",
        "AUTHSVC_AUTO_MIGRATE": "true",  # the CLI's first command migrates the database
    }
    under_a = {**common, "AUTHSVC_KEY_ENCRYPTION_KEY": KEK_A}
    rotated = {
        **common,
        "AUTHSVC_KEY_ENCRYPTION_KEY": KEK_B,
        "AUTHSVC_PREVIOUS_KEY_ENCRYPTION_KEYS": KEK_A,
    }
    under_b = {**common, "AUTHSVC_KEY_ENCRYPTION_KEY": KEK_B}
    work = [tmp_path / name for name in ("one", "two", "cli")]
    for path in work:
        path.mkdir()

    def run(*args: str, stdin: str = "", env: dict[str, str] = under_a) -> list[str]:
        done = cli(work[2], *args, stdin=stdin, **env)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    # Under KEK A: a user, a confidential client, and the tokens both hold.
    run("users", "create", "alice", "--password-stdin", stdin=PASSWORD + "\n")
    made = dict(
        line.split(": ", 1)
        for line in run(
            "clients",
            "create",
            "backend",
            "--confidential",
            "--grant",
            "password",
            "--grant",
            "refresh_token",
        )
        if ": " in line
    )
    client = (made["client_id"], made["client_secret"])
    with _servers(work[:1], under_a) as (base,):
        held: dict[str, Any] = _post(
            f"{base}/auth/login", json={"username": "alice", "password": PASSWORD}
        ).json()
        granted = _post(
            f"{base}/oauth/token",
            data={"grant_type": "password", "username": "alice", "password": PASSWORD},
            auth=client,
        )
        assert granted.status_code == 200, granted.text
        held["client_refresh"] = granted.json()["refresh_token"]
        kids = {k["kid"] for k in httpx.get(f"{base}/.well-known/jwks.json").json()["keys"]}

    # The rolling restart: one process still on A, one on B with A as previous. A signing key
    # made meanwhile goes under A, so the process on A alone loads it at its next reload.
    with _servers(work[:1], under_a) as (on_a,), _servers(work[1:2], rotated) as (on_b,):
        rotated_kid = run("keys", "rotate", env=rotated)[0].split()[1].rstrip(";")
        deadline = time.monotonic() + 30
        while True:
            jwks = httpx.get(f"{on_a}/.well-known/jwks.json")
            assert jwks.status_code == 200, jwks.text
            if rotated_kid in {k["kid"] for k in jwks.json()["keys"]}:
                break
            assert time.monotonic() < deadline, "the process on A never published the new key"
            time.sleep(0.5)
        assert httpx.get(f"{on_a}/readyz").status_code == 200
        _holdings_work([on_a, on_b], held, client)
    kids.add(rotated_kid)

    # Rotated to B with A as previous, served by two processes; then rewrapped while they run.
    with _servers(work[:2], rotated) as (one, two):
        _holdings_work([one, two], held, client)
        # A ring without A, before the rewrap, refuses to start: one line, exit 2.
        refused = cli(work[2], "serve", "--port", str(free_port()), **under_b)
        assert refused.returncode == 2, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "cannot be decrypted: no key-encryption key configured" in refused.stderr
        assert "AUTHSVC_PREVIOUS_KEY_ENCRYPTION_KEYS" in refused.stderr
        # So does `keys rewrap`, before writing anything.
        unread = cli(work[2], "keys", "rewrap", **under_b)
        assert unread.returncode == 2, unread.stderr
        assert unread.stderr.startswith("error: ") and unread.stderr.count("\n") == 1
        assert "cannot be decrypted" in unread.stderr
        rewrapped = run("keys", "rewrap", env=rotated)
        assert {f"rewrapped signing key {kid}" for kid in kids} <= set(rewrapped)
        assert {f"rewrapped server secret {name}" for name in HmacKeys.NAMES} <= set(rewrapped)
        _holdings_work([two, one], held, client)

    # A dropped: nothing a client holds stops working, and nothing is left to rewrap.
    with _servers(work[:2], under_b) as (one, two):
        _holdings_work([one, two], held, client)
        jwks = httpx.get(f"{two}/.well-known/jwks.json").json()
        assert kids == {k["kid"] for k in jwks["keys"]}
    assert run("keys", "rewrap", env=under_b)[-1].startswith("0 rewrapped")


async def test_a_secret_this_process_cannot_read_is_a_503(
    kek_a: Settings, clock: MovableClock, caplog: pytest.LogCaptureFixture
) -> None:
    """What another process wrote under a KEK this one lacks (a rotation out of order: rewrap
    before every process had the new KEK) is an outage of this process, said in its log, not a
    500: a TOTP secret, and a signing key picked up at the next reload."""
    other = Fernet(KEK_B)
    async with _serve(kek_a, clock) as server:
        user = await server.create_user("bob")
        access = {"Authorization": f"Bearer {(await server.login('bob'))['access_token']}"}
        enrolled = await server.client.post("/auth/mfa/totp/enroll", headers=access)
        assert enrolled.status_code == 200, enrolled.text
        secret = enrolled.json()["secret"]
        async with server.state.database.transaction() as db:
            await db.execute(
                update(TotpCredential)
                .where(TotpCredential.user_id == uuid.UUID(user))
                .values(secret_encrypted=other.encrypt(secret.encode()))
            )
        code = pyotp.TOTP(secret).at(clock.now())
        refused = await server.client.post(
            "/auth/mfa/totp/confirm", json={"code": code}, headers=access
        )
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "service_unavailable"
        assert "a TOTP secret in the database cannot be decrypted" in caplog.text

        # A key another process made under B: this one meets it at its next reload.
        private = crypto.generate_private_key(2048)
        jwk = crypto.public_jwk(private.public_key())
        async with server.state.database.transaction() as db:
            db.add(
                SigningKey(
                    kid=jwk["kid"],
                    algorithm=crypto.ALGORITHM,
                    public_jwk=jwk,
                    private_key_encrypted=crypto.encrypt_private_key(private, other),
                    created_at=clock.now(),
                    activates_at=clock.now() + timedelta(hours=1),
                    retires_at=None,
                )
            )
        clock.advance(kek_a.key_reload_interval + 1)
        login = await server.client.post(
            "/auth/login", json={"username": "bob", "password": PASSWORD}
        )
        assert login.status_code == 503, login.text
        assert f"signing key {jwk['kid']} in the database cannot be decrypted" in caplog.text
        ready = await server.client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["signing_key"].startswith("unreadable"), ready.text
