"""Real processes on one PostgreSQL database: scale-out, start-up races, SIGKILL, SIGTERM.

Every test here gets its own private PostgreSQL database (created and dropped by the test),
starts `python -m authsvc serve` processes on free ports and stops them in finalizers.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from authsvc.store.db import head_revision
from tests import pg
from tests.conftest import TEST_KEK
from tests.live import CLI, clean_env, cli, free_port
from tests.proxy import TcpProxy

pytestmark = [pytest.mark.slow, pytest.mark.postgresql]

PASSWORD = "a long enough password"
METRICS_TOKEN = "metrics-token-for-the-process-tests"


@pytest.fixture
def private_db() -> Iterator[str]:
    admin = pg.admin_url()
    name = f"authsvc_proc_{os.getpid()}_{secrets.token_hex(3)}"
    pg.create_database(admin, name)
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        pg.drop_database(admin, name)


def _sql(url: str, query: str) -> list[tuple[Any, ...]]:
    async def fetch() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(
            make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        )
        try:
            return [tuple(r) for r in await conn.fetch(query)]
        finally:
            await conn.close()

    return asyncio.run(fetch())


@dataclass
class Cluster:
    """The processes a test started, stopped whatever happens."""

    workdir: Path
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return cli(self.workdir, *args, stdin=stdin, **self.env)

    def spawn(self, *extra: str, **env: str) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        log = self.workdir / f"serve-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*CLI, "serve", "--port", str(port), *extra],
                cwd=self.workdir,
                env=clean_env(**{**self.env, **env}),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        self.logs.append(log)
        return f"http://127.0.0.1:{port}", proc

    def wait_ready(self, base: str, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise AssertionError(self.log_text())
            time.sleep(0.1)
        raise AssertionError(f"{base} not ready:\n{self.log_text()}")

    def start(self, *extra: str, **env: str) -> str:
        base, proc = self.spawn(*extra, **env)
        self.wait_ready(base, proc)
        return base

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in self.logs if p.exists())

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _env(url: str, **extra: str) -> dict[str, str]:
    return {
        "AUTHSVC_DATABASE_URL": url,
        "AUTHSVC_KEY_ENCRYPTION_KEY": TEST_KEK,
        "AUTHSVC_KEY_RELOAD_INTERVAL": "1",
        "AUTHSVC_KEY_PUBLISH_AHEAD": "3",
        "AUTHSVC_RATE_LIMIT_ENABLED": "false",
        "AUTHSVC_LOG_FORMAT": "json",
        "AUTHSVC_DB_POOL_SIZE": "4",
        "AUTHSVC_METRICS_TOKEN": METRICS_TOKEN,
        **extra,
    }


@pytest.fixture
def cluster(private_db: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, _env(private_db))
    try:
        yield c
    finally:
        c.stop_all()
        print(c.log_text())  # shown by pytest only when the test failed


def _prepare(c: Cluster, *users: str) -> None:
    migrated = c.cli("migrate")
    assert migrated.returncode == 0, migrated.stderr
    for name in users:
        made = c.cli("users", "create", name, "--password-stdin", stdin=PASSWORD + "\n")
        assert made.returncode == 0, made.stderr


def _login(base: str, name: str = "alice") -> dict[str, Any]:
    r = httpx.post(f"{base}/auth/login", json={"username": name, "password": PASSWORD}, timeout=30)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _refresh(base: str, token: str) -> httpx.Response:
    return httpx.post(f"{base}/auth/refresh", json={"refresh_token": token}, timeout=30)


def _me(base: str, access: str) -> httpx.Response:
    return httpx.get(f"{base}/auth/me", headers={"Authorization": f"Bearer {access}"}, timeout=30)


def _kid(access: str) -> str:
    return str(jwt.get_unverified_header(access)["kid"])


def _jwks_kids(base: str) -> set[str]:
    return {k["kid"] for k in httpx.get(f"{base}/.well-known/jwks.json", timeout=30).json()["keys"]}


def _until(check: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)


def test_two_processes_share_sessions_revocations_and_keys(
    cluster: Cluster, private_db: str
) -> None:
    _prepare(cluster, "alice")
    a_base, a_proc = cluster.spawn()
    b_base, b_proc = cluster.spawn()
    cluster.wait_ready(a_base, a_proc)
    cluster.wait_ready(b_base, b_proc)
    secrets_seen: list[str] = [PASSWORD]

    # Login on A, refresh on B, and on again across them.
    t1 = _login(a_base)
    r2 = _refresh(b_base, t1["refresh_token"])
    assert r2.status_code == 200, r2.text
    t2 = r2.json()
    assert _me(b_base, t2["access_token"]).status_code == 200
    assert _me(a_base, t2["access_token"]).status_code == 200
    t3 = _refresh(a_base, t2["refresh_token"]).json()
    # A spent token presented on the other process: theft, the whole family goes.
    reused = _refresh(b_base, t1["refresh_token"])
    assert reused.status_code == 401 and reused.json()["error"] == "refresh_token_reused"
    assert _refresh(a_base, t3["refresh_token"]).status_code == 401
    assert _me(a_base, t3["access_token"]).status_code == 401
    secrets_seen += [t["refresh_token"] for t in (t1, t2, t3)] + [t3["access_token"]]

    # Logout on A is honoured by B at once (no cache of sessions or the denylist).
    t4 = _login(b_base)
    assert _me(b_base, t4["access_token"]).status_code == 200
    out = httpx.post(
        f"{a_base}/auth/logout",
        headers={"Authorization": f"Bearer {t4['access_token']}"},
        timeout=30,
    )
    assert out.status_code == 204
    assert _me(b_base, t4["access_token"]).status_code == 401
    secrets_seen += [t4["access_token"], t4["refresh_token"]]

    # A key rotated through the CLI: published by both within the reload interval, and used
    # by both once the publish-ahead time has passed.
    old_kid = _kid(_login(a_base)["access_token"])
    rotated = cluster.cli("keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    new_kid = rotated.stdout.split()[1].rstrip(";")
    assert new_kid != old_kid
    _until(lambda: new_kid in _jwks_kids(a_base) and new_kid in _jwks_kids(b_base))
    _until(lambda: _kid(_login(a_base)["access_token"]) == new_kid)
    _until(lambda: _kid(_login(b_base)["access_token"]) == new_kid)
    assert old_kid in _jwks_kids(b_base)  # still published: tokens it signed are still valid

    # Concurrent refreshes of one token, split across A and B: one rotation. The losers are
    # honest retries within the grace window, so they get the same successor, not a fork.
    start = _login(a_base)["refresh_token"]
    barrier = threading.Barrier(8)

    def race(i: int) -> httpx.Response:
        barrier.wait()
        return _refresh(a_base if i % 2 else b_base, start)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(race, range(8)))
    assert [r.status_code for r in answers] == [200] * 8
    successors = {r.json()["refresh_token"] for r in answers}
    assert len(successors) == 1
    [[children]] = _sql(
        private_db,
        "SELECT count(*) FROM refresh_tokens t JOIN refresh_tokens p ON t.parent_id = p.id "
        "WHERE p.used_at IS NOT NULL AND t.session_id = p.session_id "
        "AND p.session_id = (SELECT session_id FROM refresh_tokens ORDER BY id DESC LIMIT 1)",
    )
    assert children == 1
    assert _refresh(b_base, successors.pop()).status_code == 200

    # Each process counts its own refreshes; together they saw every outcome once per event.
    totals: dict[str, float] = {}
    for base in (a_base, b_base):
        scraped = httpx.get(
            f"{base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=30
        )
        assert scraped.status_code == 200
        for family in text_string_to_metric_families(scraped.text):
            for sample in family.samples:
                if sample.name == "authsvc_refreshes_total":
                    outcome = sample.labels["outcome"]
                    totals[outcome] = totals.get(outcome, 0) + sample.value
    assert totals == {"rotated": 4, "grace_retry": 7, "reuse_revoked": 1, "invalid": 1}

    # One JSON line per request from each process, and no secret in any line.
    cluster.stop_all()
    for log in cluster.logs:
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        access = [line for line in lines if line["logger"] == "authsvc.access"]
        assert access and all(line["request_id"] and line["duration_ms"] >= 0 for line in access)
        raw = log.read_text()
        for secret in secrets_seen:
            assert secret not in raw and secret[-20:] not in raw


def test_serve_with_two_workers_on_postgresql(cluster: Cluster) -> None:
    _prepare(cluster, "alice")
    base = cluster.start("--workers", "2")
    for _ in range(6):
        tokens = _login(base)
        rotated = _refresh(base, tokens["refresh_token"])
        assert rotated.status_code == 200
        assert _me(base, rotated.json()["access_token"]).status_code == 200
    started = [
        json.loads(line)
        for line in cluster.logs[0].read_text().splitlines()
        if line.startswith("{") and "Started server process" in line
    ]
    assert len({line["msg"] for line in started}) == 2  # two worker processes


def test_simultaneous_start_on_an_empty_database_migrates_once_and_makes_one_key(
    cluster: Cluster, private_db: str
) -> None:
    # No `authsvc migrate`: every process migrates itself, all at the same moment.
    spawned = [cluster.spawn(AUTHSVC_AUTO_MIGRATE="true") for _ in range(3)]
    for base, proc in spawned:
        cluster.wait_ready(base, proc)
    assert _sql(private_db, "SELECT count(*) FROM signing_keys") == [(1,)]
    assert _sql(private_db, "SELECT version_num FROM alembic_version") == [(head_revision(),)]
    kids = [_jwks_kids(base) for base, _ in spawned]
    assert kids[0] == kids[1] == kids[2] and len(kids[0]) == 1


def test_sigkill_during_refresh_traffic_loses_and_forks_nothing(
    cluster: Cluster, private_db: str
) -> None:
    users = [f"user{i}" for i in range(3)]
    _prepare(cluster, *users)
    env = {"AUTHSVC_REFRESH_REUSE_GRACE_SECONDS": "120"}
    base, proc = cluster.spawn(**env)
    cluster.wait_ready(base, proc)
    # Each client keeps its chain: the last token it got a 200 for, and the one in flight.
    chains = {
        name: {"current": _login(base, name)["refresh_token"], "sent": None} for name in users
    }
    stop = threading.Event()
    counts = dict.fromkeys(users, 0)
    failures: list[str] = []

    def client(name: str) -> None:
        chain = chains[name]
        with httpx.Client(base_url=base, timeout=5) as http:
            while not stop.is_set():
                chain["sent"] = chain["current"]
                try:
                    r = http.post("/auth/refresh", json={"refresh_token": chain["current"]})
                except httpx.HTTPError:
                    return  # the server died mid-request: this response is lost
                if r.status_code != 200:
                    failures.append(r.text)
                    return
                chain["current"] = r.json()["refresh_token"]
                chain["sent"] = None
                counts[name] += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in users]
    for t in threads:
        t.start()
    _until(lambda: sum(counts.values()) >= 30, 30)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert failures == []

    def check_chains() -> None:
        # Every session: a straight chain, each spent token with exactly one successor and
        # exactly one unspent token at its head. Nothing half-rotated survived the kill.
        rows = _sql(
            private_db,
            "SELECT p.session_id, count(*) FILTER (WHERE p.used_at IS NULL), "
            "count(*) FILTER (WHERE p.used_at IS NOT NULL AND "
            "  (SELECT count(*) FROM refresh_tokens c WHERE c.parent_id = p.id) <> 1) "
            "FROM refresh_tokens p GROUP BY p.session_id",
        )
        assert len(rows) == len(users)
        assert all(unused == 1 and broken == 0 for _, unused, broken in rows), rows

    check_chains()
    base = cluster.start(**env)
    for name in users:
        # The client's last good token works: either it was never spent, or its rotation
        # committed and the response was lost, and the retry gets that same successor.
        again = _refresh(base, str(chains[name]["current"]))
        assert again.status_code == 200, (name, again.text)
        assert _refresh(base, again.json()["refresh_token"]).status_code == 200
    check_chains()
    assert sum(counts.values()) >= 30


def test_sigterm_lets_an_in_flight_request_finish(tmp_path: Path) -> None:
    # A deliberately expensive hash makes the login take about a second.
    slow = {
        "AUTHSVC_ARGON2_TIME_COST": "6",
        "AUTHSVC_ARGON2_MEMORY_COST": "131072",
        "AUTHSVC_KEY_ENCRYPTION_KEY": TEST_KEK,
    }
    c = Cluster(tmp_path, slow)
    try:
        made = c.cli("users", "create", "slowpoke", "--password-stdin", stdin=PASSWORD + "\n")
        assert made.returncode == 0, made.stderr
        base, proc = c.spawn()
        c.wait_ready(base, proc)
        with ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            pending = pool.submit(_login, base, "slowpoke")
            time.sleep(0.3)  # the login is hashing now
            proc.send_signal(signal.SIGTERM)
            tokens = pending.result(timeout=30)
        assert tokens["access_token"] and time.monotonic() - started > 0.3
        # uvicorn re-raises the signal after its graceful shutdown, so the status says SIGTERM.
        assert proc.wait(timeout=15) in (0, -signal.SIGTERM)
        assert "Finished server process" in c.log_text()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/healthz", timeout=2)
    finally:
        c.stop_all()


def test_a_server_process_rides_out_a_database_outage(cluster: Cluster, private_db: str) -> None:
    _prepare(cluster, "alice")
    url = make_url(private_db)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    try:
        proxied = url.set(port=proxy.port).render_as_string(hide_password=False)
        base = cluster.start(AUTHSVC_DATABASE_URL=proxied, AUTHSVC_DB_TIMEOUT_SECONDS="1")
        tokens = _login(base)
        proxy.cut("blackhole")
        started = time.monotonic()
        down = _refresh(base, tokens["refresh_token"])
        assert down.status_code == 503 and down.headers["retry-after"]
        assert httpx.get(f"{base}/readyz", timeout=30).status_code == 503
        assert time.monotonic() - started < 10
        proxy.restore()
        _until(lambda: httpx.get(f"{base}/readyz", timeout=30).status_code == 200)
        assert _refresh(base, tokens["refresh_token"]).status_code == 200
    finally:
        cluster.stop_all()
        proxy.stop()
