#!/usr/bin/env python3
"""authsvc at scale: every hot endpoint on a database of millions of rows, as a ratio to the
same endpoint on an empty database, measured in the same run.

    .venv/bin/python bench/scale.py               # full size: 1 M users, 10 M refresh tokens...
    .venv/bin/python bench/scale.py --rows 0.01   # 1/100 of that (a few minutes)

It makes two PostgreSQL databases through `authsvc migrate`, each with the bench user; seeds one
(bench/runner/seed.py: 1 M users, 10 M refresh tokens, 1 M sessions, 1 M denylisted jtis, 1 M
revocation-feed events, 1 M audit events, times --rows); starts `authsvc serve` on each (both
up, pinned like bench/run.py) and drives them alternately with wrk: refresh, login, /auth/me,
the revocation feed (first page, and a page from an old cursor), JWKS. Then `authsvc prune`:
its rate (rows deleted per second) at scale against the same prune of a small seeding of the
empty database, and the refresh p99 at scale while prune runs against the p99 without it.
Prints a table and writes scale.json and scale.md to --out (default bench/results).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runner.common import BENCH, BIN, PASSWORD, RESULTS, ROOT, USERNAME, WRK, WRK_QUICK, log
from runner.load import Run, drive, logins, merge, token_file
from runner.seed import Counts, seed, table_sizes
from runner.servers import EXTRA_SETTINGS, Server, authsvc_env, cpu_layout, postgres_database

# The goals: each hot endpoint at >= 0.9x its empty-database rate; the p99 under load while
# prune runs at most 2x the p99 without it.
RATE_GOAL = 0.9
PRUNE_P99_GOAL = 2.0
# The prune baseline: the same seeding, this fraction of the scaled sizes, on the empty database.
# (At least 1/1000 of the full sizes: 10 k refresh tokens, so that the fixed cost of each
# prune step does not make the baseline.)
PRUNE_BASELINE_SHARE = 0.01
PRUNE_BASELINE_MIN = 0.001


@dataclass
class Figure:
    figure: str
    empty: float | None
    scale: float | None
    unit: str
    ratio: float | None
    goal: str = ""
    met: bool | None = None
    empty_p99_ms: float | None = None
    scale_p99_ms: float | None = None
    note: str = ""
    # CPU per request, authsvc's processes plus its PostgreSQL backends: it moves far less with
    # the machine's other load than requests per second do.
    empty_cpu_ms: float | None = None
    scale_cpu_ms: float | None = None


def cpu_ms(run: Run) -> float | None:
    if run.server_cpu_ms is None:
        return None
    return float(run.server_cpu_ms + (run.db_cpu_ms or 0.0))


def psql_value(url: str, query: str) -> str:
    out = subprocess.run(
        ["psql", url, "-Atc", query], capture_output=True, text=True, check=True
    ).stdout
    return out.strip()


@dataclass
class Target:
    """One database and the authsvc serving it."""

    name: str
    url: str
    env: dict[str, str]
    server: Server | None = None


def prepare(target: Target) -> None:
    """Migrate the database and create the bench user, through the CLI."""
    cli = str(BIN / "authsvc")
    subprocess.run([cli, "migrate"], env=target.env, check=True, capture_output=True)
    subprocess.run([cli, "users", "create", USERNAME, "--password-stdin"], env=target.env,
                   input=PASSWORD + "\n", text=True, check=True, capture_output=True)  # fmt: skip


def wait_for_backend(url: str, pruner: subprocess.Popen[str]) -> None:
    """Until the prune's first DELETE shows in pg_stat_activity (or it has already ended)."""
    db = url.rsplit("/", 1)[1]
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '" + db + "' "
        "AND query LIKE 'DELETE%'"
    )
    deadline = time.monotonic() + 120
    while pruner.poll() is None and time.monotonic() < deadline:
        if psql_value(url, query) != "0":
            return
        time.sleep(0.05)


def prune_argv() -> list[str]:
    return [sys.executable, str(BENCH / "prune_timed.py")]


def prune_result(stdout: str) -> tuple[dict[str, int], float]:
    """(rows deleted per table, seconds of the prune itself) from prune_timed.py."""
    data = json.loads(stdout.strip().splitlines()[-1])
    return dict(data["rows"]), float(data["seconds"])


