"""OAuth 2 clients (RFC 6749 section 2): registration and client authentication.

Public clients (SPAs, mobile apps) identify themselves by `client_id` only. Confidential clients
also present a secret, by `client_secret_basic` or `client_secret_post` (section 2.3.1). Secrets
are 256 random bits, so a keyed fast hash is enough: only HMAC-SHA256 digests are stored (under
the server's stored HMAC key, which a KEK rotation leaves as it is), compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.errors import Conflict, InvalidClient, NotFound, UnauthorizedClient
from authsvc.security.secrets import ServerSecrets
from authsvc.store.clients import ClientRepository
from authsvc.store.models import OAuthClient
from authsvc.store.repositories import SessionRepository

ClientType = Literal["public", "confidential"]
SUPPORTED_GRANTS = ("password", "refresh_token")
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


class ClientService:
    def __init__(self, settings: Settings, secrets: ServerSecrets) -> None:
        self.settings = settings
        self._secrets = secrets

    def _digest(self, secret: str) -> bytes:
        return hmac.new(self._secrets.hmac.client_secret, secret.encode(), hashlib.sha256).digest()

    async def create(
        self,
        db: AsyncSession,
        name: str,
        now: datetime,
        *,
        confidential: bool = False,
        audience: str | None = None,
        grant_types: Sequence[str] = SUPPORTED_GRANTS,
    ) -> NewClient:
        name = name.strip()
        if not name or len(name) > 255:
            raise ValueError("the client name must be 1 to 255 characters")
        unknown = set(grant_types) - set(SUPPORTED_GRANTS)
        if unknown or not grant_types:
            raise ValueError(f"grant types must be among {', '.join(SUPPORTED_GRANTS)}")
        secret = (
            CLIENT_SECRET_PREFIX
            + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
            if confidential
            else None
        )
        client = OAuthClient(
            client_id=secrets.token_urlsafe(16),
            name=name,
            client_type="confidential" if confidential else "public",
            secret_digest=self._digest(secret) if secret else None,
            audience=audience or None,
            grant_types=list(dict.fromkeys(grant_types)),
            created_at=now,
        )
        if not await ClientRepository(db).add(client):
            raise Conflict("A client with that id already exists.")
        return NewClient(client=client, secret=secret)

    async def list(self, db: AsyncSession) -> Sequence[OAuthClient]:
        return await ClientRepository(db).list()

    async def delete(self, db: AsyncSession, client_id: str, now: datetime) -> int:
        """Delete a client and revoke its sessions; returns how many sessions were revoked."""
        repo = ClientRepository(db)
        # Through SessionRepository.revoke, so the revocation feed hears of it too.
        revoked = await SessionRepository(db).revoke(
            await repo.live_session_ids(client_id),
            now,
            "client_deleted",
            tokens_valid_until=now + self.settings.access_token_horizon,
        )
        if not await repo.delete(client_id):
            raise NotFound("No such client.")
        return revoked

    async def authenticate(
        self, db: AsyncSession, creds: ClientCredentials, *, confidential_only: bool = False
    ) -> OAuthClient:
        """RFC 6749 section 2.3: who is calling. Every failure is the same invalid_client."""
        failure = InvalidClient(basic=creds.basic)
        if not creds.client_id or len(creds.client_id) > 64:
            raise failure
        client = await ClientRepository(db).get(creds.client_id)
        # Digest even for unknown clients so the answer takes the same time.
        presented = self._digest(creds.client_secret or "")
        if client is None:
            raise failure
        if client.is_confidential:
            if creds.client_secret is None or client.secret_digest is None:
                raise failure
            if not hmac.compare_digest(client.secret_digest, presented):
                raise failure
        elif creds.client_secret is not None or confidential_only:
            # A public client has no secret to present, and may not use confidential endpoints.
            raise failure
        return client

    @staticmethod
    def check_grant(client: OAuthClient, grant_type: str) -> None:
        if grant_type not in (client.grant_types or []):
            raise UnauthorizedClient()

    def audience_for(self, client: OAuthClient) -> str:
        return client.audience or self.settings.audience
