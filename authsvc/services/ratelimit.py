"""Rate limits and login backoff, in process memory or shared through Redis.

Three rules guard password guessing and token-endpoint abuse (and two more the sign-up and
recovery endpoints, below):

- a fixed-window request count per client address, per endpoint (login, refresh);
- a fixed-window count of login attempts per username, whatever the address;
- per-username exponential backoff: after `free` consecutive failures each further failure
  blocks the name for base * 2^k seconds, capped at `max` (so an attacker can slow a real
  user down but never lock them out for longer than that); a success clears it, and failures
  are forgotten after `memory` seconds without one.

The sign-up and recovery endpoints (`account`) count requests per address like login does, and
mails to one account (or address) are counted per mail window: past the limit the mail is
skipped but the answer stays the same, so the limit protects a mailbox without revealing that
an account exists.

Keys are SHA-256 digests of the name or address (no personal data in Redis, bounded size).
Times come from the app clock so tests move it; Redis TTLs only collect garbage. Redis state is
changed by Lua scripts, each atomic, so several processes share one consistent view.

If Redis fails, AUTHSVC_RATE_LIMIT_FAILURE_MODE decides: `open` (the default) lets the request
through unthrottled, since throttling is a defence layer and should not take logins down with
it; `closed` refuses it with 503, for deployments where unthrottled password guessing is the
greater harm. Either way the failure is logged (once when it starts, then at most once a minute,
and when Redis answers again), each check decided without Redis is counted in
authsvc_rate_limiter_errors_total, and /readyz reports the limiter as degraded.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from authsvc.config import Settings
from authsvc.errors import InvalidCredentials, RateLimited, ServiceUnavailable
from authsvc.observability.metrics import Metrics
from authsvc.services.users import normalize_username

log = logging.getLogger("authsvc.ratelimit")


@dataclass(frozen=True)
class Limits:
    window: float
    login_per_ip: int
    refresh_per_ip: int
    login_per_username: int
    backoff_free_failures: int
    backoff_base: float
    backoff_max: float
    failure_memory: float
    account_per_ip: int = 10
    mail_per_account: int = 3
    mail_window: float = 3600

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            window=settings.rate_limit_window_seconds,
            login_per_ip=settings.rate_limit_login_per_ip,
            refresh_per_ip=settings.rate_limit_refresh_per_ip,
            login_per_username=settings.rate_limit_login_per_username,
            backoff_free_failures=settings.login_backoff_free_failures,
            backoff_base=settings.login_backoff_base_seconds,
            backoff_max=settings.login_backoff_max_seconds,
            failure_memory=settings.login_failure_memory_seconds,
            account_per_ip=settings.rate_limit_account_per_ip,
            mail_per_account=settings.rate_limit_mail_per_account,
            mail_window=settings.rate_limit_mail_window_seconds,
        )

    def backoff(self, failures: int) -> float:
        """Seconds a name is blocked after its `failures`-th consecutive failure."""
        extra = failures - self.backoff_free_failures
        if extra <= 0:
            return 0.0
        return float(min(self.backoff_max, self.backoff_base * 2 ** min(extra - 1, 30)))


class Backend(Protocol):
    async def hit(self, key: str, limit: int, window: float, now: float) -> float:
        """Count one request; seconds to wait if this one is over the limit, else 0."""

    async def blocked(self, key: str, now: float) -> float:
        """Seconds the name is still blocked for (0: not blocked)."""

    async def failed(self, key: str, limits: Limits, now: float) -> None: ...

    async def succeeded(self, key: str) -> None: ...

    async def ping(self) -> None:
        """Raise when the state cannot be reached."""

    async def close(self) -> None: ...


class MemoryBackend:
    """One process's state. Every method runs without awaiting, so each is atomic."""

    _SWEEP_ABOVE = 10_000

    def __init__(self) -> None:
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (window end, count)
        self._failures: dict[str, tuple[int, float, float]] = {}  # key -> (n, last, until)

    async def hit(self, key: str, limit: int, window: float, now: float) -> float:
        end, count = self._windows.get(key, (0.0, 0))
        if now >= end:
            end, count = now + window, 0
        count += 1
        self._windows[key] = (end, count)
        if len(self._windows) > self._SWEEP_ABOVE:
            self._windows = {k: v for k, v in self._windows.items() if v[0] > now}
        return end - now if count > limit else 0.0

    async def blocked(self, key: str, now: float) -> float:
        entry = self._failures.get(key)
        return max(0.0, entry[2] - now) if entry else 0.0

    async def failed(self, key: str, limits: Limits, now: float) -> None:
        n, last, _ = self._failures.get(key, (0, now, 0.0))
        if now - last > limits.failure_memory:
            n = 0
        n += 1
        self._failures[key] = (n, now, now + limits.backoff(n))
        if len(self._failures) > self._SWEEP_ABOVE:
            memory = limits.failure_memory
            self._failures = {
                k: v for k, v in self._failures.items() if now - v[1] <= memory or v[2] > now
            }

    async def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._windows.clear()
        self._failures.clear()


