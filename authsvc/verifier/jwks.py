"""The JWKS cache: honours Cache-Control, refetches on an unknown kid (rate-limited), and keeps
the last good keys when a fetch fails, so an authsvc outage does not stop verification."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from authsvc.jose.jws import MalformedToken, public_key_from_jwk

log = logging.getLogger("authsvc.verifier")

_MAX_AGE = re.compile(r"(?:^|,)\s*(?:s-maxage|max-age)\s*=\s*\"?(\d+)\"?", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-cache|no-store)\b", re.IGNORECASE)


def max_age(cache_control: str | None, default: float) -> float:
    """RFC 9111 section 5.2.2.1: max-age; no-cache / no-store mean revalidate every time."""
    if not cache_control:
        return default
    if _NO_CACHE.search(cache_control):
        return 0.0
    match = _MAX_AGE.search(cache_control)
    return float(match.group(1)) if match else default


def parse_jwks(document: Any) -> dict[str, rsa.RSAPublicKey]:
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK Set")
    keys: dict[str, rsa.RSAPublicKey] = {}
    for jwk in document["keys"]:
        # Keys we cannot use for RS256 (other types, encryption keys, no kid) are skipped: a
        # JWKS may publish them for other parties.
        if not isinstance(jwk, Mapping) or not isinstance(jwk.get("kid"), str):
            continue
        try:
            keys[jwk["kid"]] = public_key_from_jwk(jwk)
        except MalformedToken as exc:
            log.debug("JWKS key %r skipped: %s", jwk["kid"], exc.reason)
    return keys


class JWKSCache:
    def __init__(
        self,
        url: str | None,
        client: httpx.AsyncClient | None,
        *,
        clock: Callable[[], float],
        refetch_interval: float = 30.0,
        default_max_age: float = 300.0,
        min_max_age: float = 1.0,
        max_max_age: float = 86400.0,
        static: Mapping[str, Any] | None = None,
    ) -> None:
        if static is None and (url is None or client is None):
            raise ValueError("a JWKS URL and client, or a static JWKS, is required")
        self.url = url
        self.client = client
        self.clock = clock
        self.refetch_interval = refetch_interval
        self.default_max_age = default_max_age
        self.min_max_age = min_max_age
        self.max_max_age = max_max_age
        self.keys: dict[str, rsa.RSAPublicKey] = {}
        self.fresh_until = float("-inf")
        self.last_attempt = float("-inf")
        self.fetches = 0
        self.failures = 0
        self._lock = asyncio.Lock()
        self._static = static is not None
        if static is not None:
            self.keys = parse_jwks(static)
            self.fresh_until = float("inf")

    @property
    def stale(self) -> bool:
        return self.clock() >= self.fresh_until

    async def refresh(self, *, unless_attempted_since: float | None = None) -> bool:
        """Fetch once (concurrent callers share one fetch). False if it failed."""
        if self._static:
            return True
        async with self._lock:
            if unless_attempted_since is not None and self.last_attempt > unless_attempted_since:
                return True  # another caller fetched while we waited
            assert self.client is not None and self.url is not None
            now = self.clock()
            self.last_attempt = now
            self.fetches += 1
            try:
                response = await self.client.get(self.url, headers={"Accept": "application/json"})
                response.raise_for_status()
                keys = parse_jwks(response.json())
                if not keys:
                    raise ValueError("no usable RS256 key in the JWKS")
            except (httpx.HTTPError, ValueError) as exc:
                self.failures += 1
                # Keep the last good keys; try again after the refetch interval.
                self.fresh_until = now + self.refetch_interval
                log.warning(
                    "JWKS fetch from %s failed (%s); keeping %d known keys",
                    self.url,
                    exc,
                    len(self.keys),
                )
                return False
            age = max_age(response.headers.get("cache-control"), self.default_max_age)
            self.keys = keys
            self.fresh_until = now + min(max(age, self.min_max_age), self.max_max_age)
            return True

    async def key(self, kid: str) -> rsa.RSAPublicKey | None:
        """The key for kid: from the cache while fresh; refetched when stale, or when the kid is
        unknown and the last fetch is older than the refetch interval (a rotation reached us
        before our cache expired, or a client is probing with made-up kids)."""
        if self.stale:
            await self.refresh(unless_attempted_since=self.clock() - self.min_max_age)
        key = self.keys.get(kid)
        if key is None and self.clock() - self.last_attempt >= self.refetch_interval:
            await self.refresh(unless_attempted_since=self.clock() - self.refetch_interval)
            key = self.keys.get(kid)
        return key
