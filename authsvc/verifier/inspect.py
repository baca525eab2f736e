"""`authsvc token inspect`: decode a token and show the verdict of every check, one by one.

Offline by design: it reads the JWKS from a file or URL and the revocation feed from the
configured authsvc (plain GETs); the token itself is never sent anywhere.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import rsa

from authsvc.jose.access_token import claim_problems, header_problems
from authsvc.jose.jws import (
    ALGORITHM,
    CompactJWS,
    MalformedToken,
    decode_compact,
    verify_signature,
)
from authsvc.verifier.jwks import parse_jwks

OK, FAIL, SKIP = "ok", "FAIL", "skip"
_TIME_CLAIMS = ("exp", "nbf", "iat")


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str


@dataclass
class Inspection:
    header: dict[str, Any] | None = None
    claims: dict[str, Any] | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        verified = any(c.name == "signature" and c.status == OK for c in self.checks)
        return verified and not any(c.status == FAIL for c in self.checks)

    def add(self, name: str, status: str, detail: str) -> None:
        self.checks.append(Check(name, status, detail))


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


def relative(ts: float, now: float) -> str:
    delta = ts - now
    span = abs(delta)
    text = (
        f"{span:.0f}s"
        if span < 120
        else f"{span / 60:.0f}m"
        if span < 7200
        else f"{span / 3600:.1f}h"
    )
    return f"in {text}" if delta >= 0 else f"{text} ago"


async def _load_jwks(source: str, client: httpx.AsyncClient) -> Mapping[str, Any]:
    path = Path(source)
    if not source.startswith(("http://", "https://")):
        loaded: Mapping[str, Any] = json.loads(await asyncio.to_thread(path.read_text))
        return loaded
    response = await client.get(source)
    response.raise_for_status()
    fetched: Mapping[str, Any] = response.json()
    return fetched


async def _revoked(feed_url: str, client: httpx.AsyncClient) -> tuple[set[str], set[str]]:
    jtis: set[str] = set()
    sids: set[str] = set()
    params: dict[str, str] = {}
    for _ in range(100):  # the first poll returns every live entry, in pages
        response = await client.get(feed_url, params=params)
        response.raise_for_status()
        body = response.json()
        jtis.update(e["jti"] for e in body["revoked_jtis"])
        sids.update(e["sid"] for e in body["revoked_sids"])
        params = {"since": body["cursor"]}
        if body.get("poll_after", 0) != 0:
            break
    return jtis, sids


def _signature_ok(parsed: CompactJWS, key: rsa.RSAPublicKey) -> bool:
    try:
        verify_signature(parsed, key)
    except (MalformedToken, InvalidSignature):
        return False
    return True


async def inspect_token(
    token: str,
    *,
    issuer: str,
    audience: str,
    leeway: float,
    jwks_source: str,
    feed_url: str | None,
    now: float,
    client: httpx.AsyncClient,
) -> Inspection:
    report = Inspection()
    try:
        parsed = decode_compact(token.strip())
    except MalformedToken as exc:
        report.add("format", FAIL, f"not an authsvc access token: {exc.reason}")
        return report
    report.header = parsed.header
    try:
        report.claims = parsed.claims()
    except MalformedToken as exc:
        report.add("format", FAIL, f"payload: {exc.reason}")
    header_failures = header_problems(parsed.header)
    kid = parsed.header.get("kid")

    # Signature and kid.
    try:
        keys = parse_jwks(await _load_jwks(jwks_source, client))
    except (OSError, ValueError, httpx.HTTPError) as exc:
        report.add("signature", SKIP, f"cannot load the JWKS from {jwks_source}: {exc}")
    else:
        key = keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            known = ", ".join(sorted(keys)) or "none"
            report.add("signature", FAIL, f"kid {kid!r} is not in the JWKS (known: {known})")
        elif parsed.header.get("alg") != ALGORITHM:
            report.add("signature", FAIL, "not checked: the algorithm is not RS256")
        elif _signature_ok(parsed, key):
            report.add("signature", OK, f"RS256 signature verifies with kid {kid}")
        else:
            report.add("signature", FAIL, f"RS256 signature does not verify with kid {kid}")

    for name, ok_detail in (
        ("alg", "RS256"),
        ("typ", str(parsed.header.get("typ"))),
        ("header", "only alg, typ, kid"),
    ):
        problem = header_failures.get(name)
        report.add(name, FAIL if problem else OK, problem or ok_detail)

    claims = report.claims
    if claims is None:
        return report
    problems = claim_problems(
        claims, issuer=issuer.rstrip("/"), audience=audience, leeway=leeway, now=now
    )
    for name in ("iss", "aud"):
        problem = problems.get(name)
        report.add(name, FAIL if problem else OK, problem or str(claims.get(name)))
    for name in _TIME_CLAIMS:
        value = claims.get(name)
        when = (
            f"{iso(value)} ({relative(value, now)})"
            if isinstance(value, int | float) and math.isfinite(value)
            else "absent"
        )
        report.add(name, FAIL if name in problems else OK, problems.get(name, when))
    for name in ("required", "types"):
        if name in problems:
            report.add(name, FAIL, problems[name])

    # Revocation: a GET of the public feed; the token stays here.
    if feed_url is None:
        report.add("revocation", SKIP, "not checked (--no-revocation)")
    else:
        try:
            jtis, sids = await _revoked(feed_url, client)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            report.add("revocation", SKIP, f"cannot read the revocation feed at {feed_url}: {exc}")
        else:
            if claims.get("jti") in jtis:
                report.add("revocation", FAIL, "the jti is denylisted (logged out)")
            elif claims.get("sid") in sids:
                report.add("revocation", FAIL, "its session (sid) is revoked")
            else:
                report.add("revocation", OK, f"neither jti nor sid is revoked ({feed_url})")
    return report


def render(report: Inspection, now: float) -> str:
    lines = ["Header:"]
    lines += ["  " + line for line in json.dumps(report.header, indent=2).splitlines()]
    if report.claims is not None:
        lines.append("Claims:")
        for name, value in report.claims.items():
            shown = json.dumps(value)
            if name in _TIME_CLAIMS and isinstance(value, int | float) and math.isfinite(value):
                shown += f"  ({iso(value)}, {relative(value, now)})"
            lines.append(f"  {name}: {shown}")
    lines.append("Checks:")
    lines += [f"  {c.status:<4}  {c.name:<10}  {c.detail}" for c in report.checks]
    verdict = "VALID" if report.valid else "INVALID"
    if report.valid and any(c.name == "revocation" and c.status == SKIP for c in report.checks):
        verdict += " (revocation not checked)"
    lines.append(f"Verdict: {verdict}")
    return "\n".join(lines)


def run(
    token: str,
    *,
    issuer: str,
    audience: str,
    leeway: float,
    authsvc_url: str,
    jwks: str | None,
    check_revocation: bool = True,
    echo: Callable[[str], None] = print,
    now: float | None = None,
) -> int:
    """Print the inspection; 0 if the token is valid, 1 if not."""
    base = authsvc_url.rstrip("/")
    at = datetime.now(UTC).timestamp() if now is None else now

    async def main() -> Inspection:
        async with httpx.AsyncClient(timeout=3.0) as client:
            return await inspect_token(
                token,
                issuer=issuer,
                audience=audience,
                leeway=leeway,
                jwks_source=jwks or f"{base}/.well-known/jwks.json",
                feed_url=f"{base}/auth/revocations" if check_revocation else None,
                now=at,
                client=client,
            )

    report = asyncio.run(main())
    echo(render(report, at))
    return 0 if report.valid else 1
