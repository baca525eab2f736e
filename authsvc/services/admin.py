"""The operator's user management, from the CLI and the admin API: find, create, change and
delete users, list and revoke sessions, read the audit trail; and who may use the admin API.

Every revocation goes through SessionRepository.revoke, as logout and disabling do: the session
ends, its access tokens are refused by /auth/me and introspection at once, and its `sid` goes on
the revocation feed so that resource servers refuse them within one poll. Every change is
written to the audit trail with its actor: `cli`, or `user:<id>` for an admin over HTTP.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.errors import Forbidden, InvalidRequest, InvalidUsername
from authsvc.services import audit
from authsvc.services.access import AccessService, Presented, is_client_token
from authsvc.services.clients import ADMIN_SCOPE
from authsvc.services.context import RequestContext
from authsvc.services.issuer import TokenIssuer
from authsvc.services.sessions import live_session
from authsvc.services.users import UserService, normalize_roles, normalize_username, printable
from authsvc.store.account import UserSessionRepository
from authsvc.store.admin import UserAdminRepository
from authsvc.store.db import Database
from authsvc.store.models import AuditEvent, Session, User
from authsvc.store.repositories import SessionRepository, UserRepository

ADMIN_ROLE = "admin"
DELETED = "user_deleted"
REVOKED = "revoked_by_admin"
EXPORT_BATCH = 500


# -- Who may use the admin API


@dataclass(frozen=True)
class Actor:
    """Who acts through the admin API; `label` is what the audit trail records as the actor."""

    label: str
    user_id: uuid.UUID | None


class AdminAccess:
    """The admin API's gate: an access token that passes the one access check
    (services/access.py) and whose user holds the admin role *now*. The roles come from the
    users row that check reads, not from the token's `roles` claim, so taking the role away
    shuts the admin out at once, not when their token expires."""

    def __init__(self, issuer: TokenIssuer, access: AccessService) -> None:
        self.issuer = issuer
        self.access = access

    async def authorize(self, db: AsyncSession, token: Presented, ctx: RequestContext) -> Actor:
        """The acting admin; InvalidToken (401) for a bad token, Forbidden (403) without the
        role. A client's own token (client credentials) acts as an admin with scope `admin`,
        which only a client registered with `--scope admin` can get."""
        claims = await self.access.verified(db, token, ctx.now)
        if is_client_token(claims):
            client_id = await self.access.client(db, claims)
            if ADMIN_SCOPE not in claims.scope.split():
                raise Forbidden("This needs the admin scope.")
            return Actor(f"client:{client_id}", None)
        principal = await self.access.principal(db, claims, ctx.now)
        if ADMIN_ROLE not in principal.roles:
            raise Forbidden("This needs the admin role.")
        return Actor(f"user:{principal.user_id}", principal.user_id)


# -- Opaque keyset cursors


def encode_cursor(values: dict[str, Any]) -> str:
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> dict[str, Any]:
    """The values a page ended with; InvalidRequest for anything we did not hand out."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest("The cursor is invalid.") from exc
    if not isinstance(values, dict):
        raise InvalidRequest("The cursor is invalid.")
    return values


def _user_cursor(cursor: str) -> str:
    after = decode_cursor(cursor).get("u")
    if not isinstance(after, str) or not printable(after):
        raise InvalidRequest("The cursor is invalid.")
    return after


def _audit_cursor(cursor: str) -> tuple[datetime, int]:
    values = decode_cursor(cursor)
    at, event_id = values.get("at"), values.get("id")
    if not isinstance(at, str) or not isinstance(event_id, int) or isinstance(event_id, bool):
        raise InvalidRequest("The cursor is invalid.")
    try:
        when = datetime.fromisoformat(at)
    except ValueError as exc:
        raise InvalidRequest("The cursor is invalid.") from exc
    return (when if when.tzinfo else when.replace(tzinfo=UTC)), event_id


def _instant(value: datetime | None) -> datetime | None:
    """A filter's time in UTC; one without a zone is taken as UTC."""
    if value is None or value.tzinfo is None:
        return None if value is None else value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01T00:00+01:00 has no UTC time
        raise InvalidRequest("The time is out of range.") from exc


# -- Results


@dataclass(frozen=True)
class RolesChange:
    user: User
    previous: list[str]
    sessions_revoked: int


@dataclass(frozen=True)
class UserPage:
    users: Sequence[User]
    next_cursor: str | None


@dataclass(frozen=True)
class UserChanges:
    """What a PATCH changes; None leaves a field alone (`email_given` tells a cleared email
    from an untouched one)."""

    roles: Sequence[str] | None = None
    active: bool | None = None
    email: str | None = None
    email_given: bool = False


