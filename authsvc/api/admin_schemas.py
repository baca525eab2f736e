"""Request and response bodies of the admin API (api/admin.py)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Request(BaseModel):
    # A misspelt field is a 400, not a change silently not made.
    model_config = ConfigDict(extra="forbid")


class AdminUser(BaseModel):
    id: uuid.UUID
    username: str
    email: str | None
    roles: list[str]
    active: bool
    created_at: datetime
    updated_at: datetime


class UserList(BaseModel):
    users: list[AdminUser]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class UserCreate(_Request):
    username: str = Field(min_length=1, max_length=1024)
    password: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="Optional: without one the user cannot log in until a password is set.",
    )
    email: str | None = Field(None, min_length=1, max_length=1024)
    roles: list[str] = Field(default_factory=list, max_length=64)


class UserUpdate(_Request):
    roles: list[str] | None = Field(None, max_length=64, description="Replaces the roles.")
    active: bool | None = Field(
        None, description="false disables the user and revokes every session."
    )
    email: str | None = Field(None, min_length=1, max_length=1024, description="null clears it.")


class PasswordSet(_Request):
    password: str = Field(min_length=1, max_length=4096)


class AdminSession(BaseModel):
    id: uuid.UUID
    user_id: uuid.UUID
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    ip: str | None
    user_agent: str | None
    client_id: str | None


class AdminSessions(BaseModel):
    sessions: list[AdminSession]


class ClientInfo(BaseModel):
    client_id: str
    name: str
    type: Literal["public", "confidential"]
    audience: str | None
    grant_types: list[str]
    redirect_uris: list[str]
    scopes: list[str] | None
    first_party: bool
    created_at: datetime


class ClientList(BaseModel):
    clients: list[ClientInfo]


class ClientCreate(_Request):
    name: str = Field(min_length=1, max_length=255)
    confidential: bool = False
    audience: str | None = Field(None, min_length=1, max_length=255)
    grant_types: list[str] | None = Field(
        None,
        min_length=1,
        max_length=8,
        description="Default: authorization_code and refresh_token; password only when named.",
    )
    redirect_uris: list[str] = Field(default_factory=list, max_length=32)
    scopes: list[str] | None = Field(None, min_length=1, max_length=32)
    first_party: bool = True


class ClientCreated(ClientInfo):
    client_secret: str | None = Field(
        description="A confidential client's secret, shown only in this answer."
    )


class ClientSecret(BaseModel):
    client_id: str
    client_secret: str


class SigningKeyInfo(BaseModel):
    kid: str
    state: str = Field(description="published (not signing yet), active, or retired")
    created_at: datetime
    activates_at: datetime
    retires_at: datetime | None


class SigningKeys(BaseModel):
    keys: list[SigningKeyInfo]


class AuditEventInfo(BaseModel):
    id: int
    at: datetime
    event: str
    actor: str | None = Field(description="cli, self, scheduler, or user:<id> for an admin")
    user_id: uuid.UUID | None
    username: str | None
    session_id: uuid.UUID | None
    ip: str | None
    details: dict[str, Any] | None


class AuditEvents(BaseModel):
    events: list[AuditEventInfo]
    next_cursor: str | None
