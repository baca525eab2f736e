"""What the store's rule statements share: the live-session condition, and compiling a
statement once for the asyncpg fast lane."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Table, or_
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

from authsvc.store.models import Session

_sessions: Table = Session.__table__  # type: ignore[assignment]


def session_key_matches(jkt: Any) -> ColumnElement[bool]:
    """A session bound to a DPoP key (RFC 9449 section 5: a public client's refresh tokens) is
    used only with a proof by that key: `jkt` (a value or a bound parameter) is the thumbprint
    of the request's proof key, NULL without a proof. An unbound session matches anything."""
    return or_(_sessions.c.dpop_jkt.is_(None), _sessions.c.dpop_jkt == jkt)


def session_live(now: Any) -> list[ColumnElement[bool]]:
    """A session that is neither revoked nor past its absolute lifetime at `now` (a value or a
    bound parameter)."""
    return [_sessions.c.revoked_at.is_(None), _sessions.c.expires_at > now]


@dataclass(frozen=True, slots=True)
class CompiledStatement:
    """A statement compiled for asyncpg: the `$n` SQL and its parameters' names in order."""

    sql: str
    names: tuple[str, ...]

    def args(self, values: dict[str, Any]) -> list[Any]:
        return [values[name] for name in self.names]


def for_asyncpg(statement: Any) -> CompiledStatement:
    compiled = statement.compile(dialect=asyncpg_dialect())  # type: ignore[no-untyped-call]
    return CompiledStatement(str(compiled), tuple(compiled.positiontup or ()))
