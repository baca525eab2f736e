"""Request and response bodies of the JSON API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class LoginRequest(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=False)

    username: str = Field(min_length=1, max_length=1024)
    password: str = Field(min_length=1, max_length=4096)


class RefreshRequest(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=8192)


class LogoutRequest(BaseModel):
    refresh_token: str | None = Field(None, min_length=1, max_length=8192)
    scope: Literal["local", "others", "global"] = "local"


class TokenResponse(BaseModel):
    access_token: str
    # RFC 6750 `Bearer`, or `DPoP` for a token bound to the request's DPoP key (RFC 9449 5).
    token_type: Literal["Bearer", "DPoP"] = "Bearer"  # noqa: S105 - a scheme, not a secret
    expires_in: int
    refresh_token: str
    refresh_expires_in: int


class MeResponse(BaseModel):
    id: uuid.UUID
    username: str
    roles: list[str]
    session_id: str
    scope: str


class ErrorResponse(BaseModel):
    error: str
    message: str


class OAuthErrorBody(BaseModel):
    """RFC 6749 section 5.2: the error body of the /oauth endpoints."""

    error: str
    error_description: str | None = None


class JWK(BaseModel):
    kty: str
    kid: str
    use: str
    alg: str
    n: str
    e: str


class JWKS(BaseModel):
    keys: list[JWK]


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class SessionInfo(BaseModel):
    id: uuid.UUID
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    ip: str | None
    user_agent: str | None
    client_id: str | None
    current: bool


class SessionsResponse(BaseModel):
    sessions: list[SessionInfo]


class PasswordChangeRequest(BaseModel):
    current_password: str = Field(min_length=1, max_length=4096)
    new_password: str = Field(min_length=1, max_length=4096)


class TotpEnrollment(BaseModel):
    secret: str
    otpauth_uri: str
    qr_svg: str


class TotpCode(BaseModel):
    code: str = Field(min_length=1, max_length=16)


class RecoveryCodes(BaseModel):
    recovery_codes: list[str]


def exactly_one_of(*fields: str) -> dict[str, Any]:
    """JSON Schema for "exactly one of these fields, not null": what the service checks (400
    invalid_request otherwise), said in the OpenAPI document so that clients and generators
    know it too."""
    return {
        "oneOf": [
            {"required": [name], "properties": {name: {"not": {"type": "null"}}}} for name in fields
        ]
    }


class SecondFactor(BaseModel):
    """A TOTP code or one of the recovery codes: exactly one of them."""

    model_config = ConfigDict(json_schema_extra=exactly_one_of("code", "recovery_code"))

    code: str | None = Field(None, min_length=1, max_length=16)
    recovery_code: str | None = Field(None, min_length=1, max_length=64)


class MfaVerifyRequest(SecondFactor):
    """The mfa_token of POST /auth/login, and exactly one of `code`, `recovery_code` and
    `credential` (a passkey's PublicKeyCredential from navigator.credentials.get(), as JSON,
    answering the options of POST /auth/mfa/passkey/options)."""

    model_config = ConfigDict(
        json_schema_extra=exactly_one_of("code", "recovery_code", "credential")
    )

    mfa_token: str = Field(min_length=1, max_length=256)
    credential: dict[str, Any] | None = None


class MfaToken(BaseModel):
    mfa_token: str = Field(min_length=1, max_length=256)


class MfaRequiredResponse(BaseModel):
    error: Literal["mfa_required"]
    message: str
    mfa_token: str
    methods: list[str]


class SignupRequest(BaseModel):
    username: str = Field(min_length=1, max_length=1024)
    email: str = Field(min_length=1, max_length=1024)
    password: str = Field(min_length=1, max_length=4096)


class EmailVerifyRequest(BaseModel):
    token: str = Field(min_length=1, max_length=256)


class ForgotByEmail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=1, max_length=1024)


class ForgotByUsername(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=1024)


# One of the two: the account's email address or its username.
PasswordForgotRequest = ForgotByEmail | ForgotByUsername


class PasswordResetRequest(BaseModel):
    token: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=1, max_length=4096)


class AcceptedResponse(BaseModel):
    """The one answer to a sign-up or a reset request, whatever exists."""

    status: Literal["accepted"] = "accepted"
    message: str


class PasskeyRegisterRequest(BaseModel):
    # The PublicKeyCredential from navigator.credentials.create(), as JSON (WebAuthn L3
    # section 5.1.8 toJSON: base64url members).
    credential: dict[str, Any]
    name: str | None = Field(None, max_length=64)


class PasskeyLoginRequest(BaseModel):
    # The PublicKeyCredential from navigator.credentials.get(), as JSON.
    credential: dict[str, Any]


class PasskeyInfo(BaseModel):
    id: uuid.UUID
    name: str
    created_at: datetime
    last_used_at: datetime | None
    transports: list[str]


class PasskeysResponse(BaseModel):
    passkeys: list[PasskeyInfo]
