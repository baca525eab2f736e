#!/usr/bin/env python3
"""authsvc benchmarks: every figure against a baseline measured in the same run.

    .venv/bin/python bench/run.py            # full run: SQLite and PostgreSQL, 1 and 2 workers
    .venv/bin/python bench/run.py --quick    # smoke run (< 60 s): 1 worker, short runs, no peer

For each database and worker count it starts `authsvc serve --workers N` (production settings,
rate limiting off, access log off) pinned with taskset, drives it with wrk (bench/wrk/*.lua,
pinned to its own core), and measures in the same run the baselines that bound each figure:
the raw argon2 rate (login), the raw RS256 signing rate (refresh), a FastAPI hello-world served
the same way (JWKS), the raw RS256 verify rate (/auth/me), and the djangorestframework-simplejwt
peer (login and refresh), installed in its own venv (bench/.venv-peer). It prints a table and
writes bench/results/results.json and bench/results/results.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
WRK_DIR = BENCH / "wrk"
PEER_DIR = BENCH / "peer_simplejwt"
PEER_VENV = BENCH / ".venv-peer"
BIN = Path(sys.executable).parent

PG_ADMIN = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")

# Production-like password hashing: argon2id, t=3, m=64 MiB, p=4 (RFC 9106 section 4, second
# recommended option; authsvc's defaults). Both authsvc and the peer hash with exactly these.
ARGON2 = (3, 65536, 4)
USERNAME, PASSWORD = "bench", "correct horse battery staple"

# wrk shape, fixed so runs compare: connections (and threads) per kind of request.
WRK = {
    # login: few connections, so that wrk's count (it drops the requests in flight when the
    # run ends, and each connection's first completes only after one latency) is off by a few
    # percent only; the server hashes at most one password per core at a time anyway.
    "login": {"threads": 2, "connections": 4},
    "refresh": {"threads": 16, "connections": 16},  # one connection per thread: see refresh.lua
    "get": {"threads": 2, "connections": 32},
}
# --quick: fewer refresh chains (each costs a login, i.e. a password hash, to seed)
WRK_QUICK = {
    **WRK,
    "login": {"threads": 2, "connections": 2},
    "refresh": {"threads": 4, "connections": 4},
}


@dataclass
class Run:
    """One wrk run."""

    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    broken_chains: int
    wrk_cpu: float  # share of one core used by wrk itself
    busy: float  # share of all cores busy during the run (everyone's load, ours included)
    server_cpu_ms: float | None = None  # server CPU time per request (all its processes)
    db_cpu_ms: float | None = None  # PostgreSQL backends' CPU time per request (its connections)
    first_error: str = ""  # refresh runs: the first failed response (status and body start)


@dataclass
class Row:
    figure: str
    value: float | None
    unit: str
    p50_ms: float | None = None
    p99_ms: float | None = None
    baseline: float | None = None
    baseline_name: str = ""
    ratio: float | None = None
    cpu_ms: float | None = None  # authsvc CPU per request: its processes (+ PostgreSQL backends)
    baseline_cpu_ms: float | None = None  # the baseline's CPU per operation
    goal: str = ""
    met: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# -- processes -----------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_layout() -> tuple[str, str, str]:
    """(server cpus, wrk cpus, description). The generator gets the last core; the server gets
    all cores (on 2 cores it shares one with wrk: PostgreSQL, unpinned, needs them too)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) == 1:
        one = str(cpus[0])
        return one, one, f"1 core: server, wrk and PostgreSQL all on cpu {one}"
    wrk = str(cpus[-1])
    server = ",".join(str(c) for c in cpus)
    return (
        server,
        wrk,
        f"server workers and baselines: taskset -c {server}; wrk: taskset -c {wrk} "
        f"(shares cpu {wrk} with the server); PostgreSQL: unpinned (system service)",
    )


def group_cpu_seconds(pgid: int | None) -> float:
    """User+system CPU seconds of every live process in a process group (threads included)."""
    if pgid is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state ppid pgrp ...
            total += int(fields[11]) + int(fields[12])
    return total / tick