@dataclass(frozen=True)
class AuditFilter:
    """`user` is a user id, or a name (a deleted user's too: the trail kept it)."""

    user: str | None = None
    event: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class AuditPage:
    events: list[dict[str, Any]]
    next_cursor: str | None


def audit_record(event: AuditEvent, names: dict[uuid.UUID, str]) -> dict[str, Any]:
    """One audit event as the API shows it and the export writes it. Events that recorded
    only a user's id (logout) get the user's name, a deleted user's as last recorded."""
    username = event.username
    if username is None and event.user_id is not None:
        username = names.get(event.user_id)
    return {
        "id": event.id,
        "at": event.at,
        "event": event.event,
        "actor": event.actor,
        "user_id": event.user_id,
        "username": username,
        "session_id": event.session_id,
        "ip": event.ip,
        "details": event.details,
    }


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        # As the JSON API writes times (pydantic): UTC with a Z.
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def audit_line(record: dict[str, Any]) -> bytes:
    """One line of the JSON-lines export."""
    return json.dumps(record, default=_json_default, separators=(",", ":")).encode() + b"\n"


class UserAdmin:
    def __init__(self, settings: Settings, database: Database, users: UserService) -> None:
        self.settings = settings
        self.database = database
        self.users = users

    async def _revoke(
        self, db: AsyncSession, ids: Sequence[uuid.UUID], now: datetime, reason: str
    ) -> int:
        return await SessionRepository(db).revoke(
            ids, now, reason, tokens_valid_until=now + self.settings.access_token_horizon
        )

    async def _revoke_all(self, db: AsyncSession, user: User, now: datetime, reason: str) -> int:
        live = await SessionRepository(db).live_ids_for_user(user.id, now)
        return await self._revoke(db, live, now, reason)

    # -- Users

    async def find(
        self, db: AsyncSession, query: str | None, limit: int, cursor: str | None
    ) -> UserPage:
        """Users whose name or email contains `query` (as each is normalised), by name, one
        page of `limit` after `cursor`."""
        after = _user_cursor(cursor) if cursor else None
        text = (query or "").strip()
        if not printable(text):
            return UserPage([], None)  # no name or address holds a control character
        users = await UserAdminRepository(db).search(
            text.casefold() or None, text.lower() or None, after, limit + 1
        )
        more = len(users) > limit
        page = users[:limit]
        return UserPage(page, encode_cursor({"u": page[-1].username}) if more else None)

    async def create(
        self,
        db: AsyncSession,
        username: str,
        password: str | None,
        email: str | None,
        roles: Sequence[str],
        now: datetime,
        actor: str,
    ) -> User:
        return await self.users.create(db, username, password, now, roles, actor, email=email)

    async def update(
        self, db: AsyncSession, user: User, changes: UserChanges, now: datetime, actor: str
    ) -> User:
        """Apply a PATCH; each change is audited as its own event. Disabling revokes every
        session of the user."""
        if changes.email_given:
            await self.users.set_email(db, user, changes.email, now, actor)
        if changes.roles is not None and normalize_roles(changes.roles) != (user.roles or []):
            await self.set_roles(db, user, changes.roles, now, actor)
        if changes.active is not None and changes.active != user.is_active:
            await self.users.switch_active(db, user, changes.active, now, actor)
        return user

    async def delete(self, db: AsyncSession, user: User, now: datetime, actor: str) -> int:
        """Delete a user for good; returns how many live sessions were revoked.

        The sessions are revoked first, so that the feed carries their `sid`s for as long as
        any of their access tokens could be presented; then the row goes, and with it (ON
        DELETE CASCADE) the sessions and refresh tokens. The name becomes free again; the audit
        trail keeps the user's events under the old id and name."""
        revoked = await self._revoke_all(db, user, now, DELETED)
        await audit.record(
            db,
            now,
            audit.Entry(
                audit.USER_DELETED,
                user.id,
                user.username,
                actor=actor,
                details={"sessions_revoked": revoked, "roles": list(user.roles or [])},
            ),
        )
        await UserAdminRepository(db).delete(user.id)
        return revoked

    async def set_roles(
        self,
        db: AsyncSession,
        user: User,
        roles: Sequence[str],
        now: datetime,
        actor: str,
        *,
        revoke_sessions: bool = False,
    ) -> RolesChange:
        """Replace a user's roles. Tokens minted from now on (a refresh included) carry the new
        ones; access tokens already out keep the old ones until they expire, unless
        `revoke_sessions` ends the user's sessions as well. (The admin API reads the admin
        role from the database, so it follows at once.)"""
        cleaned = normalize_roles(roles)
        previous = list(user.roles or [])
        user.roles = cleaned
        user.updated_at = now
        revoked = await self._revoke_all(db, user, now, REVOKED) if revoke_sessions else 0
        await audit.record(
            db,
            now,
            audit.Entry(
                audit.ROLES_CHANGED,
                user.id,
                user.username,
                actor=actor,
                details={"roles": cleaned, "previous": previous, "sessions_revoked": revoked},
            ),
        )
        await db.flush()
        return RolesChange(user, previous, revoked)

    # -- Sessions

    async def sessions(self, db: AsyncSession, user: User, now: datetime) -> Sequence[Session]:
        """A user's live sessions, newest first."""
        return await UserSessionRepository(db).live_for_user(user.id, now)

    async def revoke_session(
        self, db: AsyncSession, session_id: str, now: datetime, actor: str
    ) -> User:
        """Revoke one live session, whoever's it is; returns its user."""
        session = await live_session(db, session_id, now)
        user = await UserRepository(db).by_id(session.user_id)
        assert user is not None  # the foreign key (ON DELETE CASCADE) rules this out
        revoked = await self._revoke(db, [session.id], now, REVOKED)
        await _record_revoked(db, now, user, revoked, actor, session.id)
        return user

    async def revoke_sessions(self, db: AsyncSession, user: User, now: datetime, actor: str) -> int:
        """Revoke every live session of a user (who may log in again)."""
        revoked = await self._revoke_all(db, user, now, REVOKED)
        await _record_revoked(db, now, user, revoked, actor)
        return revoked

    # -- The audit trail

    async def _audit_subject(
        self, db: AsyncSession, user: str
    ) -> tuple[uuid.UUID | None, str | None] | None:
        """The (id, name) events about `user` are recorded under; None if no user was ever
        called that (so nothing matches)."""
        try:
            return uuid.UUID(user), None
        except ValueError:
            pass
        try:
            name = normalize_username(user)
        except InvalidUsername:
            return None
        # Events that recorded the user's id only (logout) match by id, also for a deleted user.
        found = await UserRepository(db).by_username(name)
        if found is not None:
            return found.id, name
        return await UserAdminRepository(db).recorded_user_id(name), name

    async def _audit_events(
        self,
        db: AsyncSession,
        where: AuditFilter,
        before: tuple[datetime, int] | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        if where.event is not None and not printable(where.event):
            return []  # no event is called that
        user_id = name = None
        if where.user is not None:
            subject = await self._audit_subject(db, where.user)
            if subject is None:
                return []
            user_id, name = subject
        events = await audit.find(
            db,
            user_id=user_id,
            username=name,
            event=where.event,
            since=_instant(where.since),
            until=_instant(where.until),
            before=before,
            limit=limit,
        )
        unnamed = {e.user_id for e in events if e.user_id is not None and not e.username}
        names = await UserAdminRepository(db).usernames(unnamed)
        return [audit_record(e, names) for e in events]

    async def audit(
        self, db: AsyncSession, where: AuditFilter, limit: int, cursor: str | None
    ) -> AuditPage:
        """The trail, newest first, one page of `limit` after `cursor`."""
        before = _audit_cursor(cursor) if cursor else None
        records = await self._audit_events(db, where, before, limit + 1)
        more = len(records) > limit
        page = records[:limit]
        last = page[-1] if more else None
        next_cursor = (
            encode_cursor({"at": last["at"].isoformat(), "id": last["id"]}) if last else None
        )
        return AuditPage(page, next_cursor)

    async def export_audit(self, where: AuditFilter) -> AsyncIterator[bytes]:
        """Every matching event as JSON lines, newest first, read in batches, each in its own
        short read transaction: an export of a long trail holds no transaction open while the
        client reads slowly."""
        before: tuple[datetime, int] | None = None
        while True:
            async with self.database.read() as db:
                records = await self._audit_events(db, where, before, EXPORT_BATCH)
            for record in records:
                yield audit_line(record)
            if len(records) < EXPORT_BATCH:
                return
            before = (records[-1]["at"], records[-1]["id"])

    # -- Names and ids for the CLI

    async def usernames(self, db: AsyncSession, user_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
        return await UserAdminRepository(db).usernames(user_ids)


async def _record_revoked(
    db: AsyncSession,
    now: datetime,
    user: User,
    revoked: int,
    actor: str,
    session_id: uuid.UUID | None = None,
) -> None:
    await audit.record(
        db,
        now,
        audit.Entry(
            audit.SESSIONS_REVOKED,
            user.id,
            user.username,
            session_id,
            actor=actor,
            details={"sessions_revoked": revoked},
        ),
    )
