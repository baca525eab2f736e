"""The benchmark runner still works end to end (bench/run.py --quick, on SQLite and on
PostgreSQL, where the refresh floor of bench/floor_app.py runs too).

A smoke test, not a benchmark: it checks that every figure was measured, with no failed
request and no broken refresh chain. No timing is asserted. Skipped where Debian's wrk is not
installed (`.ci/run` installs it; `make bench` does too).
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
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed"),
    pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset is not installed"),
]


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def test_quick_benchmark_measures_every_figure_without_errors(tmp_path: Path, db: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--db", db,
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "results.json").read_text())
    figures = {row["figure"].split(" [")[0]: row for row in result["rows"]}
    expected = {"login", "refresh", "jwks", "/auth/me"}
    assert set(figures) >= (expected | {"refresh vs floor"} if db == "postgresql" else expected)
    for row in result["rows"]:
        for key in ("run", "floor"):
            run = row["extra"].get(key)
            if run is not None:
                assert run["requests"] > 0, row
                assert run["errors"] == 0, row
                assert run["broken_chains"] == 0, row
        assert row["baseline"] and row["baseline"] > 0, row
    assert "| figure" in (tmp_path / "results.md").read_text()
