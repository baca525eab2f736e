"""What every part of the benchmark shares: paths, the workload's fixed shape, logging."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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


WRK_QUICK = {
    **WRK,
    "login": {"threads": 2, "connections": 2},
    "refresh": {"threads": 4, "connections": 4},
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