# Times are passed in milliseconds as integers; the scripts never read the Redis clock.
_HIT = """
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'e', 'c')
local finish, count = tonumber(state[1]), tonumber(state[2])
if not finish or now >= finish then
  finish, count = now + window, 0
end
count = count + 1
redis.call('HSET', KEYS[1], 'e', finish, 'c', count)
redis.call('PEXPIRE', KEYS[1], math.max(finish - now, 1) + 60000)
if count > limit then return finish - now end
return 0
"""

_BLOCKED = """
local untill = tonumber(redis.call('HGET', KEYS[1], 'u'))
if untill and untill > tonumber(ARGV[1]) then return untill - tonumber(ARGV[1]) end
return 0
"""

_FAILED = """
local now, memory = tonumber(ARGV[1]), tonumber(ARGV[2])
local free, base, cap = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local state = redis.call('HMGET', KEYS[1], 'n', 'l')
local n, last = tonumber(state[1]) or 0, tonumber(state[2]) or now
if now - last > memory then n = 0 end
n = n + 1
local untill = now
if n > free then
  untill = now + math.min(cap, base * 2 ^ math.min(n - free - 1, 30))
end
redis.call('HSET', KEYS[1], 'n', n, 'l', now, 'u', untill)
redis.call('PEXPIRE', KEYS[1], memory + (untill - now) + 60000)
return n
"""


def _ms(seconds: float) -> int:
    return math.ceil(seconds * 1000)


class RedisBackend:
    """State shared by every process that uses the same Redis and key prefix."""

    def __init__(self, url: str, prefix: str, *, timeout: float = 0.5) -> None:
        """`timeout`: how long a check may wait on Redis before the failure mode decides it
        (a slow limiter must not hold up logins)."""
        from redis.asyncio import Redis

        self.prefix = prefix
        self.redis = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._hit = self.redis.register_script(_HIT)
        self._blocked = self.redis.register_script(_BLOCKED)
        self._failed = self.redis.register_script(_FAILED)

    async def hit(self, key: str, limit: int, window: float, now: float) -> float:
        wait = await self._hit(keys=[self.prefix + key], args=[_ms(now), _ms(window), limit])
        return int(wait) / 1000

    async def blocked(self, key: str, now: float) -> float:
        return int(await self._blocked(keys=[self.prefix + key], args=[_ms(now)])) / 1000

    async def failed(self, key: str, limits: Limits, now: float) -> None:
        await self._failed(
            keys=[self.prefix + key],
            args=[
                _ms(now),
                _ms(limits.failure_memory),
                limits.backoff_free_failures,
                _ms(limits.backoff_base),
                _ms(limits.backoff_max),
            ],
        )

    async def succeeded(self, key: str) -> None:
        await self.redis.delete(self.prefix + key)

    async def ping(self) -> None:
        await self.redis.ping()

    async def close(self) -> None:
        await self.redis.aclose()


def _digest(kind: str, value: str) -> str:
    return kind + ":" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def address_key(ip: str | None) -> str:
    """IPv6 clients are counted per /64: one subscriber usually holds a whole /64."""
    if not ip:
        return "unknown"
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def username_key(username: str) -> str:
    """The normalised name (RFC 8265), so case and width variants share one budget."""
    try:
        return normalize_username(username)
    except Exception:
        return username.casefold()[:1024]


# While the store stays down, one log line per this many seconds (plus one when it comes back).
_LOG_EVERY = 60.0


class _Outage:
    """The limiter's view of its store: healthy, or failing since when, and the log throttle.

    Log pacing uses the monotonic clock, not the app clock: it is about log volume, not a rule.
    """

    def __init__(self) -> None:
        self.since: float | None = None
        self.logged_at = 0.0
        self.decided = 0

    def failed(self, exc: Exception, action: str) -> None:
        stamp = time.monotonic()
        self.decided += 1
        if self.since is None:
            self.since = stamp
        elif stamp - self.logged_at < _LOG_EVERY:
            return
        self.logged_at = stamp
        opened = action == "allowed"
        log.warning(
            "rate limiter store unavailable (%s): %s (AUTHSVC_RATE_LIMIT_FAILURE_MODE=%s); "
            "%d checks so far",
            type(exc).__name__,
            "requests go through without rate limits" if opened else "requests are refused (503)",
            "open" if opened else "closed",
            self.decided,
        )

    def recovered(self) -> None:
        if self.since is not None:
            log.warning(
                "rate limiter store available again after %.0f s; %d checks were decided "
                "without it",
                time.monotonic() - self.since,
                self.decided,
            )
            self.since = None
            self.decided = 0


