"""Typed domain errors: what the services raise. api/errors.py renders them as HTTP responses.

Every error has a stable snake_case `code` that clients may branch on and a status. Messages are
for humans and never say which of several secret checks failed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

# A write that records the failure itself (an audit row for a failed login), given the request's
# session after everything else the request wrote was rolled back.
FailureWrite = Callable[[Any], Awaitable[None]]


class AuthError(Exception):
    code: ClassVar[str] = "server_error"
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "The server could not handle the request."
    # A security write made before the error (family revocation on reuse) must survive the
    # failed request: the request scope commits instead of rolling back when this is set.
    persist_writes: ClassVar[bool] = False

    def __init__(self, message: str | None = None, *, headers: dict[str, str] | None = None):
        self.message = message or self.default_message
        self.headers = dict(headers or {})
        self.failure_writes: list[FailureWrite] = []
        # Members the JSON body carries besides `error` and `message` (mfa_required's token).
        self.extra: dict[str, Any] = {}
        super().__init__(self.message)


class InvalidRequest(AuthError):
    code = "invalid_request"
    status = 400
    default_message = "The request is malformed."


class InvalidValue(InvalidRequest, ValueError):
    """A value a service refuses (a role with spaces, an empty client name): 400 over HTTP, and
    a ValueError, which the CLI reports as a usage error."""


class InvalidCredentials(AuthError):
    code = "invalid_credentials"
    status = 401
    default_message = "Invalid username or password."


class PasskeyInvalid(AuthError):
    """A passkey (WebAuthn) response that does not verify: unknown or spent challenge, wrong
    origin, bad signature, unknown credential, counter gone backwards. One answer for all."""

    code = "passkey_invalid"
    status = 401
    default_message = "The passkey could not be verified."


class PasskeyRegistrationInvalid(PasskeyInvalid):
    """The same at registration, where the caller is already authenticated: a bad request."""

    status = 400


class InvalidRefreshToken(AuthError):
    code = "invalid_refresh_token"
    status = 401
    default_message = "The refresh token is invalid, expired or revoked."


class RefreshTokenReused(AuthError):
    code = "refresh_token_reused"
    status = 401
    default_message = "The refresh token was already used; the session has been revoked."
    persist_writes = True


class InvalidToken(AuthError):
    """RFC 6750 section 3.1: a bad bearer token; always answered with WWW-Authenticate."""

    code = "invalid_token"
    status = 401
    default_message = "The access token is invalid, expired or revoked."

    def __init__(self, message: str | None = None, *, missing: bool = False):
        # With no credentials at all, RFC 6750 section 3.1 says to send no error code.
        challenge = 'Bearer realm="authsvc"' if missing else 'Bearer error="invalid_token"'
        super().__init__(message, headers={"WWW-Authenticate": challenge})


# RFC 9449 section 7.1: the algorithms a DPoP challenge names (authsvc.jose.dpop.ALGORITHMS).
DPOP_ALGS = "ES256 RS256"


class InvalidDPoPToken(InvalidToken):
    """RFC 9449 section 7.1: an access token refused at a resource endpoint where DPoP is in
    play (a DPoP-bound token sent as Bearer, a token not bound to the proof's key); the
    challenge is DPoP's."""

    def __init__(self, message: str | None = None):
        super().__init__(message)
        self.headers["WWW-Authenticate"] = f'DPoP error="{self.code}", algs="{DPOP_ALGS}"'


class ResourceDPoPProofRefused(InvalidDPoPToken):
    """RFC 9449 section 7.1: the DPoP proof sent with an access token is refused."""

    code = "invalid_dpop_proof"
    default_message = "The DPoP proof is invalid."


class InvalidDPoPProof(AuthError):
    """RFC 9449 section 5: the DPoP proof sent to an endpoint that issues tokens is refused
    (400 invalid_dpop_proof; in the RFC 6749 shape on /oauth)."""

    code = "invalid_dpop_proof"
    status = 400
    default_message = "The DPoP proof is invalid."


class UseDPoPNonce(InvalidDPoPProof):
    """RFC 9449 section 8: the token endpoint wants a proof with the server's nonce, which the
    DPoP-Nonce header carries."""

    code = "use_dpop_nonce"
    default_message = "Send a DPoP proof with the nonce in the DPoP-Nonce header."

    def __init__(self, nonce: str):
        super().__init__(headers={"DPoP-Nonce": nonce})


class ResourceUseDPoPNonce(ResourceDPoPProofRefused):
    """RFC 9449 section 9: a resource endpoint wants a proof with the server's nonce."""

    code = "use_dpop_nonce"
    default_message = "Send a DPoP proof with the nonce in the DPoP-Nonce header."

    def __init__(self, nonce: str):
        super().__init__()
        self.headers["DPoP-Nonce"] = nonce


class InsufficientScope(AuthError):
    code = "insufficient_scope"
    status = 403
    default_message = "The access token does not grant this."


class Forbidden(AuthError):
    """Authenticated, but not allowed: the admin API for a caller without the admin role."""

    code = "forbidden"
    status = 403
    default_message = "You are not allowed to do this."


class NotFound(AuthError):
    code = "not_found"
    status = 404
    default_message = "Not found."


class Conflict(AuthError):
    code = "conflict"
    status = 409
    default_message = "The resource already exists."


class UserExists(Conflict):
    code = "user_exists"
    default_message = "A user with that name already exists."


class EmailExists(Conflict):
    code = "email_exists"
    default_message = "A user with that email address already exists."


class InvalidEmail(AuthError):
    code = "invalid_email"
    status = 400
    default_message = "The email address is not valid."


class PasswordPolicyError(AuthError):
    code = "password_policy"
    status = 400
    default_message = "The password does not meet the policy."


class InvalidUsername(AuthError):
    code = "invalid_username"
    status = 400
    default_message = "The username is not allowed."


class MfaRequired(AuthError):
    """The password was right and the account has a second factor: no tokens yet. The body
    carries the mfa_token that POST /auth/mfa/verify takes with a code. The challenge row (and a
    rehashed password) commit although the request answers 401."""

    code = "mfa_required"
    status = 401
    default_message = "A second factor is required: send a code to /auth/mfa/verify."
    persist_writes = True

    def __init__(self, mfa_token: str, methods: list[str]):
        super().__init__()
        self.extra = {"mfa_token": mfa_token, "methods": methods}


class InvalidMfaToken(AuthError):
    code = "invalid_mfa_token"
    status = 401
    default_message = "The mfa_token is invalid, expired, already used or out of attempts."


class InvalidMfaCode(AuthError):
    """A wrong, reused or stale code: the attempt counters it raised commit with the failure."""

    code = "invalid_mfa_code"
    status = 401
    default_message = "The code is not valid."
    persist_writes = True


class MfaAlreadyEnabled(Conflict):
    code = "mfa_already_enabled"
    default_message = "Two-factor authentication is already on; disable it first."


class MfaNotEnabled(AuthError):
    code = "mfa_not_enabled"
    status = 400
    default_message = "Two-factor authentication is not on for this account."


class InvalidAccountLink(AuthError):
    """A mailed link's token that is unknown, expired, already used or no longer matches the
    account; which of these is not said. 401, like a refresh token that is no good: the token
    is the request's credential."""

    code = "invalid_link"
    status = 401
    default_message = "The link is invalid, expired or was already used."


class SignupDisabled(NotFound):
    """AUTHSVC_SIGNUP_ENABLED is off: the endpoint does not exist for clients."""

    code = "signup_disabled"
    default_message = "Sign-up is not enabled on this server."


class PasswordResetDisabled(NotFound):
    """No mail can go out (production without AUTHSVC_SMTP_URL)."""

    code = "password_reset_disabled"
    default_message = "Password reset by email is not enabled on this server."


class PayloadTooLarge(AuthError):
    code = "payload_too_large"
    status = 413
    default_message = "The request body is too large."


class HeadersTooLarge(AuthError):
    code = "headers_too_large"
    status = 431
    default_message = "The request headers are too large."


class RateLimited(AuthError):
    code = "rate_limited"
    status = 429
    default_message = "Too many requests; retry later."

    def __init__(self, retry_after: int, message: str | None = None):
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))})


