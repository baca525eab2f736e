"""DPoP (RFC 9449) for the server: proofs checked (authsvc.jose.dpop) and each proof's jti
remembered, so that a proof is good for one request.

The replay cache is shared by every process through Redis when AUTHSVC_REDIS_URL is set
(`SET NX PX`, one round trip), and kept in process memory otherwise. When Redis cannot be
reached, a process falls back to its own memory for that proof and logs a warning: a replay
within one process is still refused and DPoP keeps working, but a proof replayed to another
process during the outage is not caught (docs/dpop.md).
"""

from __future__ import annotations

import logging
import math
from datetime import datetime
from typing import Any, Protocol

from authsvc.config import Settings
from authsvc.errors import (
    InvalidDPoPProof,
    ResourceDPoPProofRefused,
    ResourceUseDPoPNonce,
    UseDPoPNonce,
)
from authsvc.jose.dpop import (
    InvalidProof,
    MemoryReplayCache,
    Proof,
    replay_key,
    replay_ttl,
    verify_proof,
)
from authsvc.jose.jws import b64url_encode
from authsvc.security.secrets import ServerSecrets
from authsvc.services.context import DPoPRequest

log = logging.getLogger("authsvc.dpop")


class ReplayCache(Protocol):
    async def first_use(self, key: str, ttl: float, now: float) -> bool: ...


class RedisReplayCache:
    """Proof jtis in Redis, shared by every process with the same Redis and prefix; the memory
    cache stands in while Redis is away."""

    def __init__(self, url: str, prefix: str, fallback: MemoryReplayCache) -> None:
        from redis.asyncio import Redis

        self.prefix = prefix
        self.redis: Any = Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.fallback = fallback
        self._down = False

    async def first_use(self, key: str, ttl: float, now: float) -> bool:
        try:
            stored = await self.redis.set(
                self.prefix + key, b"1", nx=True, px=math.ceil(ttl * 1000)
            )
        except Exception as exc:  # Redis down: this process's memory, loudly (module docstring)
            if not self._down:
                log.warning("DPoP replay cache: Redis unavailable (%s)", type(exc).__name__)
            self._down = True
            return await self.fallback.first_use(key, ttl, now)
        if self._down:
            log.warning("DPoP replay cache: Redis reachable again")
            self._down = False
        return bool(stored)

    async def close(self) -> None:
        await self.redis.aclose()


class _NonceMissing(Exception):
    pass


class DPoPService:
    def __init__(
        self,
        settings: Settings,
        secrets: ServerSecrets,
        cache: ReplayCache | None = None,
    ) -> None:
        self.settings = settings
        self._secrets = secrets
        self.max_age = float(settings.dpop_proof_max_age_seconds)
        self.leeway = float(settings.token_leeway_seconds)
        memory = MemoryReplayCache(settings.dpop_replay_cache_size)
        if cache is None and settings.redis_url:
            cache = RedisReplayCache(settings.redis_url, settings.dpop_replay_key_prefix, memory)
        self.cache: ReplayCache = cache or memory

    async def token_key(self, request: DPoPRequest | None, now: datetime) -> str | None:
        """The key thumbprint of the DPoP proof sent to an endpoint that issues tokens (RFC 9449
        section 5), None without one; InvalidDPoPProof (400) for a bad or replayed proof."""
        if request is None:
            return None
        try:
            return (await self._check(request, now, None)).jkt
        except _NonceMissing:
            raise UseDPoPNonce(self.nonce(now)) from None
        except InvalidProof as exc:
            log.debug("DPoP proof refused: %s", exc.reason)
            raise InvalidDPoPProof() from None

    async def resource_key(self, request: DPoPRequest, access_token: str, now: datetime) -> str:
        """The key thumbprint of the proof sent with an access token (RFC 9449 section 7.1,
        `ath` included); ResourceDPoPProofRefused (401) for a bad or replayed proof."""
        try:
            return (await self._check(request, now, access_token)).jkt
        except _NonceMissing:
            raise ResourceUseDPoPNonce(self.nonce(now)) from None
        except InvalidProof as exc:
            log.debug("DPoP proof refused: %s", exc.reason)
            raise ResourceDPoPProofRefused() from None

    async def _check(self, request: DPoPRequest, now: datetime, access_token: str | None) -> Proof:
        at = now.timestamp()
        proof = verify_proof(
            request.proof,
            method=request.method,
            uri=request.uri,
            now=at,
            max_age=self.max_age,
            leeway=self.leeway,
            access_token=access_token,
        )
        if self.settings.dpop_nonce and proof.nonce not in self._nonces(at):
            raise _NonceMissing()
        # RFC 9449 section 11.1: a jti seen before within the window is a replay.
        if not await self.cache.first_use(
            replay_key(proof), replay_ttl(self.max_age, self.leeway), at
        ):
            raise InvalidProof("jti replayed")
        return proof

    def nonce(self, now: datetime) -> str:
        """The server's current DPoP nonce (RFC 9449 section 8): unpredictable, the same in
        every process (an HMAC under one of the server's stored keys), a new one every proof
        lifetime."""
        return self._nonce(int(now.timestamp() // self.max_age))

    def _nonces(self, at: float) -> tuple[str, str]:
        # The current nonce and the one before, so a nonce handed out just before a change
        # still works for one proof lifetime.
        period = int(at // self.max_age)
        return self._nonce(period), self._nonce(period - 1)

    def _nonce(self, period: int) -> str:
        return b64url_encode(self._secrets.mac("dpop_nonce", str(period))[:18])

    async def close(self) -> None:
        if isinstance(self.cache, RedisReplayCache):
            await self.cache.close()
