"""The access-token rule, written once: what an access token needs besides its signature.

Its session is live and is the token's subject's, the subject is an active user, and its jti is
not denylisted. `access_statement` reads that user (id, username, roles), or nothing; it is
compiled once for asyncpg (the PostgreSQL fast lane, fastlane.py) and run as the same Core
statement in a request's session elsewhere (`access_user_in_session`).
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, bindparam, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.store.models import DeniedAccessToken, OAuthClient, Session, User
from authsvc.store.rules import CompiledStatement, for_asyncpg, session_live

_sessions: Table = Session.__table__  # type: ignore[assignment]
_users: Table = User.__table__  # type: ignore[assignment]
_denied: Table = DeniedAccessToken.__table__  # type: ignore[assignment]
_clients: Table = OAuthClient.__table__  # type: ignore[assignment]

_SESSION_ID = bindparam("ac_session_id", type_=_sessions.c.id.type)
_USER_ID = bindparam("ac_user_id", type_=_users.c.id.type)
_JTI = bindparam("ac_jti", type_=_denied.c.jti.type)
_NOW = bindparam("ac_now", type_=_sessions.c.expires_at.type)


def access_allowed() -> list[ColumnElement[bool]]:
    """The rule: session `ac_session_id` is live at `ac_now` and user `ac_user_id`'s, that user
    is active, and jti `ac_jti` is not denied."""
    return [
        _sessions.c.id == _SESSION_ID,
        _sessions.c.user_id == _USER_ID,
        *session_live(_NOW),
        _users.c.id == _sessions.c.user_id,
        _users.c.is_active.is_(True),
        jti_not_denied(),
    ]


def jti_not_denied() -> ColumnElement[bool]:
    """jti `ac_jti` is not on the denylist: part of every access rule."""
    return ~exists().where(_denied.c.jti == _JTI)


@functools.cache
def access_statement() -> Select[Any]:
    return select(_users.c.id, _users.c.username, _users.c.roles).where(*access_allowed())


@functools.cache
def asyncpg_access() -> CompiledStatement:
    return for_asyncpg(access_statement())


@dataclass(frozen=True, slots=True)
class AccessUser:
    id: uuid.UUID
    username: str
    roles: list[str]


def access_values(
    session_id: uuid.UUID, user_id: uuid.UUID, jti: str, now: datetime
) -> dict[str, Any]:
    return {"ac_session_id": session_id, "ac_user_id": user_id, "ac_jti": jti, "ac_now": now}


def access_user(row: Sequence[Any]) -> AccessUser:
    """The statement's row; roles arrive as JSON text from a raw driver, as a list from
    SQLAlchemy."""
    roles = json.loads(row[2]) if isinstance(row[2], str) else row[2]
    return AccessUser(id=row[0], username=row[1], roles=list(roles or []))


async def access_user_in_session(db: AsyncSession, values: dict[str, Any]) -> AccessUser | None:
    connection = await db.connection()
    row = (await connection.execute(access_statement(), values)).first()
    return None if row is None else access_user(row)


# -- a client's own token (client credentials, RFC 6749 section 4.4) -------------------------

_CLIENT_ID = bindparam("ac_client_id", type_=_clients.c.client_id.type)


@functools.cache
def client_access_statement() -> Select[Any]:
    """A client's own access token speaks for no user and has no session: it stands while the
    client `ac_client_id` is registered and jti `ac_jti` is not denied."""
    return select(_clients.c.client_id).where(_clients.c.client_id == _CLIENT_ID, jti_not_denied())


async def client_token_allowed(db: AsyncSession, client_id: str, jti: str) -> bool:
    connection = await db.connection()
    values = {"ac_client_id": client_id, "ac_jti": jti}
    return (await connection.execute(client_access_statement(), values)).first() is not None
