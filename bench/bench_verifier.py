"""authsvc.verifier throughput, in process (no server): first-seen tokens (full RS256 check) and
repeated tokens (verified-token cache), each against raw PyJWT decode measured in the same run.

    .venv/bin/python bench/bench_verifier.py [--quick]

The verifier runs as in production, revocation checks included: its feed is answered in process
with an empty page (httpx.MockTransport), so no network is involved.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from authsvc.security.keys import public_jwk
from authsvc.verifier import Verifier

ISSUER = "https://auth.bench"
AUDIENCE = "api.bench"


def make_tokens(count: int) -> tuple[list[str], dict[str, Any], rsa.RSAPublicKey]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = public_jwk(private.public_key())
    now = int(time.time())
    tokens = [
        jwt.encode(
            {
                "iss": ISSUER,
                "sub": str(uuid.uuid4()),
                "aud": AUDIENCE,
                "exp": now + 600,
                "iat": now,
                "nbf": now,
                "jti": uuid.uuid4().hex,
                "sid": str(uuid.uuid4()),
                "client_id": "bench",
                "scope": "api",
                "roles": ["user"],
            },
            private,
            algorithm="RS256",
            headers={"kid": jwk["kid"], "typ": "at+jwt"},
        )
        for _ in range(count)
    ]
    return tokens, {"keys": [jwk]}, private.public_key()


def pyjwt_rate(tokens: list[str], key: rsa.RSAPublicKey) -> float:
    """The baseline: PyJWT's pinned decode (signature and claims), key already parsed."""
    start = time.perf_counter()
    for token in tokens:
        jwt.decode(
            token,
            key,
            algorithms=["RS256"],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "nbf", "sub", "jti", "sid"]},
        )
    return len(tokens) / (time.perf_counter() - start)


def feed(_: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200, json={"revoked_jtis": [], "revoked_sids": [], "cursor": "c0", "poll_after": 5}
    )


async def verifier_rates(
    tokens: list[str], jwks: dict[str, Any], rounds: int
) -> tuple[float, float]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(feed)) as client:
        verifier = Verifier(
            issuer=ISSUER,
            audience=AUDIENCE,
            jwks=jwks,
            http_client=client,
            poll_interval=3600,
            cache_size=len(tokens),
        )
        async with verifier:
            start = time.perf_counter()
            for token in tokens:
                await verifier.verify(token)
            first = len(tokens) / (time.perf_counter() - start)
            start = time.perf_counter()
            for _ in range(rounds):
                for token in tokens:
                    await verifier.verify(token)
            repeated = rounds * len(tokens) / (time.perf_counter() - start)
        assert verifier.stats.signature_checks == len(tokens)
    return first, repeated


def best(measure: Callable[[], float], tries: int) -> float:
    return max(measure() for _ in range(tries))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tokens and tries (~3 s)")
    args = parser.parse_args()
    count, tries, rounds = (300, 2, 5) if args.quick else (5000, 5, 20)
    t0 = time.perf_counter()
    tokens, jwks, key = make_tokens(count)
    baseline = best(lambda: pyjwt_rate(tokens, key), tries)
    results = [asyncio.run(verifier_rates(tokens, jwks, rounds)) for _ in range(tries)]
    first = max(r[0] for r in results)
    repeated = max(r[1] for r in results)
    print(f"tokens: {count} distinct RS256 (2048-bit) access tokens, best of {tries} runs")
    print(f"pyjwt.decode (baseline)      {baseline:>10,.0f} tokens/s   1.00x")
    print(f"verifier, first-seen token   {first:>10,.0f} tokens/s   {first / baseline:.2f}x")
    print(f"verifier, repeated token     {repeated:>10,.0f} tokens/s   {repeated / baseline:.2f}x")
    print(f"(all checks incl. revocation lookups; {time.perf_counter() - t0:.1f} s total)")


if __name__ == "__main__":
    main()
