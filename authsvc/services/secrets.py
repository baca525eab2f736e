"""What is stored under the key-encryption key (KEK): the server's HMAC keys, loaded (or made)
at start-up, the signing keys' private parts and users' TOTP secrets; checking that all of it
decrypts with the KEK ring, and re-encrypting all of it under the current KEK (`authsvc keys
rewrap`)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.security.secrets import (
    HmacKeys,
    KeyEncryptionKeys,
    ServerSecrets,
    UnreadableSecret,
)
from authsvc.services import audit
from authsvc.store.db import Database
from authsvc.store.mfa import TotpRepository
from authsvc.store.secrets import EncryptedKeyRepository, ServerSecretRepository

log = logging.getLogger("authsvc.secrets")


SIGNING_KEY = "signing key"
SERVER_SECRET = "server secret"  # noqa: S105 - a label
TOTP_SECRET = "TOTP secret of user"  # noqa: S105 - a label


@dataclass(frozen=True)
class _Stored:
    kind: str  # SIGNING_KEY or SERVER_SECRET
    name: str
    blob: bytes

    @property
    def what(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass
class RewrapReport:
    """What `rewrap` re-encrypted under the current KEK, and what was under it already."""

    rewrapped: list[str] = field(default_factory=list)
    current: list[str] = field(default_factory=list)


async def kek_to_write(db: AsyncSession, keks: KeyEncryptionKeys) -> int:
    """Which KEK of the ring a new secret (a signing key, a TOTP secret) is written under: the
    one the server's HMAC keys are stored under, 0 (the current KEK) while there are none.

    During a KEK rotation that is still the previous KEK, until `keys rewrap` moves everything
    to the new one: processes not yet restarted with the new KEK can read what others write
    meanwhile, and once rewrap has run, every process has the new KEK (the rotation's order),
    so what is written from then on survives dropping the previous one. Takes the lock rewrap
    takes, so no rewrap passes between this choice and the caller's write."""
    repo = ServerSecretRepository(db)
    await repo.serialise()
    stored = await repo.all()
    if not stored:
        return 0
    name = min(stored)
    index = keks.index_of(stored[name])
    if index is None:
        raise UnreadableSecret(f"{SERVER_SECRET} {name}")
    return index


class SecretService:
    def __init__(self, secrets: ServerSecrets) -> None:
        self.secrets = secrets

    async def load(self, database: Database, now: datetime) -> HmacKeys:
        """Read the HMAC keys (making them on first start) and put them to use.

        Several processes may start at once: the first to take the lock writes the keys, the
        others wait for it and read what it wrote. A database an earlier version used keeps the
        keys that version derived from its KEK, so that its refresh tokens and client secrets
        stay valid; a new database gets random keys."""
        async with database.read() as db:
            stored = await ServerSecretRepository(db).all()
        if not set(HmacKeys.NAMES) <= set(stored):
            async with database.transaction() as db:
                stored = await self._create(db, now)
        keys = HmacKeys.from_named(
            {
                name: self.secrets.keks.read(stored[name], f"{SERVER_SECRET} {name}")
                for name in HmacKeys.NAMES
            }
        )
        self.secrets.use(keys)
        return keys

    async def _create(self, db: AsyncSession, now: datetime) -> dict[str, bytes]:
        repo = ServerSecretRepository(db)
        under = await kek_to_write(db, self.secrets.keks)
        stored = await repo.all()  # another process may have made them while we waited
        missing = sorted(set(HmacKeys.NAMES) - set(stored))
        if missing:
            values = (await self._initial_keys(db)).named()
            made = {name: self.secrets.keks.fernet(under).encrypt(values[name]) for name in missing}
            await repo.add(made, now)
            stored.update(made)
        return stored

    async def _initial_keys(self, db: AsyncSession) -> HmacKeys:
        if not await ServerSecretRepository(db).used_before():
            return HmacKeys.generate()
        # The KEK an earlier version derived its keys from: the one its signing keys were
        # written under (the ring may already hold a newer current KEK).
        keks = self.secrets.keks
        for kid, blob in await EncryptedKeyRepository(db).all():
            index = keks.index_of(blob)
            if index is None:
                raise UnreadableSecret(f"{SIGNING_KEY} {kid}")
            log.warning(
                "kept the HMAC keys derived from the key-encryption key in use until now, so "
                "refresh tokens and client secrets issued before stay valid"
            )
            return keks.derived_hmac_keys(index)
        return keks.derived_hmac_keys(0)

    async def check(self, db: AsyncSession) -> None:
        """Refuse (UnreadableSecret) anything stored that no KEK in the ring decrypts."""
        await self._everything(db)

    async def rewrap(
        self, db: AsyncSession, now: datetime, actor: str | None = None
    ) -> RewrapReport:
        """Re-encrypt under the current KEK everything stored under a previous one. Nothing is
        written unless everything decrypts; afterwards the previous KEKs can be dropped."""
        keks = self.secrets.keks
        report = RewrapReport()
        # One at a time with key creation and other rewraps (PostgreSQL's advisory lock).
        await ServerSecretRepository(db).serialise()
        for item in await self._everything(db):
            if keks.index_of(item.blob) == 0:
                report.current.append(item.what)
                continue
            blob = keks.rewrap(item.blob)
            if item.kind == SIGNING_KEY:
                await EncryptedKeyRepository(db).replace(item.name, blob)
            elif item.kind == TOTP_SECRET:
                await TotpRepository(db).replace_sealed(uuid.UUID(item.name), blob)
            else:
                await ServerSecretRepository(db).replace(item.name, blob)
            report.rewrapped.append(item.what)
        if report.rewrapped:
            await audit.record(
                db,
                now,
                audit.Entry(
                    audit.KEK_REWRAPPED, actor=actor, details={"rewrapped": report.rewrapped}
                ),
            )
        return report

    async def _everything(self, db: AsyncSession) -> list[_Stored]:
        found = [
            _Stored(SIGNING_KEY, kid, blob) for kid, blob in await EncryptedKeyRepository(db).all()
        ]
        stored = await ServerSecretRepository(db).all()
        found += [_Stored(SERVER_SECRET, name, stored[name]) for name in sorted(stored)]
        found += [
            _Stored(TOTP_SECRET, str(user_id), blob)
            for user_id, blob in await TotpRepository(db).all_sealed()
        ]
        for item in found:
            if self.secrets.keks.index_of(item.blob) is None:
                raise UnreadableSecret(item.what)
        return found
