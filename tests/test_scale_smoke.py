"""The scale benchmark still works end to end (bench/scale.py, tiny: 1/1000 of the sizes,
one-second runs, cheap password hashing).

A smoke test, not a benchmark: it checks that the seeding is consistent with the migrated
schema (the inserts would fail otherwise) and that every figure was measured on both databases
without a failed request. No timing is asserted. Skipped where Debian's wrk is not installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgresql,
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed"),
    pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset is not installed"),
]


def test_tiny_scale_benchmark_measures_every_figure_without_errors(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "scale.py"), "--rows", "0.001", "--duration", "1",
         "--rounds", "1", "--quick", "--out", str(tmp_path),
         "--set", "AUTHSVC_ARGON2_TIME_COST=1", "--set", "AUTHSVC_ARGON2_MEMORY_COST=1024",
         "--set", "AUTHSVC_ARGON2_PARALLELISM=1", "--set", "AUTHSVC_DB_POOL_SIZE=4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        # SIGTERM: the benchmark stops its servers and drops its databases on the way out.
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    result = json.loads((tmp_path / "scale.json").read_text())
    figures = {f["figure"]: f for f in result["figures"]}
    assert set(figures) == {
        "refresh", "login", "/auth/me", "feed, first page", "feed, old cursor", "jwks",
        "prune (rows/s)", "refresh p99 while prune runs (ms)",
    }  # fmt: skip
    for figure in figures.values():
        assert figure["empty"] and figure["scale"], figure
        assert figure["ratio"] is not None, figure
        assert "failed" not in figure["note"], figure
    tables = result["tables"]
    assert tables["refresh_tokens"]["rows"] >= 10_000
    # What prune deleted; the table's count after also holds the refreshes made meanwhile.
    assert result["pruned"]["refresh_tokens"] > 0, result["pruned"]
    assert "| figure" in (tmp_path / "scale.md").read_text()