class ServiceUnavailable(AuthError):
    code = "service_unavailable"
    status = 503
    default_message = "The service is temporarily unavailable; retry later."

    def __init__(self, message: str | None = None, retry_after: int = 2):
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class CSRFRejected(AuthError):
    """A cookie-carrying request without an allowed Origin and the X-Authsvc-CSRF header."""

    code = "csrf_rejected"
    status = 403
    default_message = "Cross-site request refused."


# -- OAuth 2 (RFC 6749 section 5.2): the /oauth endpoints answer {"error", "error_description"}.


class OAuthError(AuthError):
    """An RFC 6749 section 5.2 error; `code` is the RFC's `error` value."""

    code = "invalid_request"
    status = 400
    default_message = "The request is invalid."


class OAuthInvalidRequest(OAuthError):
    code = "invalid_request"


class InvalidClient(OAuthError):
    """RFC 6749 section 5.2: 401, with a Basic challenge when the client used that header."""

    code = "invalid_client"
    status = 401
    default_message = "Client authentication failed."

    def __init__(self, message: str | None = None, *, basic: bool = False):
        headers = {"WWW-Authenticate": 'Basic realm="authsvc"'} if basic else None
        super().__init__(message, headers=headers)


class InvalidGrant(OAuthError):
    code = "invalid_grant"
    default_message = "The grant is invalid, expired, revoked or was issued to another client."


class UnauthorizedClient(OAuthError):
    code = "unauthorized_client"
    default_message = "The client may not use this grant type."


class UnsupportedGrantType(OAuthError):
    code = "unsupported_grant_type"
    default_message = "The grant type is not supported."


class InvalidScope(OAuthError):
    code = "invalid_scope"
    default_message = "The requested scope is invalid or exceeds what was granted."


class TemporarilyUnavailable(OAuthError):
    code = "temporarily_unavailable"
    status = 503
    default_message = "The service is temporarily unavailable; retry later."


class UnsupportedResponseType(OAuthError):
    """RFC 6749 section 4.1.2.1: only `code` is answered."""

    code = "unsupported_response_type"
    default_message = "Only response_type=code is supported."


class AccessDenied(OAuthError):
    code = "access_denied"
    status = 403
    default_message = "The user or the server denied the request."


class LoginRequired(OAuthError):
    """OpenID Connect Core section 3.1.2.6: prompt=none and nobody is signed in."""

    code = "login_required"
    default_message = "The user is not signed in."


class ConsentRequired(OAuthError):
    """OpenID Connect Core section 3.1.2.6: prompt=none and the client needs consent."""

    code = "consent_required"
    default_message = "The user has to consent first."


class AuthorizationCodeReused(InvalidGrant):
    """RFC 6749 section 4.1.2: a code presented twice is refused and the session it opened is
    revoked; that revocation commits although the request fails."""

    default_message = "The authorization code was already used; its tokens have been revoked."
    persist_writes = True


class InvalidAuthorizationTarget(AuthError):
    """The authorization request names no registered client or a redirect URI that is not
    exactly one of its registered ones: answered with an error page, never a redirect
    (RFC 6749 section 4.1.2.1, RFC 9700 section 4.1)."""

    code = "invalid_request"
    status = 400
    default_message = "The application's sign-in request is not valid."
