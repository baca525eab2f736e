"""One block of the benchmark: a database and a worker count, every figure with its baseline."""

from __future__ import annotations

import argparse
import contextlib
import functools
from dataclasses import asdict
from pathlib import Path
from typing import Any

from runner.baselines import primitive
from runner.common import BENCH, BIN, PASSWORD, PEER_DIR, PEER_VENV, ROOT, USERNAME, WRK, log
from runner.load import Run, drive, logins, merge, token_file
from runner.report import Row
from runner.servers import Server, authsvc_env, peer_env


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
