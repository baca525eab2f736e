"""Prometheus metrics, one registry per app (so tests and several apps in a process never clash).

Other modules count through the `Metrics` methods (`login`, `refresh`, `rate_limited`, ...);
gauges that describe state (signing-key age, pool usage) are read at scrape time.

Several workers (`authsvc serve --workers N`) share their numbers through prometheus-client's
multiprocess mode: `authsvc serve` gives each run its own directory (PROMETHEUS_MULTIPROC_DIR),
every worker writes its counters there, and a scrape of any worker reads the whole directory, so
every scrape reports the process group. Gauges that describe one worker (pool usage) are summed
over the live workers; the signing-key age is a fact of the database, read by the scraped worker.
Without the directory (one process, tests) each app keeps its numbers in its own registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

LOGIN_OUTCOMES: Final = ("success", "failure")
REFRESH_OUTCOMES: Final = ("rotated", "grace_retry", "reuse_revoked", "invalid")

LIMITER_ACTIONS: Final = ("allowed", "refused")

# The gauges each worker samples about itself; summed over live workers in multiprocess mode.
_POOL_GAUGES: Final = {
    "authsvc_db_pool_size": "Connections the pool keeps open (PostgreSQL).",
    "authsvc_db_pool_checked_out": "Connections in use by requests right now.",
    "authsvc_db_pool_overflow": "Connections open beyond the pool size.",
}
_STATE_GAUGES: Final = {
    "authsvc_signing_key_age_seconds": "Age of the signing key in use (since created).",
    **_POOL_GAUGES,
}
# How often each worker writes its own gauges for the others to read (multiprocess mode).
SAMPLE_INTERVAL: Final = 5.0

# Latency buckets, seconds: a refresh is milliseconds, a login (argon2) tens to hundreds.
_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _StateCollector(Collector):
    """Gauges computed when scraped: they describe state, not events."""

    def __init__(self, read: Callable[[], dict[str, float | None]], names: Iterable[str]) -> None:
        self.read = read
        self.names = tuple(names)

    def collect(self) -> Iterable[Any]:
        values = self.read()
        for name in self.names:
            text = _STATE_GAUGES[name]
            value = values.get(name)
            if value is not None:
                family = GaugeMetricFamily(name, text)
                family.add_metric([], value)
                yield family


def multiprocess_dir() -> str | None:
    """The shared directory of multiprocess mode, when this process runs in it."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    def __init__(self, shared_dir: str | None = None) -> None:
        """`shared_dir`: prometheus-client's multiprocess directory (see the module docstring);
        it must be the PROMETHEUS_MULTIPROC_DIR this process was started with."""
        self.shared_dir = shared_dir
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
        self.limiter_errors = Counter(
            "authsvc_rate_limiter_errors",
            "Rate-limit checks decided without the limiter's store (Redis), which failed, by what "
            "the failure policy did (AUTHSVC_RATE_LIMIT_FAILURE_MODE): allowed or refused.",
            ["action"],
            registry=self.registry,
        )
        # Every outcome is visible at 0 from the start, so rate() works before the first event.
        for outcome in LOGIN_OUTCOMES:
            self.logins.labels(outcome)
        for action in LIMITER_ACTIONS:
            self.limiter_errors.labels(action)
        # Refresh outcomes are a fixed set counted on the hottest write path: children kept.
        self._refresh_children = {o: self.refreshes.labels(o) for o in REFRESH_OUTCOMES}
        # The labelled children per (route, method, status): `.labels()` costs more than the
        # count itself on every request. Bounded like the series themselves (route templates).
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._state_readers: list[Callable[[], dict[str, float | None]]] = []
        self._sampler: asyncio.Task[None] | None = None
        if shared_dir is None:
            self.registry.register(_StateCollector(self._read_state, _STATE_GAUGES))
            self._pool_gauges: dict[str, Gauge] = {}
            return
        # Multiprocess mode: this registry only creates the series (their values live in the
        # shared directory); a scrape renders the directory plus what the scraped worker knows
        # about the database (the signing key), never this registry.
        self._pool_gauges = {
            name: Gauge(name, text, registry=self.registry, multiprocess_mode="livesum")
            for name, text in _POOL_GAUGES.items()
        }
        from prometheus_client.multiprocess import MultiProcessCollector

        self._scrape_registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(self._scrape_registry, path=shared_dir)  # type: ignore[no-untyped-call]
        self._scrape_registry.register(
            _StateCollector(self._read_state, ["authsvc_signing_key_age_seconds"])
        )

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

    def rate_limiter_error(self, action: str) -> None:
        """For the rate limiter: its store failed and the request was `allowed` or `refused`."""
        self.limiter_errors.labels(action).inc()

    # -- state gauges ------------------------------------------------------------------------

    def watch_state(self, read: Callable[[], dict[str, float | None]]) -> None:
        self._state_readers.append(read)

    def _read_state(self) -> dict[str, float | None]:
        values: dict[str, float | None] = {}
        for read in self._state_readers:
            values.update(read())
        return values

    def sample(self) -> None:
        """Write this worker's own gauges where the other workers' scrapes read them."""
        values = self._read_state()
        for name, gauge in self._pool_gauges.items():
            value = values.get(name)
            if value is not None:
                gauge.set(value)

    def start_sampling(self) -> None:
        """In multiprocess mode, sample this worker's gauges every SAMPLE_INTERVAL seconds
        (a scrape of another worker reads them from the shared directory)."""
        if self.shared_dir is None or self._sampler is not None:
            return

        async def loop() -> None:
            while True:
                self.sample()
                await asyncio.sleep(SAMPLE_INTERVAL)

        self._sampler = asyncio.create_task(loop(), name="authsvc-metrics-sampler")

    async def stop_sampling(self) -> None:
        task, self._sampler = self._sampler, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def render(self) -> bytes:
        if self.shared_dir is None:
            return generate_latest(self.registry)
        self.sample()  # the scraped worker's own gauges as of now
        return generate_latest(self._scrape_registry)


def key_age_seconds(created_at: datetime | None, now: datetime) -> float | None:
    return None if created_at is None else max(0.0, (now - created_at).total_seconds())


def token_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison of the scraper's bearer token."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())
