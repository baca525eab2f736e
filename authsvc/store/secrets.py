"""SQL for what is stored under the key-encryption key: server secrets, and the signing keys'
private parts when they are re-encrypted."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import exists, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.store.db import MIGRATION_LOCK_ID
from authsvc.store.models import OAuthClient, RefreshToken, ServerSecret, SigningKey


class ServerSecretRepository:
    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def serialise(self) -> None:
        """Take turns with other processes creating or re-encrypting the secrets: PostgreSQL's
        advisory lock (the one migrations and key creation take); SQLite's write transactions
        (BEGIN IMMEDIATE) are serialised already."""
        if self.db.get_bind().dialect.name == "postgresql":
            await self.db.execute(
                text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_ID}
            )

    async def all(self) -> dict[str, bytes]:
        result = await self.db.execute(select(ServerSecret.name, ServerSecret.value_encrypted))
        return {name: bytes(value) for name, value in result.all()}

    async def add(self, values: dict[str, bytes], now: datetime) -> None:
        self.db.add_all(
            ServerSecret(name=name, value_encrypted=value, created_at=now)
            for name, value in values.items()
        )
        await self.db.flush()

    async def replace(self, name: str, value: bytes) -> None:
        await self.db.execute(
            update(ServerSecret).where(ServerSecret.name == name).values(value_encrypted=value)
        )

    async def used_before(self) -> bool:
        """Whether the database holds anything an earlier version digested or encrypted: then
        that version's KEK-derived HMAC keys are the ones to keep."""
        query = select(
            exists(select(SigningKey.kid)),
            exists(select(RefreshToken.id)),
            exists(select(OAuthClient.client_id).where(OAuthClient.secret_digest.is_not(None))),
        )
        return any((await self.db.execute(query)).one())


class EncryptedKeyRepository:
    """The signing keys' encrypted private parts, for re-encryption."""

    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def all(self) -> Sequence[tuple[str, bytes]]:
        result = await self.db.execute(
            select(SigningKey.kid, SigningKey.private_key_encrypted).order_by(
                SigningKey.activates_at, SigningKey.kid
            )
        )
        return [(kid, bytes(blob)) for kid, blob in result.all()]

    async def replace(self, kid: str, blob: bytes) -> None:
        await self.db.execute(
            update(SigningKey).where(SigningKey.kid == kid).values(private_key_encrypted=blob)
        )
