"""Prometheus metrics, one registry per app (so tests and several apps in a process never clash).

Other modules count through the `Metrics` methods (`login`, `refresh`, `rate_limited`, ...);
gauges that describe state (signing-key age, pool usage) are read at scrape time.

Each process keeps its own numbers: with `authsvc serve --workers N` a scrape reaches one worker
at random, so run one process per port (or container) when you need exact per-process series.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

LOGIN_OUTCOMES: Final = ("success", "failure")
REFRESH_OUTCOMES: Final = ("rotated", "grace_retry", "reuse_revoked", "invalid")

# Latency buckets, seconds: a refresh is milliseconds, a login (argon2) tens to hundreds.
_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _StateCollector(Collector):
    """Gauges computed when scraped: they describe state, not events."""

    def __init__(self, read: Callable[[], dict[str, float | None]]) -> None:
        self.read = read

    def collect(self) -> Iterable[Any]:
        values = self.read()
        help_texts = {
            "authsvc_signing_key_age_seconds": "Age of the signing key in use (since created).",
            "authsvc_db_pool_size": "Connections the pool keeps open (PostgreSQL).",
            "authsvc_db_pool_checked_out": "Connections in use by requests right now.",
            "authsvc_db_pool_overflow": "Connections open beyond the pool size.",
        }
        for name, text in help_texts.items():
            value = values.get(name)
            if value is not None:
                family = GaugeMetricFamily(name, text)
                family.add_metric([], value)
                yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "authsvc_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "authsvc_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template, method and status.",
            ["route", "method", "status"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.logins = Counter(
            "authsvc_logins", "Login attempts by outcome.", ["outcome"], registry=self.registry
        )
        self.refreshes = Counter(
            "authsvc_refreshes",
            "Refresh-token presentations by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.rate_limit_hits = Counter(
            "authsvc_rate_limited",
            "Requests refused by a rate limit, by limit name.",
            ["limit"],
            registry=self.registry,
        )
        # Every outcome is visible at 0 from the start, so rate() works before the first event.
        for outcome in LOGIN_OUTCOMES:
            self.logins.labels(outcome)
        # Refresh outcomes are a fixed set counted on the hottest write path: children kept.
        self._refresh_children = {o: self.refreshes.labels(o) for o in REFRESH_OUTCOMES}
        # The labelled children per (route, method, status): `.labels()` costs more than the
        # count itself on every request. Bounded like the series themselves (route templates).
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._state_readers: list[Callable[[], dict[str, float | None]]] = []
        self.registry.register(_StateCollector(self._read_state))

    # -- counting ----------------------------------------------------------------------------

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            labels = (route, method, str(status))
            children = (self.requests.labels(*labels), self.latency.labels(*labels))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def login(self, outcome: str) -> None:
        self.logins.labels(outcome).inc()

    def refresh(self, outcome: str) -> None:
        self._refresh_children[outcome].inc()

    def rate_limited(self, limit: str) -> None:
        """For the rate limiter: count one refused request under the limit's name."""
        self.rate_limit_hits.labels(limit).inc()

    # -- state gauges ------------------------------------------------------------------------

    def watch_state(self, read: Callable[[], dict[str, float | None]]) -> None:
        self._state_readers.append(read)

    def _read_state(self) -> dict[str, float | None]:
        values: dict[str, float | None] = {}
        for read in self._state_readers:
            values.update(read())
        return values

    def render(self) -> bytes:
        return generate_latest(self.registry)


def key_age_seconds(created_at: datetime | None, now: datetime) -> float | None:
    return None if created_at is None else max(0.0, (now - created_at).total_seconds())


def token_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison of the scraper's bearer token."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())
