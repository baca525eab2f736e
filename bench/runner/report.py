"""The report: rows of figures against their baselines, as a table, JSON and a chart."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runner.common import log


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


def publish(
    rows: list[Row],
    verifier: list[str] | None,
    info: dict[str, Any],
    cpus: tuple[str, str, str],
    wrk_shape: dict[str, dict[str, int]],
    argon2: tuple[int, int, int],
    quick: bool,
    duration: float,
    elapsed: float,
    out: Path,
) -> None:
    """Print the table and write results.json, results.md and (with matplotlib) results.png."""
    server_cpus, wrk_cpus, layout = cpus
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
        + (" (quick)" if quick else "")
    )
    print()
    print(title)
    print(f"cores: {layout}; wrk used at most {wrk_max:.0%} of one core")
    print(
        f"argon2id t={argon2[0]} m={argon2[1]} KiB p={argon2[2]}; "
        f"wrk threads/connections {wrk_shape}"
    )
    print(table(rows))
    if verifier:
        print("verifier (bench/bench_verifier.py):")
        for line in verifier:
            print("  " + line)
    print(f"total {elapsed:.0f} s")
    result = {
        "title": title,
        "quick": quick,
        "machine": info,
        "cores": layout,
        "server_cpus": server_cpus,
        "wrk_cpus": wrk_cpus,
        "wrk_max_cpu": wrk_max,
        "argon2": {"time_cost": argon2[0], "memory_kib": argon2[1], "parallelism": argon2[2]},
        "wrk": wrk_shape,
        "duration_s": duration,
        "elapsed_s": elapsed,
        "rows": [asdict(r) for r in rows],
        "verifier": verifier,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "results.md").write_text(table(rows) + "\n")
    charted = chart(rows, out / "results.png", title)
    print(f"wrote {out / 'results.json'}, results.md" + (", results.png" if charted else ""))
