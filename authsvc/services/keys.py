"""Signing-key lifecycle: first key, rotation, and keeping each process's key ring current."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import Settings
from authsvc.security import keys as crypto
from authsvc.security.keys import KeyRing, LoadedKey
from authsvc.security.secrets import ServerSecrets
from authsvc.services import audit
from authsvc.services.secrets import kek_to_write
from authsvc.store.db import MIGRATION_LOCK_ID, Database
from authsvc.store.models import SigningKey
from authsvc.store.repositories import SigningKeyRepository

log = logging.getLogger("authsvc.keys")

_RenderedJWKS = tuple[KeyRing, datetime, datetime | None, bytes]


def _jwks_current(cached: _RenderedJWKS, ring: KeyRing, now: datetime) -> bool:
    """Whether a rendered JWKS (ring, rendered at, valid until, body) still describes `ring`."""
    return cached[0] is ring and cached[1] <= now and (cached[2] is None or now < cached[2])


@dataclass(frozen=True)
class KeyInfo:
    kid: str
    state: str
    created_at: datetime
    activates_at: datetime
    retires_at: datetime | None


class KeyService:
    def __init__(self, settings: Settings, secrets: ServerSecrets) -> None:
        self.settings = settings
        self.secrets = secrets
        # A key stays published this long after it stops signing: its last token's lifetime
        # plus the verifiers' leeway.
        self.unpublish_after = settings.access_token_horizon
        self._ring = KeyRing([], self.unpublish_after)
        self._parsed: dict[str, LoadedKey] = {}
        self._fingerprint: object = None
        self._loaded_at: datetime | None = None
        self._lock = asyncio.Lock()
        self._jwks: _RenderedJWKS | None = None
        self._reload_interval = timedelta(seconds=settings.key_reload_interval)

    @property
    def ring(self) -> KeyRing:
        return self._ring

    async def ring_at(self, db: AsyncSession, now: datetime) -> KeyRing:
        """The key ring, re-read from the database at most every key_reload_interval.

        Other processes rotate keys too; this is how they reach us without a restart.
        """
        if not self._fresh(now):
            async with self._lock:
                if not self._fresh(now):
                    await self.reload(db, now)
        return self._ring

    async def jwks_document(self, database: Database, now: datetime) -> bytes:
        """The JWKS (RFC 7517 section 5) as JSON bytes, rendered once per set of published
        keys, and read from the database only when the key ring is due for a reload: the
        endpoint is hit by every resource server and should cost no more than a static file."""
        ring = self._ring
        if not self._fresh(now):
            async with database.read() as db:
                ring = await self.ring_at(db, now)
        cached = self._jwks
        if cached is None or not _jwks_current(cached, ring, now):
            # The published set changes only when the ring does or a retired key's last token
            # expires: the body stays valid until the next such instant.
            ends = [
                k.retires_at + self.unpublish_after
                for k in ring.keys
                if k.retires_at is not None and k.retires_at + self.unpublish_after > now
            ]
            body = json.dumps(ring.jwks(now), separators=(",", ":")).encode()
            cached = self._jwks = (ring, now, min(ends, default=None), body)
        return cached[3]

    def cached_jwks(self, now: datetime) -> bytes | None:
        """The bytes jwks_document would return, when that needs neither a reload nor a
        re-render; else None. No I/O, so the edge of the HTTP stack can serve the JWKS with it
        (api/jwks_edge.py) and leave the rest to the route, which calls jwks_document."""
        cached = self._jwks
        if cached is None or not self._fresh(now) or not _jwks_current(cached, self._ring, now):
            return None
        return cached[3]

    def _fresh(self, now: datetime) -> bool:
        loaded = self._loaded_at
        return loaded is not None and loaded <= now < loaded + self._reload_interval

    async def reload(self, db: AsyncSession, now: datetime) -> KeyRing:
        repo = SigningKeyRepository(db)
        fingerprint = await repo.fingerprint()
        if fingerprint != self._fingerprint:
            rows = await repo.all()
            loaded = []
            for row in rows:
                cached = self._parsed.get(row.kid)
                # Decrypting and parsing a key is slow; do it once per kid, not per reload.
                private = cached.private if cached is not None else self._decrypt(row)
                loaded.append(
                    LoadedKey(
                        kid=row.kid,
                        private=private,
                        public=private.public_key(),
                        jwk=dict(row.public_jwk),
                        created_at=row.created_at,
                        activates_at=row.activates_at,
                        retires_at=row.retires_at,
                    )
                )
            self._parsed = {k.kid: k for k in loaded}
            self._ring = KeyRing(loaded, self.unpublish_after)
            self._fingerprint = fingerprint
        self._loaded_at = now
        return self._ring

    def _decrypt(self, row: SigningKey) -> rsa.RSAPrivateKey:
        pem = self.secrets.keks.read(row.private_key_encrypted, f"signing key {row.kid}")
        return crypto.load_private_key(pem)

    async def _serialise(self, db: AsyncSession) -> None:
        # Several processes starting (or rotating) at once take turns on PostgreSQL; SQLite
        # write transactions are serialised already.
        if db.get_bind().dialect.name == "postgresql":
            await db.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_ID})

    async def ensure_signing_key(self, db: AsyncSession, now: datetime) -> KeyRing:
        """Make the first key on first start (or if every key has retired)."""
        await self._serialise(db)
        ring = await self.reload(db, now)
        if ring.signing_key(now) is None and not any(
            k.state(now, self.unpublish_after) == "published" for k in ring.keys
        ):
            row = await self._create(db, now, activates_at=now)
            log.info("created signing key %s; it signs from now", row.kid)
            ring = await self.reload(db, now)
        return ring

    async def rotate(self, db: AsyncSession, now: datetime, actor: str | None = None) -> KeyInfo:
        """Publish a new key now; it signs after publish-ahead, when the current one retires."""
        await self._serialise(db)
        activates_at = now + timedelta(seconds=self.settings.publish_ahead)
        await SigningKeyRepository(db).retire_active(activates_at)
        row = await self._create(db, now, activates_at=activates_at)
        log.info(
            "rotated signing keys: published %s, it signs from %s",
            row.kid,
            row.activates_at.isoformat(timespec="seconds"),
        )
        await self.reload(db, now)
        await audit.record(
            db,
            now,
            audit.Entry(
                audit.KEY_ROTATED,
                actor=actor,
                details={"kid": row.kid, "activates_at": row.activates_at.isoformat()},
            ),
        )
        return KeyInfo(row.kid, "published", row.created_at, row.activates_at, row.retires_at)

    async def rotate_if_due(
        self, db: AsyncSession, now: datetime, interval: int, actor: str = "scheduler"
    ) -> KeyInfo | None:
        """Scheduled rotation: rotate when the newest key is `interval` seconds old.

        The age is read after taking the lock (PostgreSQL advisory lock; SQLite's BEGIN
        IMMEDIATE), so when several processes wake at once the first rotates and the others
        then see a fresh key and do nothing.
        """
        await self._serialise(db)
        newest = await SigningKeyRepository(db).newest_created_at()
        if newest is not None and now - newest < timedelta(seconds=interval):
            return None
        return await self.rotate(db, now, actor=actor)

    async def list(self, db: AsyncSession, now: datetime) -> list[KeyInfo]:
        ring = await self.reload(db, now)
        return [
            KeyInfo(
                k.kid,
                k.state(now, self.unpublish_after),
                k.created_at,
                k.activates_at,
                k.retires_at,
            )
            for k in sorted(ring.keys, key=lambda k: k.activates_at)
        ]

    async def prune(self, db: AsyncSession, now: datetime) -> int:
        return await SigningKeyRepository(db).delete_unpublished(now - self.unpublish_after)

    async def _create(self, db: AsyncSession, now: datetime, activates_at: datetime) -> SigningKey:
        under = await kek_to_write(db, self.secrets.keks)
        private = crypto.generate_private_key(self.settings.rsa_key_size)
        jwk = crypto.public_jwk(private.public_key())
        row = SigningKey(
            kid=jwk["kid"],
            algorithm=crypto.ALGORITHM,
            public_jwk=jwk,
            private_key_encrypted=crypto.encrypt_private_key(
                private, self.secrets.keks.fernet(under)
            ),
            created_at=now,
            activates_at=activates_at,
            retires_at=None,
        )
        await SigningKeyRepository(db).add(row)
        return row