def per_table(rows: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in rows.items())


def prune(target: Target) -> tuple[dict[str, int], float]:
    """`authsvc prune` to completion, timed from inside (bench/prune_timed.py)."""
    proc = subprocess.run(prune_argv(), env=target.env, capture_output=True, text=True, check=True)
    return prune_result(proc.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--rows", type=float, default=1.0, help="scale factor on the sizes (default 1: full)"
    )
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per figure")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="wrk's quick shape (few connections)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="AUTHSVC_X=VALUE",
        help="an extra authsvc setting for both servers and the CLI (experiments, smoke runs)",
    )
    opts = parser.parse_args()
    for item in opts.set:
        name, _, value = item.partition("=")
        if not name.startswith("AUTHSVC_"):
            parser.error(f"--set {item}: not an AUTHSVC_ setting")
        EXTRA_SETTINGS[name] = value
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    # SIGTERM unwinds like Ctrl-C: the servers (each in a session of its own) are stopped and
    # the databases dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if opts.quick:
        WRK.update(WRK_QUICK)
    started = time.monotonic()
    server_cpus, wrk_cpus, layout = cpu_layout()
    counts = Counts.scaled(opts.rows)
    log(f"cores: {layout}")
    log(f"sizes (--rows {opts.rows:g}): {asdict(counts)}")
    opts.out.mkdir(parents=True, exist_ok=True)
    from cryptography.fernet import Fernet

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="authsvc-scale-")))
        targets: list[Target] = []
        for name in ("empty", "scale"):
            url = stack.enter_context(postgres_database(f"_{name}"))
            if url is None:
                print("PostgreSQL is not reachable", file=sys.stderr)
                return 2
            workdir = tmp / name
            workdir.mkdir()
            env = authsvc_env(url, workdir, Fernet.generate_key().decode())
            targets.append(Target(name, url, env))
        # Both databases made ready, and later both servers started, side by side.
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(prepare, targets))
        empty, scale = targets
        # Seeded users get the bench user's own hash (authsvc's format and parameters), so
        # that the login figure at scale can be any of them.
        password_hash = psql_value(
            scale.url, f"SELECT password_hash FROM users WHERE username = '{USERNAME}'"
        )
        now = datetime.now(UTC)
        log(f"seeding {scale.url.rsplit('/', 1)[1]}")
        t0 = time.monotonic()
        seed_times = seed(scale.url, "s", counts, now, password_hash)
        seed_seconds = time.monotonic() - t0
        for step, seconds in seed_times.items():
            log(f"  {step}: {seconds:.1f} s")
        sizes = table_sizes(scale.url)
        for table, (rows, size) in sizes.items():
            log(f"  {table}: {rows:,} rows, {size / 2**20:,.0f} MiB")
        # The login at scale: a seeded user from the middle of the table.
        scale_user = f"suser{counts.users // 2}"
        old_cursor = "c" + psql_value(
            scale.url, "SELECT (min(id) + max(id)) / 2 FROM revocation_events"
        )

        serve = ["taskset", "-c", server_cpus, str(BIN / "authsvc"), "serve", "--port",
                 "{port}", "--workers", str(opts.workers)]  # fmt: skip
        for t in targets:
            t.server = Server(serve, t.env, ROOT, "/readyz")
            t.server.pg_db = t.url.rsplit("/", 1)[1]
            stack.callback(t.server.__exit__, None, None, None)
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda t: t.server and t.server.__enter__(), targets))
        for t in targets:
            assert t.server is not None
            drive(t.server, wrk_cpus, f"warm-up {t.name}", "/.well-known/jwks.json", "get.lua",
                  "get", 1)  # fmt: skip

        d = opts.duration
        n = WRK["refresh"]["connections"]
        runs: dict[str, dict[str, list[Run]]] = {}

        def refresh(server: Server, name: str, tokens: Path, duration: float) -> Run:
            return drive(server, wrk_cpus, name, "/auth/refresh", "refresh.lua", "refresh",
                         duration, str(tokens), "refresh_token", "refresh_token")  # fmt: skip

        def get(server: Server, name: str, path: str, duration: float, *args: str) -> Run:
            return drive(server, wrk_cpus, name, path, "get.lua", "get", duration, *args)

        access: dict[str, str] = {}

        def record(figure: str, t: Target, run: Run) -> None:
            runs.setdefault(figure, {}).setdefault(t.name, []).append(run)

        for i in range(opts.rounds):
            # Alternate which database goes first, so that drift in the machine's other load
            # falls on both alike.
            order = targets if i % 2 == 0 else targets[::-1]
            for t in order:
                assert t.server is not None
                pairs = logins(t.server.url + "/auth/login", n, "refresh_token")
                access[t.name] = pairs[0]["access_token"]
                tokens = token_file(tmp, f"{t.name}-{i}", [p["refresh_token"] for p in pairs])
                record("refresh", t, refresh(t.server, f"refresh {t.name}", tokens, d))
            for t in order:
                assert t.server is not None
                user = scale_user if t is scale else USERNAME
                record("login", t, drive(t.server, wrk_cpus, f"login {t.name}", "/auth/login",
                                         "login.lua", "login", 2 * d, user,
                                         PASSWORD))  # fmt: skip
            gets: tuple[tuple[str, str, list[dict[str, str]]], ...] = (
                ("/auth/me", "/auth/me", [access]),
                ("feed, first page", "/auth/revocations", []),
                ("feed, old cursor", f"/auth/revocations?since={old_cursor}", []),
                ("jwks", "/.well-known/jwks.json", []),
            )
            for figure, path, bearer in gets:
                for t in order:
                    assert t.server is not None
                    args = [token[t.name] for token in bearer]
                    record(figure, t, get(t.server, f"{figure} {t.name}", path, d, *args))

        figures: list[Figure] = []
        for figure, by_target in runs.items():
            e, s = merge(figure, by_target["empty"]), merge(figure, by_target["scale"])
            ratio = s.rps / e.rps if e.rps else None
            bad = sum(r.errors + r.broken_chains for r in (e, s))
            figures.append(
                Figure(
                    figure, e.rps, s.rps, "/s", ratio, f">= {RATE_GOAL}x",
                    ratio is not None and ratio >= RATE_GOAL, e.p99_ms, s.p99_ms,
                    f"{bad} failed: {(e.first_error or s.first_error)[:60]}" if bad else "",
                    cpu_ms(e), cpu_ms(s),
                )
            )  # fmt: skip

        # Prune. The baseline: the same seeding at a small share of the sizes, on the empty
        # database, pruned with nothing else running.
        small = Counts.scaled(max(opts.rows * PRUNE_BASELINE_SHARE, PRUNE_BASELINE_MIN))
        seed(empty.url, "p", small, datetime.now(UTC), password_hash, rebuild_indexes=False)
        base_pruned, base_seconds = prune(empty)
        base_rows = sum(base_pruned.values())
        log(f"prune, small seeding: {per_table(base_pruned)} in {base_seconds:.1f} s")
        # At scale: the refresh p99 without prune, then with prune running (started first, so
        # that the whole run overlaps it), then prune is left to finish.
        assert scale.server is not None
        pairs = logins(scale.server.url + "/auth/login", n, "refresh_token")
        calm_tokens = token_file(tmp, "calm", [p["refresh_token"] for p in pairs])
        calm = refresh(scale.server, "refresh, no prune", calm_tokens, 2 * d)
        pairs = logins(scale.server.url + "/auth/login", n, "refresh_token")
        busy_tokens = token_file(tmp, "busy", [p["refresh_token"] for p in pairs])
        pruner = subprocess.Popen(
            prune_argv(), env=scale.env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            # Past its start-up: it prints nothing before it is done, so wait for its
            # PostgreSQL connection to show.
            wait_for_backend(scale.url, pruner)
            busy = refresh(scale.server, "refresh, prune running", busy_tokens, 2 * d)
            overlapped = pruner.poll() is None
            out, err = pruner.communicate(timeout=3600)
        finally:
            if pruner.poll() is None:
                os.killpg(pruner.pid, 15)
                pruner.wait()
        if pruner.returncode != 0:
            raise RuntimeError(f"authsvc prune failed: {err[-2000:]}")
        pruned, prune_seconds = prune_result(out)
        scale_rows = sum(pruned.values())
        log(f"prune at scale: {per_table(pruned)} in {prune_seconds:.1f} s")
        base_rate = base_rows / base_seconds
        scale_rate = scale_rows / prune_seconds
        figures.append(
            Figure(
                "prune (rows/s)", base_rate, scale_rate, " rows/s", scale_rate / base_rate,
                note=f"{base_rows:,} rows vs {scale_rows:,} rows; the first {2 * d:g} s at scale "
                "under the refresh load",
            )
        )  # fmt: skip
        p99_ratio = busy.p99_ms / calm.p99_ms
        figures.append(
            Figure(
                "refresh p99 while prune runs (ms)", calm.p99_ms, busy.p99_ms, " ms", p99_ratio,
                f"<= {PRUNE_P99_GOAL}x", p99_ratio <= PRUNE_P99_GOAL, calm.p99_ms, busy.p99_ms,
                note=(f"rates {calm.rps:,.0f}/s vs {busy.rps:,.0f}/s"
                      + ("" if overlapped else "; prune ended before the run did")),
            )
        )  # fmt: skip
        after = table_sizes(scale.url)

    elapsed = time.monotonic() - started
    publish(figures, opts, counts, seed_seconds, seed_times, sizes, after, pruned, layout, elapsed)
    return 0


def publish(
    figures: list[Figure],
    opts: argparse.Namespace,
    counts: Counts,
    seed_seconds: float,
    seed_times: dict[str, float],
    sizes: dict[str, tuple[int, int]],
    after: dict[str, tuple[int, int]],
    pruned: dict[str, int],
    layout: str,
    elapsed: float,
) -> None:
    def fmt(v: float | None, unit: str = "") -> str:
        if v is None:
            return "-"
        return f"{v:,.0f}{unit}" if v >= 100 else f"{v:,.1f}{unit}"

    command = "bench/scale.py " + " ".join(sys.argv[1:])
    lines = [
        f"`{command.strip()}`: {opts.workers} worker(s), {opts.duration:g} s wrk runs, "
        f"{opts.rounds} alternating round(s); seeded in {seed_seconds:.0f} s "
        f"(vacuum analyze {seed_times.get('vacuum analyze', 0):.0f} s); {elapsed / 60:.1f} min "
        f"in all; {layout}.",
        "",
        "| figure | empty database | at scale | ratio | goal | met | p99 empty / scale "
        "| CPU ms/request empty / scale |",
        "|---|---:|---:|---:|---|---|---|---|",
    ]
    for f in figures:
        met = "-" if f.met is None else ("yes" if f.met else "**no**")
        p99 = (
            f"{fmt(f.empty_p99_ms)} / {fmt(f.scale_p99_ms)} ms"
            if f.empty_p99_ms is not None and f.scale_p99_ms is not None
            else ""
        )
        ratio = "-" if f.ratio is None else f"{f.ratio:.2f}x"
        note = f" ({f.note})" if f.note else ""
        cpu = (
            f"{f.empty_cpu_ms:.2f} / {f.scale_cpu_ms:.2f}"
            if f.empty_cpu_ms is not None and f.scale_cpu_ms is not None
            else ""
        )
        lines.append(
            f"| {f.figure}{note} | {fmt(f.empty, f.unit)} | {fmt(f.scale, f.unit)} | {ratio} "
            f"| {f.goal} | {met} | {p99} | {cpu} |"
        )
    lines += ["", "| table | rows seeded | size | rows after prune | size after prune |",
              "|---|---:|---:|---:|---:|"]  # fmt: skip
    for table, (rows, size) in sizes.items():
        rows_after, size_after = after.get(table, (0, 0))
        lines.append(
            f"| {table} | {rows:,} | {size / 2**20:,.0f} MiB | {rows_after:,} "
            f"| {size_after / 2**20:,.0f} MiB |"
        )
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    (opts.out / "scale.md").write_text(text)
    result: dict[str, Any] = {
        "command": command.strip(),
        "counts": asdict(counts),
        "seed_seconds": seed_seconds,
        "seed_steps": seed_times,
        "tables": {t: {"rows": r, "bytes": b} for t, (r, b) in sizes.items()},
        # After prune and the refreshes made while it ran: `pruned` is what prune deleted.
        "tables_after_prune": {t: {"rows": r, "bytes": b} for t, (r, b) in after.items()},
        "pruned": pruned,
        "figures": [asdict(f) for f in figures],
        "elapsed_seconds": elapsed,
    }
    (opts.out / "scale.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
