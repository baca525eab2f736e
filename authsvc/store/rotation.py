"""The live-refresh-token rule and the rotation statement, each written once.

A refresh token may rotate when it is unspent and unexpired, its session is live and was opened
by the client presenting it (None: the first-party JSON API), the request proves possession of
the DPoP key the session is bound to (if it is), and its user is active (`live_token`).
Rotating spends it, touches its session and records its successor, whose expiry is capped at
the session's end. A token that matches nothing is declined, with nothing written;
the caller then decides why (services/rotation.py).

PostgreSQL runs the rotation as one data-modifying statement (`rotate_statement`). SQLite has no
data-modifying CTEs: it selects the live token with the same condition and spends it by id,
inside one write transaction (`SQLiteRotation`). Both are compiled once per dialect, so the
fast lanes execute a cached SQL string and the transactional path the same Core statement.

Concurrent presentations of one token cannot both match: on PostgreSQL the loser's UPDATE waits
for the winner's row lock and re-checks `used_at IS NULL`; on SQLite writers are serialised (the
process's writer lock, then BEGIN IMMEDIATE). Row locks are taken in one order (the token row,
then its session row) on every path, so the paths cannot deadlock each other.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.store.models import RefreshToken, Session, User
from authsvc.store.rules import (
    CompiledStatement,
    for_asyncpg,
    session_key_matches,
    session_live,
)

_tokens: Table = RefreshToken.__table__  # type: ignore[assignment]
_sessions: Table = Session.__table__  # type: ignore[assignment]
_users: Table = User.__table__  # type: ignore[assignment]

# The statements' parameters. Prefixed: executing an UPDATE with a parameter named like one of
# its table's columns would also SET that column.
_DIGEST = bindparam("rt_digest", type_=_tokens.c.digest.type)
_NOW = bindparam("rt_now", type_=_tokens.c.issued_at.type)
_CLIENT_ID = bindparam("rt_client_id", type_=_sessions.c.client_id.type)
_SUCCESSOR = bindparam("rt_successor", type_=_tokens.c.digest.type)
_EXPIRES_AT = bindparam("rt_expires_at", type_=_tokens.c.expires_at.type)
# The thumbprint of the request's DPoP proof key (None: no proof).
_JKT = bindparam("rt_jkt", type_=_sessions.c.dpop_jkt.type)
# SQLite's second step: the token row the first one found.
_TOKEN_ID = bindparam("rt_token_id", type_=_tokens.c.id.type)
_SESSION_ID = bindparam("rt_session_id", type_=_tokens.c.session_id.type)


def live_token() -> list[ColumnElement[bool]]:
    """The rule: the token with digest `rt_digest` may rotate at `rt_now` for `rt_client_id`
    with a proof by the key `rt_jkt`."""
    return [*token_in_force(), _tokens.c.used_at.is_(None)]


def token_in_force() -> list[ColumnElement[bool]]:
    """The rule but for the token being unspent: what a declined token is checked against to
    tell reuse (in force, but spent) from a token that is simply invalid. A session bound to a
    DPoP key is in force only for a proof by that key: without it, a stolen token neither
    rotates, nor is answered in the grace window, nor revokes the session as a reuse."""
    return [
        _tokens.c.digest == _DIGEST,
        _tokens.c.expires_at > _NOW,
        _sessions.c.id == _tokens.c.session_id,
        *session_live(_NOW),
        _sessions.c.client_id.is_not_distinct_from(_CLIENT_ID),
        session_key_matches(_JKT),
        _users.c.id == _sessions.c.user_id,
        _users.c.is_active.is_(True),
    ]


@functools.cache
def live_token_statement() -> Select[Any]:
    """The live token itself, unspent (for introspection, RFC 7662): its issue and expiry
    times, its session's id, scope and client, its user's id and name."""
    return select(
        _tokens.c.issued_at,
        _tokens.c.expires_at,
        _sessions.c.id,
        _sessions.c.scope,
        _sessions.c.client_id,
        _users.c.id,
        _users.c.username,
    ).where(*live_token())


async def live_token_in_session(
    db: AsyncSession, digest: bytes, now: datetime, client_id: str | None
) -> Any:
    """live_token_statement's row in the request's session, or None. Without a DPoP key: the
    caller (introspection) is a confidential client, whose sessions are never key-bound."""
    connection = await db.connection()
    values = {"rt_digest": digest, "rt_now": now, "rt_client_id": client_id, "rt_jkt": None}
    return (await connection.execute(live_token_statement(), values)).first()


@functools.cache
def rotate_statement() -> Select[Any]:
    """PostgreSQL: spend the live token, touch its session and insert the successor, in one
    statement. One row (session id, user id, roles, scope, client id, successor's expiry, the
    session's amr), or none when the token is not live."""
    spent = (
        update(_tokens)
        .where(*live_token())
        .values(used_at=_NOW)
        .returning(
            _tokens.c.id,
            _tokens.c.session_id,
            _sessions.c.expires_at.label("session_expires_at"),
            _sessions.c.scope,
            _sessions.c.client_id,
            _users.c.id.label("user_id"),
            _users.c.roles,
            _sessions.c.amr,
        )
        .cte("spent")
    )
    touched = (
        update(_sessions)
        .where(_sessions.c.id == select(spent.c.session_id).scalar_subquery())
        .values(last_used_at=_NOW)
        .returning(_sessions.c.id)
        .cte("touched")
    )
    child = (
        insert(_tokens)
        .from_select(
            ["session_id", "parent_id", "digest", "issued_at", "expires_at"],
            select(
                spent.c.session_id,
                spent.c.id,
                _SUCCESSOR,
                _NOW,
                func.least(_EXPIRES_AT, spent.c.session_expires_at),
            ),
        )
        .returning(_tokens.c.parent_id, _tokens.c.expires_at)
        .cte("child")
    )
    return (
        select(
            spent.c.session_id,
            spent.c.user_id,
            spent.c.roles,
            spent.c.scope,
            spent.c.client_id,
            child.c.expires_at,
            spent.c.amr,
        )
        .join_from(spent, child, child.c.parent_id == spent.c.id)
        .add_cte(touched)
    )


@functools.cache
def asyncpg_rotation() -> CompiledStatement:
    return for_asyncpg(rotate_statement())


@dataclass(frozen=True, slots=True)
class FreshRotation:
    """What a rotation leaves the caller to sign."""

    session_id: uuid.UUID
    user_id: uuid.UUID
    roles: list[str]
    scope: str | None
    client_id: str | None
    expires_at: datetime  # the successor's
    amr: str | None  # the session's, as stored


def fresh_rotation(row: Sequence[Any]) -> FreshRotation:
    """A rotation's result row; roles arrive as JSON text from a raw driver, as a list from
    SQLAlchemy."""
    roles = json.loads(row[2]) if isinstance(row[2], str) else row[2]
    return FreshRotation(
        session_id=row[0],
        user_id=row[1],
        roles=list(roles or []),
        scope=row[3],
        client_id=row[4],
        expires_at=row[5],
        amr=row[6],
    )


def rotation_values(
    digest: bytes,
    successor_digest: bytes,
    now: datetime,
    client_id: str | None,
    max_expires_at: datetime,
    jkt: str | None,
) -> dict[str, Any]:
    """The statements' parameters: the presented token's digest, the time, the client it must
    belong to, the successor's digest and its uncapped expiry, the request's DPoP key."""
    return {
        "rt_digest": digest,
        "rt_now": now,
        "rt_client_id": client_id,
        "rt_jkt": jkt,
        "rt_successor": successor_digest,
        "rt_expires_at": max_expires_at,
    }


class RefreshLane(Protocol):
    """The rotation outside the request's session: FastLane (fastlane.py) on PostgreSQL,
    SQLiteLane (sqlitelane.py)."""

    async def rotate(self, values: dict[str, Any]) -> FreshRotation | None: ...


class _Cursor(Protocol):
    def fetchone(self) -> Any: ...


# A DB-API style execute with positional parameters (sqlite3's, or exec_driver_sql).
Execute = Callable[[str, tuple[Any, ...]], _Cursor]


class SQLiteRotation:
    """The rotation on SQLite, as SQL compiled for its dialect and run by whoever holds the
    write transaction: the SQLite lane on its own connection, or the request's session."""

    def __init__(self, dialect: Dialect) -> None:
        find = select(
            _tokens.c.id,
            _tokens.c.session_id,
            _sessions.c.expires_at,
            _sessions.c.scope,
            _sessions.c.client_id,
            _sessions.c.user_id,
            _users.c.roles,
            _sessions.c.amr,
        ).where(*live_token())
        spend = (
            update(_tokens)
            .where(_tokens.c.id == _TOKEN_ID, _tokens.c.used_at.is_(None))
            .values(used_at=_NOW)
        )
        touch = update(_sessions).where(_sessions.c.id == _SESSION_ID).values(last_used_at=_NOW)
        add = insert(_tokens).values(
            session_id=_SESSION_ID,
            parent_id=_TOKEN_ID,
            digest=_SUCCESSOR,
            issued_at=_NOW,
            expires_at=_EXPIRES_AT,
        )
        self._find, self._spend, self._touch, self._add = (
            _compiled(statement, dialect) for statement in (find, spend, touch, add)
        )
        # dialect_impl: the processors SQLAlchemy itself applies on SQLite (a type's own
        # bind_processor is the generic one, which converts nothing). Values are bound and read
        # through them, so the rows are exactly those the ORM writes.
        time, digest = (
            c.type.dialect_impl(dialect) for c in (_tokens.c.issued_at, _tokens.c.digest)
        )
        uuid_type = _sessions.c.id.type.dialect_impl(dialect)
        self._bind_time = _processor(time.bind_processor(dialect))
        self._bind_digest = _processor(digest.bind_processor(dialect))
        self._read_time = _processor(time.result_processor(dialect, None))
        self._read_uuid = _processor(uuid_type.result_processor(dialect, None))

    def bind(self, values: dict[str, Any]) -> dict[str, Any]:
        """rotation_values as SQLite stores them."""
        return {
            "rt_digest": self._bind_digest(values["rt_digest"]),
            "rt_now": self._bind_time(values["rt_now"]),
            "rt_client_id": values["rt_client_id"],
            "rt_jkt": values["rt_jkt"],
            "rt_successor": self._bind_digest(values["rt_successor"]),
            "rt_expires_at": self._bind_time(values["rt_expires_at"]),
        }

    def run(self, execute: Execute, bound: dict[str, Any]) -> tuple[Any, ...] | None:
        """In the caller's write transaction: the stored row of the rotation, or None having
        written nothing. Synchronous: it runs in the connection's thread."""
        sql, names = self._find
        row = execute(sql, tuple(bound[n] for n in names)).fetchone()
        if row is None:
            return None
        token_id, session_id, session_expires_at, scope, client_id, user_id, roles, amr = row
        step = {
            **bound,
            "rt_token_id": token_id,
            "rt_session_id": session_id,
            # Both in SQLAlchemy's fixed-width format: the string order is the time's.
            "rt_expires_at": min(bound["rt_expires_at"], session_expires_at),
        }
        # The spend cannot miss: the row was just read under the write lock.
        for sql, names in (self._spend, self._touch, self._add):
            execute(sql, tuple(step[n] for n in names))
        return session_id, user_id, roles, scope, client_id, step["rt_expires_at"], amr

    def fresh(self, stored: tuple[Any, ...]) -> FreshRotation:
        session_id, user_id, roles, scope, client_id, expires_at, amr = stored
        return FreshRotation(
            session_id=self._read_uuid(session_id),
            user_id=self._read_uuid(user_id),
            roles=(json.loads(roles) if roles else None) or [],
            scope=scope,
            client_id=client_id,
            expires_at=self._read_time(expires_at),
            amr=amr,
        )


_SQLITE_ROTATIONS: dict[type[Dialect], SQLiteRotation] = {}


def sqlite_rotation(dialect: Dialect) -> SQLiteRotation:
    """Compiled once per kind of SQLite dialect (there is one: aiosqlite's), with the first
    engine's dialect (its driver module gives the binary type's processor)."""
    kind = type(dialect)
    rotation = _SQLITE_ROTATIONS.get(kind)
    if rotation is None:
        rotation = _SQLITE_ROTATIONS[kind] = SQLiteRotation(dialect)
    return rotation


async def rotate_in_session(db: AsyncSession, values: dict[str, Any]) -> FreshRotation | None:
    """The rotation in the request's transaction (the path that then classifies a decline)."""
    connection = await db.connection()
    if connection.dialect.name == "postgresql":
        row = (await connection.execute(rotate_statement(), values)).first()
        return None if row is None else fresh_rotation(row)
    rotation = sqlite_rotation(connection.dialect)
    bound = rotation.bind(values)
    stored = await connection.run_sync(lambda sync: rotation.run(sync.exec_driver_sql, bound))
    return None if stored is None else rotation.fresh(stored)


_Compiled = tuple[str, tuple[str, ...]]


def _compiled(statement: Any, dialect: Dialect) -> _Compiled:
    compiled = statement.compile(dialect=dialect)
    return str(compiled), tuple(compiled.positiontup or ())


def _processor(processor: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    # SQLite stores these types converted (none of them is native to it).
    assert processor is not None
    return processor
