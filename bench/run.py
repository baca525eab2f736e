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
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runner.baselines import run_verifier
from runner.block import bench_block
from runner.common import ARGON2, BIN, PASSWORD, PEER_DIR, RESULTS, USERNAME, WRK, WRK_QUICK, log
from runner.report import Row, machine, publish
from runner.servers import (
    EXTRA_SETTINGS,
    authsvc_env,
    cpu_layout,
    ensure_peer_venv,
    peer_env,
    postgres_database,
    write_peer_keys,
)


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
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="AUTHSVC_X=VALUE",
        help="an extra authsvc setting for the servers (experiments)",
    )
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
    publish(
        rows,
        verifier,
        info,
        (server_cpus, wrk_cpus, layout),
        WRK,
        ARGON2,
        opts.quick,
        opts.duration,
        elapsed,
        opts.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
