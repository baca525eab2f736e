"""The Verifier: JWKS cache + pinned verification + revocation polling + a verified-token cache."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol

import httpx
from cryptography.exceptions import InvalidSignature

from authsvc.jose.access_token import REQUIRED_CLAIMS, claim_problems, header_problems
from authsvc.jose.bearer import DPOP, parse_authorization
from authsvc.jose.dpop import (
    InvalidProof,
    MemoryReplayCache,
    replay_key,
    replay_ttl,
    verify_proof,
)
from authsvc.jose.jws import MalformedToken, decode_compact, verify_signature
from authsvc.verifier.claims import AccessClaims, Policy, TokenError, typed
from authsvc.verifier.jwks import JWKSCache
from authsvc.verifier.revocations import FeedError, RevocationList

log = logging.getLogger("authsvc.verifier")


# RFC 9449 section 7.1: the proof algorithms a DPoP challenge names.
DPOP_ALGS = "ES256 RS256"


class ReplayCache(Protocol):
    """Where proof jtis are remembered (RFC 9449 section 11.1). The default is this process's
    memory (authsvc.jose.dpop.MemoryReplayCache); several replicas behind one name should share
    one, e.g. in Redis with `SET key 1 NX PX ttl`."""

    async def first_use(self, key: str, ttl: float, now: float) -> bool: ...


class AuthenticationFailed(Exception):
    """What a request gets: 401 (bad or missing token) or 403 (insufficient scope or role).

    The message never says which check failed (the reason is logged at debug level). The
    challenge is DPoP's (RFC 9449 section 7.1) when the request or its token used DPoP.
    """

    def __init__(
        self,
        status: int,
        error: str | None,
        message: str,
        realm: str,
        scope: str = "",
        *,
        dpop: bool = False,
    ):
        self.status = status
        self.error = error
        self.message = message
        # RFC 6750 section 3: no error code when no credentials were sent at all.
        challenge = f'{"DPoP" if dpop else "Bearer"} realm="{realm}"'
        if dpop:
            challenge += f', algs="{DPOP_ALGS}"'
        if error is not None:
            challenge += f', error="{error}"'
        if scope:
            challenge += f', scope="{scope}"'
        self.headers = {"WWW-Authenticate": challenge}
        super().__init__(message)


@dataclass
class Stats:
    signature_checks: int = 0
    cache_hits: int = 0
    refused: int = 0
    # Tokens verified while the feed was stale, under stale_feed="accept".
    accepted_stale: int = 0


@dataclass(frozen=True, slots=True)
class _Cached:
    claims: AccessClaims
    # The earliest of exp + leeway: after it, the entry is useless.
    valid_until: float


class Verifier:
    """Verifies authsvc access tokens locally and enforces logouts from the revocation feed.

    Start it (``async with verifier:`` or ``FastAPI(lifespan=verifier.lifespan)``) so that it
    fetches the JWKS and polls the feed in the background every ``poll_interval`` seconds.

    The feed is stale when its last successful poll is more than ``max_feed_age`` seconds old
    (``feed_age``). Then ``stale_feed="accept"`` (the default) keeps verifying, logged and
    counted, so an authsvc outage does not take the resource server down; ``"refuse"`` fails
    closed: every token is refused until a poll succeeds. ``max_feed_staleness=N`` is the
    shorthand for ``max_feed_age=N, stale_feed="refuse"``.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        authsvc_url: str | None = None,
        jwks_url: str | None = None,
        revocations_url: str | None = None,
        leeway: float = 5.0,
        poll_interval: float = 3.0,
        kid_refetch_interval: float = 30.0,
        cache_size: int = 10_000,
        revocations: bool = True,
        max_feed_staleness: float | None = None,
        max_feed_age: float = 60.0,
        stale_feed: Literal["accept", "refuse"] = "accept",
        jwks: Mapping[str, Any] | None = None,
        http_client: httpx.AsyncClient | None = None,
        realm: str | None = None,
        clock: Callable[[], float] = time.time,
        required_claims: tuple[str, ...] = REQUIRED_CLAIMS,
        public_url: str | None = None,
        dpop_max_age: float = 60.0,
        replay_cache: ReplayCache | None = None,
    ) -> None:
        base = (authsvc_url or issuer).rstrip("/")
        self.policy = Policy(
            issuer=issuer.rstrip("/"),
            audience=audience,
            leeway=leeway,
            required_claims=required_claims,
        )
        self.poll_interval = poll_interval
        self.cache_size = cache_size
        if stale_feed not in ("accept", "refuse"):
            raise ValueError("stale_feed must be 'accept' or 'refuse'")
        if max_feed_staleness is not None:
            max_feed_age, stale_feed = max_feed_staleness, "refuse"
        if not max_feed_age > 0:
            raise ValueError("max_feed_age must be a positive number of seconds")
        self.max_feed_age = float(max_feed_age)
        self.stale_feed = stale_feed
        self.realm = realm or audience
        self.clock = clock
        self.stats = Stats()
        self._own_client = http_client is None
        self.client = http_client or httpx.AsyncClient(timeout=min(5.0, max(1.0, poll_interval)))
        self.jwks = JWKSCache(
            jwks_url or f"{base}/.well-known/jwks.json",
            self.client,
            clock=clock,
            refetch_interval=kid_refetch_interval,
            static=jwks,
        )
        self.revocations = (
            RevocationList(revocations_url or f"{base}/auth/revocations", self.client, clock=clock)
            if revocations
            else None
        )
        self._cache: OrderedDict[bytes, _Cached] = OrderedDict()
        # DPoP (RFC 9449): this server's own base URL, which a proof's htu must name (never
        # read from the request's Host header, which the client picks); without it, DPoP-bound
        # tokens are refused.
        self.public_url = public_url.rstrip("/") if public_url else None
        self.dpop_max_age = dpop_max_age
        self.replay_cache: ReplayCache = replay_cache or MemoryReplayCache()
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._feed_down = False
        self._stale_warned = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """First JWKS fetch and feed poll (failures are logged, retried in the background)."""
        if self._started:
            return
        self._started = True
        if self.jwks.stale:
            await self.jwks.refresh()
        if self.revocations is not None:
            await self.sync()
            self._task = asyncio.create_task(self._run(), name="authsvc-verifier-poll")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._own_client:
            await self.client.aclose()
        self._started = False

    async def __aenter__(self) -> Verifier:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: object = None) -> AsyncIterator[None]:
        """For ``FastAPI(lifespan=verifier.lifespan)`` or to nest in your own lifespan."""
        async with self:
            yield

    async def sync(self) -> bool:
        """Poll the feed now, until caught up (the background task does this every interval)."""
        if self.revocations is None:
            return True
        try:
            for _ in range(100):  # at most 100 pages per sync; the next tick continues
                if await self.revocations.poll() > 0:
                    break
        except FeedError as exc:
            # Warn when the feed starts failing, not on every poll of an outage.
            log.log(logging.DEBUG if self._feed_down else logging.WARNING, "%s", exc)
            self._feed_down = True
            return False
        finally:
            self.revocations.expire(self.policy.leeway)
        if self._feed_down:
            log.warning("revocation feed reachable again")
        self._feed_down = False
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self.sync()
                # Refresh the JWKS one interval before it goes stale, so requests never wait.
                if self.clock() >= self.jwks.fresh_until - self.poll_interval:
                    await self.jwks.refresh()
                self._drop_expired()
            except Exception:  # the poller must survive anything and keep polling
                log.exception("revocation poller error")

    # -- verification ------------------------------------------------------------------------

    async def verify(self, token: str) -> AccessClaims:
        """Verified, typed claims of a good, unrevoked access token; TokenError otherwise.

        A token verified before (same string, still within exp + leeway, key still published,
        not revoked since) is answered from a bounded LRU cache keyed by its SHA-256, without
        the RSA check.
        """
        if self.revocations is not None and not self._started:
            raise RuntimeError("Verifier not started: use `async with verifier` or its lifespan")
        now = self.clock()
        self._check_feed_fresh(now)
        cache_key = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        cached = self._cache.get(cache_key)
        if cached is not None:
            claims = cached.claims
            if now < cached.valid_until and claims.kid in self.jwks.keys:
                self._check_not_revoked(claims)
                self._cache.move_to_end(cache_key)
                self.stats.cache_hits += 1
                return claims
            del self._cache[cache_key]
        claims = await self._verify_fully(token, now)
        self._check_not_revoked(claims)
        self._cache[cache_key] = _Cached(claims, claims.exp + self.policy.leeway)
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return claims

    async def _verify_fully(self, token: str, now: float) -> AccessClaims:
        policy = self.policy
        try:
            jws = decode_compact(token)
            problems = header_problems(jws.header, policy.token_types)
            if problems:
                raise TokenError("; ".join(problems.values()))
            kid: str = jws.header["kid"]
            key = await self.jwks.key(kid)
            if key is None:
                raise TokenError(f"unknown kid {kid!r}")
            self.stats.signature_checks += 1
            verify_signature(jws, key)
            claims = jws.claims()
        except MalformedToken as exc:
            raise TokenError(exc.reason) from None
        except InvalidSignature:
            raise TokenError("bad signature") from None
        problems = claim_problems(
            claims,
            issuer=policy.issuer,
            audience=policy.audience,
            leeway=policy.leeway,
            now=now,
            required=policy.required_claims,
        )
        if problems:
            raise TokenError("; ".join(problems.values()))
        return typed(claims, kid)

    def _check_not_revoked(self, claims: AccessClaims) -> None:
        if self.revocations is not None and self.revocations.is_revoked(claims.jti, claims.sid):
            raise TokenError("revoked")

    @property
    def feed_age(self) -> float | None:
        """Seconds since the last successful poll of the revocation feed: ``math.inf`` before
        the first one, None when revocations are off."""
        return self._feed_age(self.clock())

    @property
    def feed_stale(self) -> bool:
        """Whether ``feed_age`` is over ``max_feed_age`` (never, with revocations off)."""
        age = self.feed_age
        return age is not None and age > self.max_feed_age

    def _feed_age(self, now: float) -> float | None:
        if self.revocations is None:
            return None
        last = self.revocations.last_success
        return math.inf if last is None else max(0.0, now - last)

    def _check_feed_fresh(self, now: float) -> None:
        # Fail closed only when asked to: by default an authsvc outage does not take every
        # resource server down with it; logouts then reach us when the feed is back.
        age = self._feed_age(now)
        if age is None or age <= self.max_feed_age:
            self._stale_warned = False
            return
        if self.stale_feed == "refuse":
            raise TokenError("revocation feed is stale")
        self.stats.accepted_stale += 1
        if not self._stale_warned:
            self._stale_warned = True
            log.warning(
                "revocation feed is stale (last successful poll %s); accepting tokens "
                "(stale_feed='accept')",
                "never" if math.isinf(age) else f"{age:.0f}s ago",
            )

    def _drop_expired(self) -> None:
        now = self.clock()
        for key in [k for k, v in self._cache.items() if v.valid_until <= now]:
            self._cache.pop(key, None)

    # -- authorization (shared by the FastAPI dependency and the ASGI middleware) -------------

    async def authenticate(
        self,
        authorization: str | None,
        scopes: Collection[str] = (),
        roles: Collection[str] = (),
        *,
        dpop: str | None = None,
        method: str = "GET",
        path: str = "/",
    ) -> AccessClaims:
        """Check an Authorization header: every scope in `scopes`, and one of `roles` if given.

        `Bearer <token>`, or `DPoP <token>` with the request's `DPoP` proof header (`dpop`), its
        method and path (RFC 9449 section 7.1). A DPoP-bound token is accepted only that way.
        Raises AuthenticationFailed with the RFC 6750 / RFC 9449 status and challenge.
        """
        scheme: str | None = None
        bound = False
        try:
            parsed = parse_authorization(authorization)
            if parsed is None:
                raise AuthenticationFailed(401, None, "Authentication required.", self.realm)
            scheme, token = parsed
            claims = await self.verify(token)
            bound = claims.jkt is not None
            await self._sender_check(scheme, token, claims, dpop, method, path)
        except (TokenError, MalformedToken, InvalidProof) as exc:
            self.stats.refused += 1
            log.debug("access token refused: %s", exc.reason)
            proof_refused = isinstance(exc, InvalidProof)
            raise AuthenticationFailed(
                401,
                "invalid_dpop_proof" if proof_refused else "invalid_token",
                "The DPoP proof is invalid."
                if proof_refused
                else "The access token is invalid, expired or revoked.",
                self.realm,
                dpop=scheme == DPOP or bound,
            ) from None
        # RFC 6750 section 3.1: insufficient_scope is a 403 naming the scope needed.
        if not set(scopes) <= claims.scopes or (roles and not set(roles) & set(claims.roles)):
            raise AuthenticationFailed(
                403,
                "insufficient_scope",
                "The access token does not grant this.",
                self.realm,
                scope=" ".join(sorted(scopes)),
                dpop=scheme == DPOP,
            )
        return claims

    async def _sender_check(
        self,
        scheme: str,
        token: str,
        claims: AccessClaims,
        proof: str | None,
        method: str,
        path: str,
    ) -> None:
        """RFC 9449 section 7: a bound token only under the DPoP scheme with a valid proof by its
        key (`ath` included, each proof once); an unbound one only as Bearer (section 4.3 step
        12: under DPoP there is no bound key for the proof's to match)."""
        if scheme != DPOP:
            if claims.jkt is not None:
                raise TokenError("a DPoP-bound token sent as a bearer token")
            return
        if claims.jkt is None:
            raise TokenError("an unbound token sent under the DPoP scheme")
        if proof is None:
            raise TokenError("no DPoP proof")
        if self.public_url is None:
            raise TokenError("DPoP needs the Verifier's public_url")
        now = self.clock()
        checked = verify_proof(
            proof,
            method=method,
            uri=self.public_url + path,
            now=now,
            max_age=self.dpop_max_age,
            leeway=self.policy.leeway,
            access_token=token,
        )
        if checked.jkt != claims.jkt:
            raise TokenError("the proof is by another key than the token's")
        ttl = replay_ttl(self.dpop_max_age, self.policy.leeway)
        if not await self.replay_cache.first_use(replay_key(checked), ttl, now):
            raise InvalidProof("jti replayed")

    def require(self, scopes: Collection[str] = (), roles: Collection[str] = ()) -> Any:
        """A FastAPI dependency: ``claims: AccessClaims = Depends(verifier.require(...))``.

        All of `scopes` are required; of `roles`, any one suffices (stack two dependencies
        to require two roles).
        """
        from authsvc.verifier.dependency import dependency  # FastAPI is an optional extra

        return dependency(self, tuple(scopes), tuple(roles))
