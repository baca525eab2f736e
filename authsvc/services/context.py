"""Who is asking and when: the one required value every service entry point takes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class RequestContext:
    """The request's time and the client's address and user agent, as the HTTP layer found
    them (api/deps.py). Required, never defaulted: rate limiting buckets by `ip` and audit rows
    record it, so a missing address must be a visible choice, not a silent `None`."""

    now: datetime
    ip: str | None
    user_agent: str | None
    # The thumbprint (RFC 7638) of the key of the request's DPoP proof, once the proof has been
    # verified (services/dpop.py) at an endpoint that issues tokens; None without a proof.
    dpop_jkt: str | None = None


@dataclass(frozen=True, slots=True)
class DPoPRequest:
    """A DPoP proof as the HTTP layer found it (RFC 9449 section 4.1), not yet verified: the
    `DPoP` header, the request's method, and its URI as the server names itself (the issuer's
    base URL and the request path, never the Host header)."""

    proof: str
    method: str
    uri: str