class RateLimiter:
    """The rules above, over one backend. Disabled, every check passes without I/O."""

    def __init__(
        self,
        limits: Limits,
        backend: Backend | None,
        *,
        fail_closed: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        self.limits = limits
        self.backend = backend
        self.fail_closed = fail_closed
        self.metrics = metrics
        self._outage = _Outage()

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics | None = None) -> RateLimiter:
        limits = Limits.from_settings(settings)
        if not settings.rate_limit_enabled:
            return cls(limits, None)
        if settings.redis_url:
            return cls(
                limits,
                RedisBackend(settings.redis_url, settings.rate_limit_key_prefix),
                fail_closed=settings.rate_limit_failure_mode == "closed",
                metrics=metrics,
            )
        return cls(limits, MemoryBackend())

    @classmethod
    def disabled(cls, settings: Settings) -> RateLimiter:
        return cls(Limits.from_settings(settings), None)

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    async def close(self) -> None:
        if self.backend is not None:
            await self.backend.close()

    async def health(self) -> str | None:
        """For /readyz: None without a shared store, else "ok" or what is wrong."""
        if not isinstance(self.backend, RedisBackend):
            return None
        try:
            await self.backend.ping()
        except Exception as exc:
            mode = "closed" if self.fail_closed else "open"
            return f"degraded: unavailable ({type(exc).__name__}), failing {mode}"
        return "ok"

    async def check_address(self, endpoint: str, ip: str | None, now: datetime) -> None:
        """Count a request to `endpoint` (login, refresh, account) from this address; 429 when
        over."""
        if self.backend is None:
            return
        limit = {
            "login": self.limits.login_per_ip,
            "account": self.limits.account_per_ip,
        }.get(endpoint, self.limits.refresh_per_ip)
        await self._hit(_digest(f"ip:{endpoint}", address_key(ip)), limit, now)

    @asynccontextmanager
    async def login_attempt(self, username: str, now: datetime) -> AsyncIterator[None]:
        """Wrap one password check for `username`: refuse it while the name is throttled,
        record its failure (InvalidCredentials) or clear the record on success."""
        if self.backend is None:
            yield
            return
        backend = self.backend
        ts = now.timestamp()
        name = username_key(username)
        key = _digest("fail", name)
        wait = await self._guard(backend.blocked(key, ts))
        if wait > 0:
            raise RateLimited(math.ceil(wait))
        await self._hit(_digest("user", name), self.limits.login_per_username, now)
        try:
            yield
        except InvalidCredentials:
            await self._record(backend.failed(key, self.limits, ts))
            raise
        await self._record(backend.succeeded(key))

    async def mail_allowed(self, recipient: str, now: datetime) -> bool:
        """Count one mail to `recipient` (an account id or an address); False when over the
        per-account limit. Never raises RateLimited: the caller's answer must not change."""
        if self.backend is None:
            return True
        key = _digest("mail", recipient.casefold())
        wait = await self._guard(
            self.backend.hit(
                key, self.limits.mail_per_account, self.limits.mail_window, now.timestamp()
            )
        )
        return wait <= 0

    async def _hit(self, key: str, limit: int, now: datetime) -> None:
        if self.backend is None:
            return
        wait = await self._guard(self.backend.hit(key, limit, self.limits.window, now.timestamp()))
        if wait > 0:
            raise RateLimited(math.ceil(wait))

    async def _guard(self, operation: Awaitable[float | None]) -> float:
        """A check against the store; when the store fails, the failure policy decides."""
        try:
            result = await operation
        except (RateLimited, ServiceUnavailable):
            raise
        except Exception as exc:
            action = "refused" if self.fail_closed else "allowed"
            self._outage.failed(exc, action)
            if self.metrics is not None:
                self.metrics.rate_limiter_error(action)
            if self.fail_closed:
                raise ServiceUnavailable("Rate limiting is unavailable; retry later.") from exc
            return 0.0
        self._outage.recovered()
        return float(result or 0.0)

    async def _record(self, operation: Awaitable[None]) -> None:
        """Recording an attempt's outcome is best effort under either policy: the attempt was
        checked already, and refusing a request whose password check is done would only hide
        its answer."""
        try:
            await operation
        except Exception as exc:  # the next check meets the outage and reports it
            log.debug("rate limiter could not record a login outcome (%s)", type(exc).__name__)
