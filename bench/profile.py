#!/usr/bin/env python3
"""Profile one authsvc endpoint under wrk load with py-spy (sampling the running worker).

    .venv/bin/python bench/profile.py refresh [--db sqlite|postgresql] [--seconds 10]
    .venv/bin/python bench/profile.py login|me|jwks ...

Starts `authsvc serve --workers 1` like bench/run.py does, drives the endpoint with the same wrk
script, records the worker with `py-spy record --format raw` (collapsed stacks, written to
bench/results/profile-<endpoint>-<db>.txt, plus a flame graph .svg) and prints where the time
goes: the heaviest functions by inclusive and by self samples, and the share of a few buckets
(crypto, database driver, SQLAlchemy, FastAPI/pydantic, uvicorn, idle).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import subprocess
import sys
import tempfile
from pathlib import Path

from runner import common, load, servers

BUCKETS = [
    # Matched in this order against the whole stack; the leaf decides the first two.
    ("event loop itself (uvloop C code: I/O, callbacks, idle)", ("Runner.run (asyncio",)),
    ("thread pool / driver threads, idle or waiting", ("Condition.wait", "_worker (concurrent")),
    ("RSA sign/verify (cryptography)", ("sign (jwt/algorithms", "verify (jwt/algorithms")),
    ("argon2", ("argon2",)),
    ("asyncpg / aiosqlite driver", ("asyncpg", "aiosqlite", "sqlite3")),
    ("SQLAlchemy", ("sqlalchemy",)),
    ("pydantic", ("pydantic",)),
    ("FastAPI / Starlette (the rest of request handling)", ("fastapi", "starlette")),
    ("uvicorn / httptools", ("uvicorn", "httptools")),
]


def summarise(raw: Path, top: int = 25) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    buckets: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        for f in set(frames):
            inclusive[f] += n
        own[frames[-1]] += n
        whole = ";".join(frames)
        for i, (name, needles) in enumerate(BUCKETS):
            target = frames[-1] if i < 2 else whole
            if any(needle in target for needle in needles):
                buckets[name] += n
                break
        else:
            buckets["other"] += n
    out = [f"{total} samples"]
    out.append("buckets (first match from the top of the list, by whole stack):")
    for name, n in buckets.most_common():
        out.append(f"  {n / total:6.1%}  {name}")
    out.append("inclusive:")
    for f, n in inclusive.most_common(top):
        out.append(f"  {n / total:6.1%}  {f}")
    out.append("self:")
    for f, n in own.most_common(top):
        out.append(f"  {n / total:6.1%}  {f}")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint", choices=["refresh", "login", "me", "jwks"])
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--seconds", type=int, default=10)
    opts = parser.parse_args()
    server_cpus, wrk_cpus, layout = servers.cpu_layout()
    from cryptography.fernet import Fernet

    common.RESULTS.mkdir(parents=True, exist_ok=True)
    stem = common.RESULTS / f"profile-{opts.endpoint}-{opts.db}"
    with tempfile.TemporaryDirectory(prefix="authsvc-prof-") as tmp, contextlib.ExitStack() as st:
        workdir = Path(tmp)
        if opts.db == "sqlite":
            db_url: str | None = f"sqlite:///{workdir / 'authsvc.db'}"
        else:
            db_url = st.enter_context(servers.postgres_database())
        assert db_url is not None
        env = servers.authsvc_env(db_url, workdir, Fernet.generate_key().decode())
        cli = str(common.BIN / "authsvc")
        subprocess.run([cli, "migrate"], env=env, check=True, capture_output=True)
        subprocess.run([cli, "users", "create", common.USERNAME, "--password-stdin"], env=env,
                       input=common.PASSWORD + "\n", text=True, check=True,
                       capture_output=True)  # fmt: skip
        serve = ["taskset", "-c", server_cpus, cli, "serve", "--port", "{port}", "--workers", "1"]
        with servers.Server(serve, env, common.ROOT, "/readyz") as srv:
            n = common.WRK["refresh"]["connections"]
            pairs = load.logins(srv.url + "/auth/login", n, "refresh_token")
            tokens = load.token_file(workdir, "prof", [p["refresh_token"] for p in pairs])
            script, kind, path, args = {
                "refresh": ("refresh.lua", "refresh", "/auth/refresh",
                            [str(tokens), "refresh_token", "refresh_token"]),
                "login": ("login.lua", "login", "/auth/login", [common.USERNAME, common.PASSWORD]),
                "me": ("get.lua", "get", "/auth/me", [pairs[0]["access_token"]]),
                "jwks": ("get.lua", "get", "/.well-known/jwks.json", []),
            }[opts.endpoint]  # fmt: skip
            pid = srv.worker_pids()[0]
            spy = subprocess.Popen(
                [str(common.BIN / "py-spy"), "record", "--pid", str(pid), "--duration",
                 str(opts.seconds), "--format", "raw", "--rate", "200", "--nonblocking",
                 "-o", f"{stem}.txt"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            load.drive(srv, wrk_cpus, opts.endpoint, path, script, kind, opts.seconds, *args)
            spy.wait(timeout=60)
    print(f"cores: {layout}")
    print(summarise(Path(f"{stem}.txt")))
    print(f"collapsed stacks: {stem}.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
