"""Metrics across `authsvc serve --workers 2`: every scrape of any worker reports the group."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.live import live_server

pytestmark = pytest.mark.slow

TOKEN = "scrape-token-for-the-worker-tests"
FAILED_LOGINS = 8


def _scrape(base: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    # A fresh connection each time, so the kernel picks the worker that answers.
    with httpx.Client(timeout=30) as client:
        response = client.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def _failures(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> float:
    return samples[("authsvc_logins_total", frozenset({("outcome", "failure")}))]


def _fail_logins(base: str, count: int) -> None:
    for i in range(count):
        with httpx.Client(timeout=30) as client:  # one connection per request
            r = client.post(
                f"{base}/auth/login", json={"username": f"nobody{i}", "password": "x" * 12}
            )
        assert r.status_code == 401, r.text


def _live_pids(metrics_dir: Path) -> set[int]:
    # Each worker writes its live gauges (pool usage) to gauge_livesum_<pid>.db.
    return {int(p.stem.rsplit("_", 1)[1]) for p in metrics_dir.glob("gauge_livesum_*.db")}


def _until(check: Callable[[], bool], what: str, seconds: float = 90) -> None:
    # Generous: a replacement worker imports the whole app, on a machine busy with other tests.
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:.0f} s: {what}")
        time.sleep(0.1)


def test_every_scrape_of_two_workers_counts_every_request(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"left over by an earlier run")
    with live_server(
        tmp_path,
        args=("--workers", "2"),
        environ={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
        AUTHSVC_METRICS_TOKEN=TOKEN,
        AUTHSVC_RATE_LIMIT_ENABLED="false",
    ) as base:
        assert not (metrics_dir / "counter_1.db").exists()  # emptied at start
        _until(lambda: len(_live_pids(metrics_dir)) == 2, "both workers up")
        _fail_logins(base, FAILED_LOGINS)
        scrapes = [_scrape(base) for _ in range(10)]
        assert [_failures(s) for s in scrapes] == [FAILED_LOGINS] * 10
        login_401 = frozenset({("route", "/auth/login"), ("method", "POST"), ("status", "401")})
        for s in scrapes:
            assert s[("authsvc_http_requests_total", login_401)] == FAILED_LOGINS
            assert s[("authsvc_http_request_duration_seconds_count", login_401)] == FAILED_LOGINS
            assert s[("authsvc_signing_key_age_seconds", frozenset())] >= 0
            assert ("authsvc_db_pool_checked_out", frozenset()) in s

        # A worker killed outright: the supervisor replaces it, its live gauges stop counting,
        # and what it counted stays counted.
        victim = min(_live_pids(metrics_dir))
        os.kill(victim, signal.SIGKILL)
        _until(lambda: victim not in _live_pids(metrics_dir), "the killed worker marked dead")
        _until(lambda: len(_live_pids(metrics_dir)) == 2, "a replacement worker up")
        _fail_logins(base, 2)
        assert [_failures(_scrape(base)) for _ in range(6)] == [FAILED_LOGINS + 2] * 6


def test_one_worker_keeps_its_numbers_in_process(tmp_path: Path) -> None:
    env = {"AUTHSVC_METRICS_TOKEN": TOKEN, "AUTHSVC_RATE_LIMIT_ENABLED": "false"}
    with live_server(tmp_path, environ=env) as base:
        _fail_logins(base, 3)
        assert _failures(_scrape(base)) == 3
