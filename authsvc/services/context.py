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
