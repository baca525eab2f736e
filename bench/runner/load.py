"""Load generation: wrk runs against a server, with the CPU each side spent, and the logins
that seed them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.common import PASSWORD, PG_ADMIN, USERNAME, WRK, WRK_DIR, log
from runner.servers import Server


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
