"""Same-run baselines measured outside the server: raw primitives (argon2id, RS256 sign and
verify) and the verifier library's own benchmark."""

from __future__ import annotations

import json
import subprocess
import sys

from runner.common import ARGON2, BENCH, ROOT, log


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