def pid_cpu_seconds(pids: list[int]) -> dict[int, float]:
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def pg_backends(dbname: str | None) -> dict[int, float]:
    """CPU seconds so far of the PostgreSQL backends connected to one database."""
    if not dbname:
        return {}
    query = f"SELECT pid FROM pg_stat_activity WHERE datname = '{dbname}'"
    out = subprocess.run(
        ["psql", PG_ADMIN, "-Atc", query], capture_output=True, text=True, check=False
    ).stdout
    return pid_cpu_seconds([int(x) for x in out.split()])


def cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as fh:
        parts = [int(x) for x in fh.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


class Server:
    """A server process group we started, stopped by its own pgid."""

    def __init__(
        self, argv: list[str], env: dict[str, str], cwd: Path, health: str, any_status: bool = False
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.env, self.cwd, self.health, self.any_status = env, cwd, health, any_status
        self.proc: subprocess.Popen[bytes] | None = None
        self.pg_db: str | None = None  # set to count its PostgreSQL backends' CPU
        self.logfile = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__

    def __enter__(self) -> Server:
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=self.logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                status = httpx.get(self.url + self.health, timeout=2).status_code
                if status == 200 or self.any_status:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.logfile.seek(0)
        output = self.logfile.read().decode(errors="replace")[-3000:]
        self.__exit__(None, None, None)
        raise RuntimeError(f"server {self.argv} did not start:\n{output}")

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(
            ["pgrep", "-g", str(self.proc.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        return [int(p) for p in out if int(p) != self.proc.pid] or [self.proc.pid]

    def __exit__(self, *_: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.logfile.close()


def wrk(
    name: str,
    url: str,
    script: str,
    kind: str,
    duration: float,
    wrk_cpus: str,
    *args: str,
    server: Server | None = None,
    pg_db: str | None = None,
) -> Run:
    shape = WRK[kind]
    argv = [
        "taskset", "-c", wrk_cpus, "wrk",
        "-t", str(shape["threads"]), "-c", str(shape["connections"]),
        "-d", f"{max(1, round(duration))}s", "--timeout", "10s",
        "-s", str(WRK_DIR / script), url,
    ]  # fmt: skip
    if args:
        argv += ["--", *args]
    env = {**os.environ, "BENCH_WRK_DIR": str(WRK_DIR)}
    pgid = server.proc.pid if server is not None and server.proc is not None else None
    busy0, total0 = cpu_times()
    server0 = group_cpu_seconds(pgid)
    db0 = pg_backends(pg_db)
    with tempfile.TemporaryFile() as out:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.monotonic() - started
        out.seek(0)
        text = out.read().decode(errors="replace")
    busy1, total1 = cpu_times()
    server1 = group_cpu_seconds(pgid)
    db1 = pg_backends(pg_db)
    line = next((x for x in text.splitlines() if x.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {' '.join(argv)}\n{text}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    errors = sum(data[k] for k in data if k.startswith("errors_"))
    run = Run(
        name=name,
        rps=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        requests=data["requests"],
        errors=errors,
        broken_chains=data["broken_chains"],
        wrk_cpu=(usage.ru_utime + usage.ru_stime) / elapsed,
        first_error=data.get("first_error", ""),
        busy=(busy1 - busy0) / max(1, total1 - total0),
        server_cpu_ms=(server1 - server0) * 1000 / data["requests"]
        if pgid and data["requests"]
        else None,
        db_cpu_ms=sum(v - db0.get(k, 0.0) for k, v in db1.items()) * 1000 / data["requests"]
        if pg_db and data["requests"]
        else None,
    )
    log(
        f"  {name}: {run.rps:,.1f}/s p50 {run.p50_ms:.1f} ms p99 {run.p99_ms:.1f} ms"
        f" ({run.requests} requests, {errors} errors, wrk {run.wrk_cpu:.0%} of a core,"
        f" cpus {run.busy:.0%} busy"
        + (f", server {run.server_cpu_ms:.2f} cpu-ms/request" if run.server_cpu_ms else "")
        + (f", PostgreSQL {run.db_cpu_ms:.2f} cpu-ms/request" if run.db_cpu_ms else "")
        + ")"
    )
    return run


def drive(
    server: Server,
    wrk_cpus: str,
    name: str,
    path: str,
    script: str,
    kind: str,
    duration: float,
    *args: str,
) -> Run:
    return wrk(
        name, server.url + path, script, kind, duration, wrk_cpus, *args,
        server=server, pg_db=server.pg_db,
    )  # fmt: skip


def merge(name: str, runs: list[Run]) -> Run:
    """Rounds of one figure as one: mean rate and median, worst p99, CPU per request overall."""
    if len(runs) == 1:
        return runs[0]
    requests = sum(r.requests for r in runs) or 1

    def per_request(attr: str) -> float | None:
        values = [(getattr(r, attr), r.requests) for r in runs]
        if any(v is None for v, _ in values):
            return None
        return sum(v * n for v, n in values) / requests

    return Run(
        name=name,
        rps=sum(r.rps for r in runs) / len(runs),
        p50_ms=sum(r.p50_ms for r in runs) / len(runs),
        p99_ms=max(r.p99_ms for r in runs),
        requests=sum(r.requests for r in runs),
        errors=sum(r.errors for r in runs),
        broken_chains=sum(r.broken_chains for r in runs),
        wrk_cpu=max(r.wrk_cpu for r in runs),
        busy=sum(r.busy for r in runs) / len(runs),
        server_cpu_ms=per_request("server_cpu_ms"),
        db_cpu_ms=per_request("db_cpu_ms"),
        first_error=next((r.first_error for r in runs if r.first_error), ""),
    )


def primitive(kind: str, server_cpus: str, duration: float, processes: int) -> tuple[float, float]:
    """(operations/s, CPU ms per operation) of a raw primitive on the server's cores."""
    argv = [
        "taskset", "-c", server_cpus, sys.executable, str(BENCH / "primitives.py"), kind,
        "--duration", str(duration), "--processes", str(processes),
        "--threads", str(len(server_cpus.split(","))),
        "--argon2", ",".join(str(x) for x in ARGON2),
    ]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    data = json.loads(out.strip().splitlines()[-1])
    rate, cpu_ms = float(data["rate"]), float(data["cpu_ms"])
    log(f"  raw {kind} ({processes} process(es)): {rate:,.1f}/s, {cpu_ms:.2f} cpu-ms/op")
    return rate, cpu_ms


# -- clients used to prepare runs ------------------------------------------------------------------


async def _logins(url: str, n: int, body: dict[str, str], field: str) -> list[dict[str, Any]]:
    import httpx

    sem = asyncio.Semaphore(4)
    async with httpx.AsyncClient(timeout=60) as client:

        async def one() -> dict[str, Any]:
            async with sem:
                r = await client.post(url, json=body)
                r.raise_for_status()
                data: dict[str, Any] = r.json()
                assert field in data, data
                return data

        return list(await asyncio.gather(*(one() for _ in range(n))))


def logins(url: str, n: int, field: str) -> list[dict[str, Any]]:
    return asyncio.run(_logins(url, n, {"username": USERNAME, "password": PASSWORD}, field))


def token_file(workdir: Path, name: str, tokens: list[str]) -> Path:
    path = workdir / f"{name}.tokens"
    path.write_text("\n".join(tokens) + "\n")
    return path


# -- the two systems under test ------------------------------------------------------------------


# --set: settings added to authsvc_env's, for A/B experiments (printed in the report).
EXTRA_SETTINGS: dict[str, str] = {}


def authsvc_env(db_url: str, workdir: Path, kek: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHSVC_", "PEER_"))}
    env.update(
        AUTHSVC_ENV="production",
        AUTHSVC_DATABASE_URL=db_url,
        AUTHSVC_DATA_DIR=str(workdir / "authsvc-data"),
        AUTHSVC_KEY_ENCRYPTION_KEY=kek,
        AUTHSVC_RATE_LIMIT_ENABLED="false",
        AUTHSVC_ACCESS_LOG="false",
        AUTHSVC_LOG_LEVEL="warning",
        AUTHSVC_ARGON2_TIME_COST=str(ARGON2[0]),
        AUTHSVC_ARGON2_MEMORY_COST=str(ARGON2[1]),
        AUTHSVC_ARGON2_PARALLELISM=str(ARGON2[2]),
    )
    env.update(EXTRA_SETTINGS)
    return env


def peer_env(db_url: str, workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHSVC_", "PEER_"))}
    env.update(
        PEER_DATABASE_URL=db_url,
        PEER_PRIVATE_KEY_FILE=str(workdir / "peer-key.pem"),
        PEER_PUBLIC_KEY_FILE=str(workdir / "peer-key.pub.pem"),
        PEER_ARGON2=",".join(str(x) for x in ARGON2),
        DJANGO_SETTINGS_MODULE="peer.settings",
    )
    return env


def ensure_peer_venv() -> Path:
    python = PEER_VENV / "bin" / "python"
    req = PEER_DIR / "requirements.txt"
    stamp = PEER_VENV / ".installed"
    if not stamp.exists() or stamp.read_text() != req.read_text():
        log(f"installing the peer into {PEER_VENV.relative_to(ROOT)} (once)")
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "-r", str(req)],
            check=True,
        )  # fmt: skip
        stamp.write_text(req.read_text())
    return python


def write_peer_keys(workdir: Path) -> None:
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (workdir / "peer-key.pem").write_bytes(
        key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    )
    (workdir / "peer-key.pub.pem").write_bytes(
        key.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
    )


@contextlib.contextmanager
def postgres_database() -> Iterator[str | None]:
    """A private database on the local PostgreSQL, dropped afterwards; None if unreachable."""
    name = f"authsvc_bench_{os.getpid()}"
    admin = ["psql", PG_ADMIN, "-q", "-v", "ON_ERROR_STOP=1", "-c"]
    try:
        subprocess.run([*admin, f"CREATE DATABASE {name}"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        log(f"PostgreSQL unavailable at {PG_ADMIN}: {exc}; skipping it")
        yield None
        return
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        subprocess.run(
            [*admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
            check=False,
            capture_output=True,
        )


# -- one block: a database and a worker count ----------------------------------------------------


def bench_block(
    db: str,
    db_url: str,
    peer_url: str,
    workers: int,
    opts: argparse.Namespace,
    workdir: Path,
    kek: str,
    cpus: tuple[str, str],
    peer_python: Path | None,
) -> list[Row]:
    server_cpus, wrk_cpus = cpus
    d, tag = opts.duration, f"{db}, {workers}w"
    log(f"== {tag}")
    rows: list[Row] = []
    raw_time = 1.0 if opts.quick else max(2.0, d / 2)
    # A login takes a large fraction of a second under load: runs shorter than a few seconds
    # would count too few of them (wrk drops the requests still in flight at the end).
    login_d = 3.0 if opts.quick else max(8.0, 2 * d)
    raw_sign, sign_cpu = primitive("rs256", server_cpus, raw_time, workers)
    raw_verify, verify_cpu = primitive("rs256v", server_cpus, raw_time, workers)

    env = authsvc_env(db_url, workdir, kek)
    serve = ["taskset", "-c", server_cpus, str(BIN / "authsvc"), "serve", "--port", "{port}",
             "--workers", str(workers)]  # fmt: skip
    n = WRK["refresh"]["connections"]
    pg_db = db_url.rsplit("/", 1)[1] if db == "postgresql" else None
    hello_argv = [
        "taskset", "-c", server_cpus, str(BIN / "uvicorn"), "hello_app:app", "--port", "{port}",
        "--workers", str(workers), "--no-access-log", "--log-level", "warning",
        "--no-proxy-headers", "--no-server-header",
    ]  # fmt: skip
    with contextlib.ExitStack() as servers:
        srv = servers.enter_context(Server(serve, env, ROOT, "/readyz"))
        srv.pg_db = pg_db
        log(f"  authsvc up on {srv.url}, workers {srv.worker_pids()}")
        on = functools.partial(drive, srv, wrk_cpus)
        on("warm-up", "/.well-known/jwks.json", "get.lua", "get", 1)
        # The raw hash rate before and after the login run, averaged: the machine's other load
        # changes over seconds.
        argon2_a = primitive("argon2", server_cpus, raw_time, 1)
        login = on("login", "/auth/login", "login.lua", "login", login_d, USERNAME, PASSWORD)
        argon2_b = primitive("argon2", server_cpus, raw_time, 1)
        raw_argon2, argon2_cpu = (argon2_a[0] + argon2_b[0]) / 2, (argon2_a[1] + argon2_b[1]) / 2
        rounds = 1 if opts.quick else 2
        part = max(1.0, d / rounds)
        fsrv = None
        if db == "postgresql":
            # The refresh floor (bench/floor_app.py), on sessions made through authsvc; it and
            # authsvc's refresh alternate (both servers up), like the JWKS and its baselines.
            floor_argv = [a.replace("hello_app:app", "floor_app:app") for a in hello_argv]
            fsrv = servers.enter_context(Server(floor_argv, env, BENCH, "/health"))
            fsrv.pg_db = pg_db
        refresh_runs: list[Run] = []
        floor_runs: list[Run] = []
        for i in range(rounds):
            # Fresh chains for every run: wrk starts each run from its token file.
            pairs = logins(srv.url + "/auth/login", n, "refresh_token")
            tokens = token_file(workdir, f"authsvc-{db}-{workers}-{i}",
                                [p["refresh_token"] for p in pairs])  # fmt: skip
            refresh_runs.append(on("refresh", "/auth/refresh", "refresh.lua", "refresh", part,
                                   str(tokens), "refresh_token", "refresh_token"))  # fmt: skip
            if fsrv is not None:
                fpairs = logins(srv.url + "/auth/login", n, "refresh_token")
                ftokens = token_file(workdir, f"floor-{workers}-{i}",
                                     [p["refresh_token"] for p in fpairs])  # fmt: skip
                floor_runs.append(drive(fsrv, wrk_cpus, "refresh floor", "/refresh",
                                        "refresh.lua", "refresh", part, str(ftokens),
                                        "refresh_token", "refresh_token"))  # fmt: skip
        refresh = merge("refresh", refresh_runs)
        floor = merge("refresh floor", floor_runs) if floor_runs else None
        me = on("me", "/auth/me", "get.lua", "get", d, pairs[0]["access_token"])
        import httpx

        jwks_bytes = len(httpx.get(srv.url + "/.well-known/jwks.json").content)
        hello_env = {**env, "BENCH_STATIC_BYTES": str(jwks_bytes)}
        hsrv = servers.enter_context(Server(hello_argv, hello_env, BENCH, "/hello"))
        drive(hsrv, wrk_cpus, "hello warm-up", "/hello", "get.lua", "get", 1)
        # JWKS and its baselines alternate (two rounds of half the time each, both servers up),
        # so that the machine's other load falls on all three alike.
        runs: dict[str, list[Run]] = {"jwks": [], "hello": [], "static": []}
        for _ in range(rounds):
            runs["jwks"].append(on("jwks", "/.well-known/jwks.json", "get.lua", "get", part))
            runs["hello"].append(drive(hsrv, wrk_cpus, "hello", "/hello", "get.lua", "get", part))
            runs["static"].append(
                drive(hsrv, wrk_cpus, "static", "/static", "get.lua", "get", part)
            )
        jwks, hello, static = (merge(name, r) for name, r in runs.items())

    peer_login = peer_refresh = None
    if peer_python is not None:
        penv = peer_env(peer_url, workdir)
        peer_argv = [
            "taskset", "-c", server_cpus, str(PEER_VENV / "bin" / "uvicorn"),
            "peer.asgi:application", "--port", "{port}", "--workers", str(workers),
            "--no-access-log", "--log-level", "warning", "--no-proxy-headers",
            "--no-server-header",
        ]  # fmt: skip
        # simplejwt has no health endpoint: its token view answers a GET (405) once it is up.
        with Server(peer_argv, penv, PEER_DIR, "/api/token/", any_status=True) as srv:
            srv.pg_db = pg_db
            on = functools.partial(drive, srv, wrk_cpus)
            peer_login = on("peer login", "/api/token/", "login.lua", "login", login_d,
                            USERNAME, PASSWORD)  # fmt: skip
            ppairs = logins(srv.url + "/api/token/", n, "refresh")
            ptokens = token_file(workdir, f"peer-{db}-{workers}", [p["refresh"] for p in ppairs])
            peer_refresh = on("peer refresh", "/api/token/refresh/", "refresh.lua", "refresh", d,
                              str(ptokens), "refresh", "refresh")  # fmt: skip

    def total_cpu(run: Run | None) -> float | None:
        if run is None or run.server_cpu_ms is None:
            return None
        return run.server_cpu_ms + (run.db_cpu_ms or 0.0)

    def runrow(figure: str, run: Run, **kw: Any) -> Row:
        return Row(
            figure=f"{figure} [{tag}]",
            value=run.rps,
            unit="/s",
            p50_ms=run.p50_ms,
            p99_ms=run.p99_ms,
            cpu_ms=total_cpu(run),
            extra={"run": asdict(run), "db": db, "workers": workers},
            **kw,
        )

    r = login.rps / raw_argon2
    rows.append(runrow("login", login, baseline=raw_argon2, baseline_name="raw argon2id verify",
                       baseline_cpu_ms=argon2_cpu,
                       ratio=r, goal=">= 0.85x", met=r >= 0.85))  # fmt: skip
    refresh_goal = db == "postgresql" and workers == 2
    rows.append(
        runrow(
            "refresh",
            refresh,
            baseline=raw_sign,
            baseline_name=f"raw RS256 sign, {workers} proc",
            baseline_cpu_ms=sign_cpu,
            ratio=refresh.rps / raw_sign,
            goal=">= 1000/s" if refresh_goal else "",
            met=(refresh.rps >= 1000) if refresh_goal else None,
            note=f"{refresh.broken_chains} failed: {refresh.first_error[:60]}"
            if refresh.broken_chains
            else "",
        )
    )
    if floor is not None:
        rows.append(runrow("refresh vs floor", refresh, baseline=floor.rps,
                           baseline_name="bare FastAPI refresh",
                           baseline_cpu_ms=total_cpu(floor),
                           ratio=refresh.rps / floor.rps))  # fmt: skip
        rows[-1].extra["floor"] = asdict(floor)
    r = jwks.rps / hello.rps
    rows.append(runrow("jwks", jwks, baseline=hello.rps, baseline_name="FastAPI hello world",
                       baseline_cpu_ms=total_cpu(hello),
                       ratio=r, goal=">= 0.9x", met=r >= 0.9))  # fmt: skip
    rows[-1].extra["hello"] = asdict(hello)
    rows.append(runrow("jwks vs same bytes", jwks, baseline=static.rps,
                       baseline_name=f"FastAPI constant {jwks_bytes} B",
                       baseline_cpu_ms=total_cpu(static), ratio=jwks.rps / static.rps))  # fmt: skip
    rows[-1].extra["static"] = asdict(static)
    rows.append(runrow("/auth/me", me, baseline=raw_verify,
                       baseline_name=f"raw RS256 verify, {workers} proc",
                       baseline_cpu_ms=verify_cpu,
                       ratio=me.rps / raw_verify))  # fmt: skip
    if peer_login is not None and peer_refresh is not None:
        rows.append(runrow("login vs peer", login, baseline=peer_login.rps,
                           baseline_name="simplejwt login",
                           baseline_cpu_ms=total_cpu(peer_login),
                           ratio=login.rps / peer_login.rps))  # fmt: skip
        rows[-1].extra["peer"] = asdict(peer_login)
        rows.append(runrow("refresh vs peer", refresh, baseline=peer_refresh.rps,
                           baseline_name="simplejwt refresh+blacklist",
                           baseline_cpu_ms=total_cpu(peer_refresh),
                           ratio=refresh.rps / peer_refresh.rps))  # fmt: skip
        rows[-1].extra["peer"] = asdict(peer_refresh)
        if peer_refresh.broken_chains:
            rows[
                -1
            ].note = f"peer: {peer_refresh.broken_chains} failed: {peer_refresh.first_error[:60]}"
    return rows


# -- the verifier library's own benchmark (issue 5), if present ---------------------------------


def run_verifier(quick: bool, server_cpus: str) -> list[str] | None:
    script = BENCH / "bench_verifier.py"
    if not script.exists():
        log("bench/bench_verifier.py not present: verifier figures skipped")
        return None
    argv = ["taskset", "-c", server_cpus, sys.executable, str(script)]
    if quick:
        argv.append("--quick")
    log("== verifier (bench/bench_verifier.py)")
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    lines = [x for x in proc.stdout.splitlines() if x.strip()]
    if proc.returncode != 0:
        lines.append(f"(bench_verifier.py exited {proc.returncode}: {proc.stderr.strip()[-500:]})")
    for line in lines:
        print("  " + line)
    return lines


# -- report --------------------------------------------------------------------------------------


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:,.0f}{unit}" if value >= 100 else f"{value:,.1f}{unit}"


def fmt2(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def cpu_ratio(r: Row) -> str:
    """The baseline's CPU per operation over authsvc's: the ratio the machine's load barely
    moves (1.0x: authsvc spends no CPU beyond the baseline's)."""
    if not r.cpu_ms or not r.baseline_cpu_ms:
        return ""
    return f" ({r.baseline_cpu_ms / r.cpu_ms:.2f}x)"


def table(rows: list[Row]) -> str:
    head = ["figure", "authsvc", "p50 ms", "p99 ms", "baseline", "ratio", "goal", "met",
            "CPU ms/op authsvc : baseline (ratio)"]  # fmt: skip
    body = [
        [
            r.figure,
            fmt(r.value, r.unit),
            fmt(r.p50_ms),
            fmt(r.p99_ms),
            f"{fmt(r.baseline, '/s')} {r.baseline_name}".strip(),
            fmt(r.ratio, "x"),
            r.goal or "-",
            {True: "yes", False: "NO", None: "-"}[r.met] + (f" ({r.note})" if r.note else ""),
            f"{fmt2(r.cpu_ms)} : {fmt2(r.baseline_cpu_ms)}" + cpu_ratio(r),
        ]
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    out = [line, sep]
    for b in body:
        out.append(
            "| " + " | ".join(str(x).ljust(w) for x, w in zip(b, widths, strict=True)) + " |"
        )
    return "\n".join(out)


def chart(rows: list[Row], path: Path, title: str) -> bool:
    try:
        import matplotlib
    except ImportError:  # the bench extra is not installed: the table and JSON still are
        log("matplotlib not installed (pip install -e '.[bench]'): no chart")
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rated = [r for r in rows if r.ratio is not None]
    fig, (ax1, ax2) = plt.subplots(
        1, 2, figsize=(15, max(4, 0.38 * len(rated) + 1.5)), gridspec_kw={"width_ratios": [3, 2]}
    )
    labels = [f"{r.figure}\nvs {r.baseline_name}" for r in rated]
    ratios = [r.ratio or 0 for r in rated]
    colors = [{True: "tab:green", False: "tab:red", None: "tab:blue"}[r.met] for r in rated]
    y = range(len(rated))
    ax1.barh(list(y), ratios, color=colors)
    ax1.set_yticks(list(y), labels, fontsize=7)
    ax1.invert_yaxis()
    ax1.set_xscale("log")
    ax1.axvline(1.0, color="grey", lw=0.8)
    for i, r in enumerate(rated):
        ax1.text(ratios[i], i, f" {ratios[i]:.2f}x", va="center", fontsize=7)
        if r.goal.startswith(">=") and r.goal.endswith("x"):
            ax1.plot([float(r.goal[2:-1])], [i], marker="|", color="black", ms=14)
    ax1.set_title("authsvc / same-run baseline (green: goal met, red: not, |: goal)", fontsize=9)

    thr = [r for r in rows if r.figure.startswith(("refresh [", "login [", "jwks [", "/auth/me ["))]
    ax2.barh(range(len(thr)), [r.value or 0 for r in thr], color="tab:blue")
    ax2.set_yticks(range(len(thr)), [r.figure for r in thr], fontsize=7)
    ax2.invert_yaxis()
    ax2.set_xscale("log")
    for i, r in enumerate(thr):
        ax2.text(r.value or 0, i, f" {fmt(r.value, '/s')}", va="center", fontsize=7)
        if r.goal == ">= 1000/s":
            ax2.plot([1000], [i], marker="|", color="black", ms=14)
    ax2.set_title("authsvc throughput, requests/s", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        model = next((x.split(":", 1)[1].strip() for x in fh if x.startswith("model name")), "")
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 worker, 1 s runs, no peer"
    )
    parser.add_argument("--db", choices=["sqlite", "postgresql"], action="append")
    parser.add_argument("--workers", type=int, action="append")
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default 5, quick 1)")
    parser.add_argument("--no-peer", action="store_true", help="skip the simplejwt peer")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--set", action="append", default=[], metavar="AUTHSVC_X=VALUE",
                        help="an extra authsvc setting for the servers (experiments)")
    opts = parser.parse_args()
    for item in opts.set:
        name, _, value = item.partition("=")
        if not name.startswith("AUTHSVC_"):
            parser.error(f"--set {item}: not an AUTHSVC_ setting")
        EXTRA_SETTINGS[name] = value
    opts.duration = opts.duration or (1.0 if opts.quick else 4.0)
    if opts.quick:
        WRK.update(WRK_QUICK)
    dbs = opts.db or ["sqlite", "postgresql"]
    workers = opts.workers or ([1] if opts.quick else [1, 2])
    with_peer = not (opts.quick or opts.no_peer)
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2

    started = time.monotonic()
    server_cpus, wrk_cpus, layout = cpu_layout()
    info = machine()
    log(f"machine: {info['cpu']}, {info['cores']} cores, load {info['loadavg_start']}")
    log(f"cores: {layout}")
    log(f"argon2id t={ARGON2[0]} m={ARGON2[1]} KiB p={ARGON2[2]}; wrk {WRK}")
    if EXTRA_SETTINGS:
        log(f"extra settings: {EXTRA_SETTINGS}")
    peer_python = ensure_peer_venv() if with_peer else None

    from cryptography.fernet import Fernet

    rows: list[Row] = []
    opts.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="authsvc-bench-") as tmp:
        workdir = Path(tmp)
        if with_peer:
            write_peer_keys(workdir)
        for db in dbs:
            with contextlib.ExitStack() as stack:
                if db == "sqlite":
                    db_url: str | None = f"sqlite:///{workdir / 'authsvc.db'}"
                    # SQLite: the same engine and pragmas, in a file of its own
                    peer_url = f"sqlite:///{workdir / 'peer.db'}"
                else:
                    db_url = stack.enter_context(postgres_database())
                    peer_url = db_url or ""  # PostgreSQL: the same database
                if db_url is None:
                    continue
                kek = Fernet.generate_key().decode()
                env = authsvc_env(db_url, workdir, kek)
                cli = str(BIN / "authsvc")
                subprocess.run([cli, "migrate"], env=env, check=True, capture_output=True)
                subprocess.run([cli, "users", "create", USERNAME, "--password-stdin"], env=env,
                               input=PASSWORD + "\n", text=True, check=True,
                               capture_output=True)  # fmt: skip
                if peer_python is not None:
                    subprocess.run([str(peer_python), "-m", "peer.seed", USERNAME, PASSWORD],
                                   env=peer_env(peer_url, workdir), cwd=PEER_DIR, check=True,
                                   capture_output=True)  # fmt: skip
                for w in workers:
                    rows += bench_block(
                        db,
                        db_url,
                        peer_url,
                        w,
                        opts,
                        workdir,
                        kek,
                        (server_cpus, wrk_cpus),
                        peer_python,
                    )
    verifier = run_verifier(opts.quick, server_cpus)
    elapsed = time.monotonic() - started
    info["loadavg_end"] = os.getloadavg()
    wrk_max = max(
        (
            r.extra[k]["wrk_cpu"]
            for r in rows
            for k in ("run", "hello", "static", "peer", "floor")
            if k in r.extra
        ),
        default=0.0,
    )

    title = (
        f"authsvc bench {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, "
        f"{info['cpu']} x{info['cores']}, load {info['loadavg_start'][0]:.1f}"
        + (" (quick)" if opts.quick else "")
    )
    print()
    print(title)
    print(f"cores: {layout}; wrk used at most {wrk_max:.0%} of one core")
    print(f"argon2id t={ARGON2[0]} m={ARGON2[1]} KiB p={ARGON2[2]}; wrk threads/connections {WRK}")
    print(table(rows))
    if verifier:
        print("verifier (bench/bench_verifier.py):")
        for line in verifier:
            print("  " + line)
    print(f"total {elapsed:.0f} s")
    result = {
        "title": title,
        "quick": opts.quick,
        "machine": info,
        "cores": layout,
        "server_cpus": server_cpus,
        "wrk_cpus": wrk_cpus,
        "wrk_max_cpu": wrk_max,
        "argon2": {"time_cost": ARGON2[0], "memory_kib": ARGON2[1], "parallelism": ARGON2[2]},
        "wrk": WRK,
        "duration_s": opts.duration,
        "elapsed_s": elapsed,
        "rows": [asdict(r) for r in rows],
        "verifier": verifier,
    }
    (opts.out / "results.json").write_text(json.dumps(result, indent=2))
    (opts.out / "results.md").write_text(table(rows) + "\n")
    charted = chart(rows, opts.out / "results.png", title)
    print(f"wrote {opts.out / 'results.json'}, results.md" + (", results.png" if charted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
