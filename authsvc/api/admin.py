"""/admin: the admin API, for an access token whose user has the `admin` role.

Routes parse, make one service call (services/admin.py, the same UserAdmin, ClientService and
KeyService the CLI uses) and answer; the `Admin` dependency admits the caller first, so a caller
without the role learns nothing from validation errors. Ids that are not UUIDs are 404, as on
/auth/sessions: a malformed id names nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status
from fastapi.responses import StreamingResponse

from authsvc.api.admin_schemas import (
    AdminSession,
    AdminSessions,
    AdminUser,
    AuditEventInfo,
    AuditEvents,
    ClientCreate,
    ClientCreated,
    ClientInfo,
    ClientList,
    ClientSecret,
    PasswordSet,
    SigningKeyInfo,
    SigningKeys,
    UserCreate,
    UserList,
    UserUpdate,
)
from authsvc.api.deps import Bearer, Context, ReadDB, State, WriteDB
from authsvc.api.errors import error_responses
from authsvc.errors import NO_STORE
from authsvc.services.admin import Actor, AuditFilter, UserChanges
from authsvc.services.clients import DEFAULT_GRANTS
from authsvc.services.keys import KeyInfo
from authsvc.store.models import OAuthClient, Session, User

router = APIRouter(prefix="/admin", tags=["admin"])


async def _admin(
    state: State, db: ReadDB, ctx: Context, token: Bearer, response: Response
) -> Actor:
    actor = await state.admin_access.authorize(db, token, ctx)
    response.headers.update(NO_STORE)
    return actor


Admin = Annotated[Actor, Depends(_admin)]

_ADMIN_ONLY = {403: "The caller lacks the admin role."}
_ERRORS = error_responses(400, 401, 403, 404, 503, descriptions=_ADMIN_ONLY)
_WRITE_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 503, descriptions=_ADMIN_ONLY)

Limit = Annotated[int, Query(ge=1, le=200, description="Page size.")]
Cursor = Annotated[
    str | None,
    Query(max_length=512, description="The `next_cursor` of the previous page."),
]
UserFilter = Annotated[
    str | None, Query(max_length=1024, description="A user's id or name (a deleted one's too).")
]
EventFilter = Annotated[str | None, Query(max_length=64, description="An event name.")]
Since = Annotated[
    datetime | None, Query(description="From this time on (ISO 8601; UTC if no zone).")
]
Until = Annotated[datetime | None, Query(description="Before this time.")]


def _no_content() -> Response:
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers=NO_STORE)


def _user(user: User) -> AdminUser:
    return AdminUser(
        id=user.id,
        username=user.username,
        email=user.email,
        roles=list(user.roles or []),
        active=user.is_active,
        created_at=user.created_at,
        updated_at=user.updated_at,
    )


def _session(s: Session) -> AdminSession:
    return AdminSession(
        id=s.id,
        user_id=s.user_id,
        created_at=s.created_at,
        last_used_at=s.last_used_at,
        expires_at=s.expires_at,
        ip=s.client_ip,
        user_agent=s.user_agent,
        client_id=s.client_id,
    )


def _client(c: OAuthClient) -> dict[str, Any]:
    return {
        "client_id": c.client_id,
        "name": c.name,
        "type": c.client_type,
        "audience": c.audience,
        "grant_types": list(c.grant_types or []),
        "redirect_uris": list(c.redirect_uris or []),
        "scopes": c.scopes,
        "first_party": c.first_party,
        "created_at": c.created_at,
    }


def _key(k: KeyInfo) -> SigningKeyInfo:
    return SigningKeyInfo(**vars(k))


# -- Users


@router.get("/users", response_model=UserList, responses=_ERRORS)
async def list_users(
    state: State,
    db: ReadDB,
    _: Admin,
    query: Annotated[
        str | None, Query(max_length=320, description="Part of a name or an email address.")
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> UserList:
    page = await state.admin.find(db, query, limit, cursor)
    return UserList(users=[_user(u) for u in page.users], next_cursor=page.next_cursor)


@router.post(
    "/users",
    response_model=AdminUser,
    status_code=status.HTTP_201_CREATED,
    responses=_WRITE_ERRORS,
)
async def create_user(
    body: UserCreate, state: State, db: WriteDB, ctx: Context, actor: Admin
) -> AdminUser:
    user = await state.admin.create(
        db, body.username, body.password, body.email, body.roles, ctx.now, actor.label
    )
    return _user(user)


@router.get("/users/{user_id}", response_model=AdminUser, responses=_ERRORS)
async def get_user(user_id: str, state: State, db: ReadDB, _: Admin) -> AdminUser:
    return _user(await state.users.by_id(db, user_id))


@router.patch("/users/{user_id}", response_model=AdminUser, responses=_WRITE_ERRORS)
async def update_user(
    user_id: str, body: UserUpdate, state: State, db: WriteDB, ctx: Context, actor: Admin
) -> AdminUser:
    changes = UserChanges(
        roles=body.roles,
        active=body.active,
        email=body.email,
        email_given="email" in body.model_fields_set,
    )
    user = await state.users.by_id(db, user_id)
    return _user(await state.admin.update(db, user, changes, ctx.now, actor.label))


@router.delete("/users/{user_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_ERRORS)
async def delete_user(
    user_id: str, state: State, db: WriteDB, ctx: Context, actor: Admin
) -> Response:
    user = await state.users.by_id(db, user_id)
    await state.admin.delete(db, user, ctx.now, actor.label)
    return _no_content()


@router.post(
    "/users/{user_id}/password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_WRITE_ERRORS,
)
async def set_password(
    user_id: str, body: PasswordSet, state: State, db: WriteDB, ctx: Context, actor: Admin
) -> Response:
    user = await state.users.by_id(db, user_id)
    await state.users.replace_password(db, user, body.password, ctx.now, actor.label)
    return _no_content()


@router.delete(
    "/users/{user_id}/mfa",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_WRITE_ERRORS,
)
async def reset_mfa(
    user_id: str, state: State, db: WriteDB, ctx: Context, actor: Admin
) -> Response:
    """Turns the user's TOTP second factor off (and drops their recovery codes); 400
    mfa_not_enabled if it was not on."""
    user = await state.users.by_id(db, user_id)
    await state.mfa.reset(db, user, actor.label, ctx)
    return _no_content()


# -- Sessions


@router.get("/users/{user_id}/sessions", response_model=AdminSessions, responses=_ERRORS)
async def user_sessions(
    user_id: str, state: State, db: ReadDB, ctx: Context, _: Admin
) -> AdminSessions:
    user = await state.users.by_id(db, user_id)
    sessions = await state.admin.sessions(db, user, ctx.now)
    return AdminSessions(sessions=[_session(s) for s in sessions])


@router.delete("/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_ERRORS)
async def revoke_session(
    session_id: str, state: State, db: WriteDB, ctx: Context, actor: Admin
) -> Response:
    await state.admin.revoke_session(db, session_id, ctx.now, actor.label)
    return _no_content()


# -- OAuth clients


@router.get("/clients", response_model=ClientList, responses=_ERRORS)
async def list_clients(state: State, db: ReadDB, _: Admin) -> ClientList:
    clients = await state.clients.list(db)
    return ClientList(clients=[ClientInfo(**_client(c)) for c in clients])


@router.post(
    "/clients",
    response_model=ClientCreated,
    status_code=status.HTTP_201_CREATED,
    responses=_WRITE_ERRORS,
)
async def create_client(
    body: ClientCreate, state: State, db: WriteDB, ctx: Context, actor: Admin
) -> ClientCreated:
    made = await state.clients.create(
        db,
        body.name,
        ctx.now,
        confidential=body.confidential,
        audience=body.audience,
        grant_types=body.grant_types or DEFAULT_GRANTS,
        redirect_uris=body.redirect_uris,
        scopes=body.scopes,
        first_party=body.first_party,
        actor=actor.label,
    )
    return ClientCreated(**_client(made.client), client_secret=made.secret)


@router.delete("/clients/{client_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_ERRORS)
async def delete_client(
    client_id: str, state: State, db: WriteDB, ctx: Context, actor: Admin
) -> Response:
    await state.clients.delete(db, client_id, ctx.now, actor=actor.label)
    return _no_content()


@router.post("/clients/{client_id}/secret", response_model=ClientSecret, responses=_WRITE_ERRORS)
async def rotate_client_secret(
    client_id: str, state: State, db: WriteDB, ctx: Context, actor: Admin
) -> ClientSecret:
    made = await state.clients.rotate_secret(db, client_id, ctx.now, actor=actor.label)
    assert made.secret is not None
    return ClientSecret(client_id=made.client.client_id, client_secret=made.secret)


# -- Signing keys


@router.get("/keys", response_model=SigningKeys, responses=_ERRORS)
async def list_keys(state: State, db: ReadDB, ctx: Context, _: Admin) -> SigningKeys:
    return SigningKeys(keys=[_key(k) for k in await state.keys.list(db, ctx.now)])


@router.post(
    "/keys/rotate",
    response_model=SigningKeyInfo,
    status_code=status.HTTP_201_CREATED,
    responses=_ERRORS,
)
async def rotate_key(state: State, db: WriteDB, ctx: Context, actor: Admin) -> SigningKeyInfo:
    return _key(await state.keys.rotate(db, ctx.now, actor=actor.label))


# -- The audit trail


@router.get("/audit", response_model=AuditEvents, responses=_ERRORS)
async def audit_events(
    state: State,
    db: ReadDB,
    _: Admin,
    user: UserFilter = None,
    event: EventFilter = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> AuditEvents:
    where = AuditFilter(user=user, event=event, since=since, until=until)
    page = await state.admin.audit(db, where, limit, cursor)
    return AuditEvents(
        events=[AuditEventInfo(**e) for e in page.events], next_cursor=page.next_cursor
    )


@router.get(
    "/audit/export",
    response_class=StreamingResponse,
    responses={
        **_ERRORS,
        200: {
            "content": {"application/x-ndjson": {"schema": AuditEventInfo.model_json_schema()}},
            "description": "Every matching event, newest first, one JSON object per line.",
        },
    },
)
async def export_audit(
    state: State,
    _: Admin,
    user: UserFilter = None,
    event: EventFilter = None,
    since: Since = None,
    until: Until = None,
) -> StreamingResponse:
    where = AuditFilter(user=user, event=event, since=since, until=until)
    return StreamingResponse(
        state.admin.export_audit(where),
        media_type="application/x-ndjson",
        headers={**NO_STORE, "Content-Disposition": 'attachment; filename="audit.jsonl"'},
    )
