"""The client side of GET /auth/revocations: a local set of revoked jtis and sids, kept current
by polling with a cursor. Lookups are dictionary hits; entries are dropped once expired.

When authsvc cannot follow our cursor (its database was restored, pruned past us, or reset with
`authsvc feed reset`) it answers `resync: true` and serves every live entry again from the
start, paged, ending in a fresh cursor. We merge that snapshot into what we hold rather than
replace it: a revocation never un-happens, entries leave at their exp anyway, and a restored
database may have lost revocations that we did see (see docs/operations.md)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import httpx

log = logging.getLogger("authsvc.verifier")

_MAX_ID = 128


class FeedError(Exception):
    pass


class RevocationList:
    def __init__(self, url: str, client: httpx.AsyncClient, *, clock: Callable[[], float]) -> None:
        self.url = url
        self.client = client
        self.clock = clock
        self.jtis: dict[str, float] = {}
        self.sids: dict[str, float] = {}
        self.cursor: str | None = None
        self.last_success: float | None = None
        self.polls = 0
        self.failures = 0
        self.resyncs = 0

    def is_revoked(self, jti: str, sid: str) -> bool:
        return jti in self.jtis or sid in self.sids

    def expire(self, leeway: float) -> None:
        """Forget entries no token can outlive (their exp plus our leeway has passed)."""
        cutoff = self.clock() - leeway
        for table in (self.jtis, self.sids):
            for value in [v for v, exp in table.items() if exp < cutoff]:
                del table[value]

    def _apply(self, body: Mapping[str, Any]) -> tuple[str, float]:
        cursor, poll_after = body.get("cursor"), body.get("poll_after", 0)
        jtis, sids = body.get("revoked_jtis"), body.get("revoked_sids")
        if not isinstance(cursor, str) or not isinstance(jtis, list) or not isinstance(sids, list):
            raise FeedError("unexpected revocation feed answer")
        parsed: list[tuple[dict[str, float], str, float]] = []
        for entries, table, name in ((jtis, self.jtis, "jti"), (sids, self.sids, "sid")):
            for entry in entries:
                value = entry.get(name) if isinstance(entry, Mapping) else None
                exp = entry.get("exp") if isinstance(entry, Mapping) else None
                if (
                    not isinstance(value, str)
                    or len(value) > _MAX_ID
                    or isinstance(exp, bool)
                    or not isinstance(exp, int | float)
                ):
                    raise FeedError("malformed revocation feed entry")
                parsed.append((table, value, float(exp)))
        resync = body.get("resync", False) is True
        # Only after the whole page validated: a half-applied page must not move the cursor.
        if resync:
            self.resyncs += 1
            log.warning(
                "revocation feed asked for a resynchronisation (authsvc restored or reset); "
                "reloading every live revocation"
            )
        for table, value, exp in parsed:
            table[value] = max(exp, table.get(value, exp))
        self.cursor = cursor
        return cursor, float(poll_after) if isinstance(poll_after, int | float) else 0.0

    async def poll(self) -> float:
        """One poll; returns the server's poll_after hint (0: more entries are waiting)."""
        self.polls += 1
        params = {"since": self.cursor} if self.cursor is not None else {}
        try:
            response = await self.client.get(self.url, params=params)
            response.raise_for_status()
            _, poll_after = self._apply(response.json())
        except (httpx.HTTPError, ValueError, FeedError) as exc:
            self.failures += 1
            raise FeedError(f"revocation feed poll failed: {exc}") from exc
        self.last_success = self.clock()
        return poll_after
