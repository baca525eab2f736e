"""OAuth 2 clients (RFC 6749 section 2): registration and client authentication.

Public clients (SPAs, mobile apps) identify themselves by `client_id` only. Confidential clients
also present a secret, by `client_secret_basic` or `client_secret_post` (section 2.3.1). Secrets
are 256 random bits, so a keyed fast hash is enough: only HMAC-SHA256 digests are stored (under
the server's stored HMAC key, which a KEK rotation leaves as it is; security/opaque.py),
compared in constant time.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.errors import (
    Conflict,
    InvalidClient,
    InvalidRequest,
    InvalidScope,
    InvalidValue,
    NotFound,
    UnauthorizedClient,
)
from authsvc.security.opaque import OpaqueTokens
from authsvc.security.secrets import ServerSecrets
from authsvc.services import audit
from authsvc.services.context import RequestContext
from authsvc.services.issuer import Grant
from authsvc.services.users import printable
from authsvc.store.clients import ClientRepository
from authsvc.store.models import OAuthClient
from authsvc.store.repositories import SessionRepository
from authsvc.store.revocations import SID, RevocationEventRepository

ClientType = Literal["public", "confidential"]
# What a client may be registered for. RFC 9700 section 2.4: the password grant MUST NOT be
# used, so it is never a default; it stays for clients registered for it explicitly.
SUPPORTED_GRANTS = ("authorization_code", "refresh_token", "client_credentials", "password")
DEFAULT_GRANTS = ("authorization_code", "refresh_token")
# OpenID Connect Core section 5.4; always offered beside AUTHSVC_DEFAULT_SCOPE's.
OIDC_SCOPES = ("openid", "profile", "email")
# Opens /admin to a client-credentials token; only for clients registered with it by name.
ADMIN_SCOPE = "admin"
MAX_REDIRECT_URI = 2000
CLIENT_SECRET_PREFIX = "cs_"  # noqa: S105 - a prefix, not a secret


@dataclass(frozen=True)
class ClientCredentials:
    """What the request carried; `basic` says the client used the Authorization header."""

    client_id: str | None
    client_secret: str | None
    basic: bool = False


@dataclass(frozen=True)
class NewClient:
    client: OAuthClient
    secret: str | None  # shown once, never stored


def new_client_id() -> str:
    """128 random bits, base64url, starting with a letter or digit: an id that began with "-"
    would read as an option to a command line (`authsvc clients delete ID` among them)."""
    while True:
        client_id = secrets.token_urlsafe(16)
        if client_id[0].isalnum():
            return client_id


def _plausible(client_id: str) -> bool:
    """Could be a client id: not too long, no control characters (a path may carry %00)."""
    return 0 < len(client_id) <= 64 and printable(client_id)


class ClientService:
    def __init__(self, settings: Settings, secrets: ServerSecrets) -> None:
        self.settings = settings
        self.client_secrets = OpaqueTokens(CLIENT_SECRET_PREFIX, secrets, "client_secret")

    async def create(
        self,
        db: AsyncSession,
        name: str,
        now: datetime,
        *,
        confidential: bool = False,
        audience: str | None = None,
        grant_types: Sequence[str] = DEFAULT_GRANTS,
        redirect_uris: Sequence[str] = (),
        scopes: Sequence[str] | None = None,
        first_party: bool = True,
        actor: str,
    ) -> NewClient:
        name = name.strip()
        if not name or len(name) > 255 or not printable(name):
            raise InvalidValue("the client name must be 1 to 255 printable characters")
        unknown = set(grant_types) - set(SUPPORTED_GRANTS)
        if unknown or not grant_types:
            raise InvalidValue(f"grant types must be among {', '.join(SUPPORTED_GRANTS)}")
        for uri in redirect_uris:
            check_redirect_uri(uri)
        if "authorization_code" in grant_types and not redirect_uris:
            raise InvalidValue(
                "the authorization_code grant needs at least one redirect URI "
                "(--redirect-uri), or leave it out with --grant"
            )
        if "client_credentials" in grant_types and not confidential:
            # RFC 6749 section 4.4: only a client that can authenticate may act for itself.
            raise InvalidValue("the client_credentials grant is for confidential clients only")
        if scopes is not None:
            scopes = list(dict.fromkeys(scopes))
            if not scopes or any(not _SCOPE_TOKEN.fullmatch(scope) for scope in scopes):
                raise InvalidValue("scopes must be non-empty scope tokens (RFC 6749 section 3.3)")
        if audience is not None and (len(audience) > 255 or not printable(audience)):
            raise InvalidValue("the audience must be at most 255 printable characters")
        secret = self.client_secrets.new() if confidential else None
        client = OAuthClient(
            client_id=new_client_id(),
            name=name,
            client_type="confidential" if confidential else "public",
            secret_digest=self.client_secrets.digest(secret) if secret else None,
            audience=audience or None,
            grant_types=list(dict.fromkeys(grant_types)),
            redirect_uris=list(dict.fromkeys(redirect_uris)),
            scopes=scopes,
            first_party=first_party,
            created_at=now,
        )
        if not await ClientRepository(db).add(client):
            raise Conflict("A client with that id already exists.")
        await audit.record(
            db,
            now,
            audit.Entry(
                audit.CLIENT_CREATED,
                actor=actor,
                details={
                    "client_id": client.client_id,
                    "type": client.client_type,
                    "grant_types": client.grant_types,
                },
            ),
        )
        return NewClient(client=client, secret=secret)

    async def rotate_secret(
        self, db: AsyncSession, client_id: str, now: datetime, *, actor: str
    ) -> NewClient:
        """A new secret for a confidential client; the old one stops working at once."""
        repo = ClientRepository(db)
        client = await repo.get(client_id) if _plausible(client_id) else None
        if client is None:
            raise NotFound("No such client.")
        if not client.is_confidential:
            raise InvalidRequest("A public client has no secret.")
        secret = self.client_secrets.new()
        if not await repo.set_secret_digest(client_id, self.client_secrets.digest(secret)):
            raise NotFound("No such client.")
        await audit.record(
            db,
            now,
            audit.Entry(audit.CLIENT_SECRET_ROTATED, actor=actor, details={"client_id": client_id}),
        )
        return NewClient(client=client, secret=secret)

    async def list(self, db: AsyncSession) -> Sequence[OAuthClient]:
        return await ClientRepository(db).list()

    async def delete(self, db: AsyncSession, client_id: str, now: datetime, *, actor: str) -> int:
        """Delete a client and revoke its sessions; returns how many sessions were revoked."""
        if not _plausible(client_id):
            raise NotFound("No such client.")
        repo = ClientRepository(db)
        valid_until = now + self.settings.access_token_horizon
        # Through SessionRepository.revoke, so the revocation feed hears of it too.
        revoked = await SessionRepository(db).revoke(
            await repo.live_session_ids(client_id),
            now,
            "client_deleted",
            tokens_valid_until=valid_until,
        )
        client = await repo.get(client_id)
        if client is None or not await repo.delete(client_id):
            raise NotFound("No such client.")
        if "client_credentials" in (client.grant_types or []):
            # Its own tokens carry the client id as `sid` (TokenIssuer.sign_for_client):
            # resource servers following the feed refuse them from now on.
            feed = RevocationEventRepository(db)
            await feed.lock()
            await feed.append(SID, [client_id], valid_until, now)
        await audit.record(
            db,
            now,
            audit.Entry(
                audit.CLIENT_DELETED,
                actor=actor,
                details={"client_id": client_id, "sessions_revoked": revoked},
            ),
        )
        return revoked

    async def authenticate(
        self, db: AsyncSession, creds: ClientCredentials, *, confidential_only: bool = False
    ) -> OAuthClient:
        """RFC 6749 section 2.3: who is calling. Every failure is the same invalid_client."""
        failure = InvalidClient(basic=creds.basic)
        if not creds.client_id or len(creds.client_id) > 64:
            raise failure
        if creds.client_secret is not None and not self.client_secrets.well_formed(
            creds.client_secret
        ):
            raise failure
        client = await ClientRepository(db).get(creds.client_id)
        # Digest even for unknown clients so the answer takes the same time.
        presented = self.client_secrets.digest(creds.client_secret or "")
        if client is None:
            raise failure
        if client.is_confidential:
            if creds.client_secret is None or client.secret_digest is None:
                raise failure
            if not self.client_secrets.same_digest(client.secret_digest, presented):
                raise failure
        elif creds.client_secret is not None or confidential_only:
            # A public client has no secret to present, and may not use confidential endpoints.
            raise failure
        return client

    @staticmethod
    def check_grant(client: OAuthClient, grant_type: str) -> None:
        if grant_type not in (client.grant_types or []):
            raise UnauthorizedClient()

    def offered_scopes(self) -> set[str]:
        """Every scope the server knows: AUTHSVC_DEFAULT_SCOPE's, OpenID Connect's, `admin`."""
        return set(self.settings.default_scope.split()) | set(OIDC_SCOPES) | {ADMIN_SCOPE}

    def allowed_scopes(self, client: OAuthClient) -> set[str]:
        """The scopes a client may ask for: its registered ones, within the server's; without
        registered ones, every scope but `admin`, which must be named at registration."""
        offered = self.offered_scopes()
        if client.scopes is None:
            return offered - {ADMIN_SCOPE}
        return offered & set(client.scopes)

    def grantable_scope(self, client: OAuthClient, asked: str | None) -> str:
        """RFC 6749 section 3.3: the scope asked for, if the client may have all of it;
        without one, the server's default scope within the client's."""
        allowed = self.allowed_scopes(client)
        wanted = list(dict.fromkeys((asked or "").split()))
        if wanted:
            if not set(wanted) <= allowed:
                raise InvalidScope()
            return " ".join(wanted)
        default = [s for s in self.settings.default_scope.split() if s in allowed]
        if not default:
            raise InvalidScope()
        return " ".join(default)

    def grant(self, client: OAuthClient, scope: str | None, ctx: RequestContext) -> Grant:
        """What a grant's tokens carry for `client`: its audience, the scope, and the request's
        DPoP key (RFC 9449 section 5: the access token is bound to it, and a public client's
        new session too). Every grant handler builds its Grant here."""
        return Grant(
            client.client_id,
            self.audience_for(client),
            scope,
            jkt=ctx.dpop_jkt,
            bind_session=not client.is_confidential,
        )

    def audience_for(self, client: OAuthClient) -> str:
        return client.audience or self.settings.audience


# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def check_redirect_uri(uri: str) -> None:
    """What may be registered as a redirect URI (RFC 6749 section 3.1.2, RFC 8252 section 7,
    RFC 9700 section 2.1): an absolute URI without a fragment; https, or http on a loopback
    host for native apps, or a private-use scheme in reverse-domain form (`com.example.app:`).
    Matching is exact, so no wildcards."""
    if (
        not uri
        or len(uri) > MAX_REDIRECT_URI
        or uri != uri.strip()
        or any(ord(c) < 0x21 or ord(c) == 0x7F for c in uri)
    ):
        raise InvalidValue(f"redirect URI {uri!r} is not a URI")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if parts.fragment or "#" in uri:
        raise InvalidValue(f"redirect URI {uri!r} must not have a fragment")
    if "*" in uri:
        raise InvalidValue(f"redirect URI {uri!r}: wildcards are not allowed (matching is exact)")
    try:
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError:
        raise InvalidValue(f"redirect URI {uri!r} has an invalid port") from None
    if "@" in parts.netloc:
        raise InvalidValue(f"redirect URI {uri!r} must not carry user information")
    if scheme == "https":
        if not parts.hostname:
            raise InvalidValue(f"redirect URI {uri!r} has no host")
    elif scheme == "http":
        if parts.hostname not in _LOOPBACK:
            raise InvalidValue(
                f"redirect URI {uri!r}: plain http is allowed only on a loopback host "
                "(127.0.0.1, [::1], localhost); use https"
            )
    elif "." in scheme:
        pass  # a private-use scheme for a native app (RFC 8252 section 7.1)
    else:
        raise InvalidValue(
            f"redirect URI {uri!r} must be https, http on a loopback host, or a private-use "
            "scheme such as com.example.app:/callback"
        )
