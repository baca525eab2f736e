"""GET /metrics: off by default, guarded by a bearer token, counting what the issue asks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Harness


@pytest.fixture
def database_url(empty_database_url: str) -> str:
    """The key-age gauge is read against a key made at the test's clock: a database no server has
    started on."""
    return empty_database_url


pytestmark = pytest.mark.anyio

TOKEN = "scrape-token-for-tests-0123456789"


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def _scrape(harness: Harness) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await harness.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return _samples(response.text)


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_do_not_exist_without_a_token_setting(harness: Harness) -> None:
    response = await harness.client.get("/metrics")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize("settings_overrides", [{"metrics_token": TOKEN}])
async def test_metrics_need_the_token(harness: Harness) -> None:
    assert (await harness.client.get("/metrics")).status_code == 401
    wrong = await harness.client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("settings_overrides", [{"metrics_token": TOKEN}])
async def test_metrics_count_requests_logins_refreshes_and_state(harness: Harness) -> None:
    await harness.create_user()
    first = await harness.login()
    bad = await harness.client.post("/auth/login", json={"username": "alice", "password": "x" * 9})
    assert bad.status_code == 401
    second = (await harness.refresh(first["refresh_token"])).json()
    assert (await harness.refresh(first["refresh_token"])).status_code == 200  # grace retry
    assert (await harness.refresh(second["refresh_token"])).status_code == 200
    harness.clock.advance(60)
    assert (await harness.refresh(first["refresh_token"])).status_code == 401  # reuse
    assert (await harness.refresh("rt_" + "B" * 43)).status_code == 401  # invalid
    assert (await harness.client.get("/no/such/path/123")).status_code == 404
    harness.state.metrics.rate_limited("login")  # the rate limiter's hook

    s = await _scrape(harness)
    assert _value(s, "authsvc_logins_total", outcome="success") == 1
    assert _value(s, "authsvc_logins_total", outcome="failure") == 1
    for outcome, count in [
        ("rotated", 2),
        ("grace_retry", 1),
        ("reuse_revoked", 1),
        ("invalid", 1),
    ]:
        assert _value(s, "authsvc_refreshes_total", outcome=outcome) == count, outcome
    assert _value(s, "authsvc_rate_limited_total", limit="login") == 1
    refresh_200 = {"route": "/auth/refresh", "method": "POST", "status": "200"}
    assert _value(s, "authsvc_http_requests_total", **refresh_200) == 3
    assert _value(s, "authsvc_http_request_duration_seconds_count", **refresh_200) == 3
    assert _value(s, "authsvc_http_request_duration_seconds_bucket", le="+Inf", **refresh_200) == 3
    # Unmatched paths share one label value: clients cannot grow the series.
    unmatched = {"route": "<unmatched>", "method": "GET", "status": "404"}
    assert _value(s, "authsvc_http_requests_total", **unmatched) == 1
    assert 60 <= _value(s, "authsvc_signing_key_age_seconds") < 3600
    if harness.state.database.dialect == "postgresql":
        assert _value(s, "authsvc_db_pool_size") >= 1
        assert ("authsvc_db_pool_checked_out", frozenset()) in s


@pytest.mark.parametrize("settings_overrides", [{"metrics_token": TOKEN}])
async def test_the_documented_alerts_use_metrics_that_exist(harness: Harness) -> None:
    docs = Path(__file__).resolve().parents[1] / "docs" / "operations.md"
    exprs = re.findall(r"^\s+expr: (.+)$", docs.read_text(), flags=re.MULTILINE)
    used = {name for expr in exprs for name in re.findall(r"\bauthsvc_\w+", expr)}
    assert "authsvc_signing_key_age_seconds" in used
    exported = {name for name, _ in await _scrape(harness)}
    # Counters are queried by their _total sample, gauges by their name.
    assert used <= exported, used - exported
