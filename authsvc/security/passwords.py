"""Password hashing through passlib's CryptContext (the libpass fork), argon2id first.

Hashes made under an older scheme or weaker argon2 parameters verify and are flagged for
upgrade, so they are rehashed at the next successful login.
"""

from __future__ import annotations

import asyncio
import os
import unicodedata
import weakref

import anyio
from passlib.context import CryptContext

from authsvc.config import Settings


def normalize_password(password: str) -> str:
    # NIST SP 800-63B 5.1.1.2 and RFC 8265 OpaqueString: compare passwords in NFC.
    return unicodedata.normalize("NFC", password)


class PasswordHasher:
    def __init__(self, settings: Settings) -> None:
        self.context = CryptContext(
            schemes=["argon2", "pbkdf2_sha256"],
            deprecated=["pbkdf2_sha256"],
            argon2__type="ID",
            argon2__rounds=settings.argon2_time_cost,
            argon2__memory_cost=settings.argon2_memory_cost,
            argon2__parallelism=settings.argon2_parallelism,
        )
        self._concurrency = settings.password_hash_concurrency or os.cpu_count() or 1
        self._limiters: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, anyio.CapacityLimiter
        ] = weakref.WeakKeyDictionary()
        # Checked for unknown users so that their answer takes as long as a wrong password.
        self._dummy_hash = self._unmatchable_hash()

    def _unmatchable_hash(self) -> str:
        """A hash in the configured scheme and parameters whose digest is all zero bytes:
        checking a password against it costs what checking against a real one does, and no
        password matches it. Written out, not computed: a hash costs a large fraction of a
        second at every start of every process, each CLI command included."""
        handler = self.context.handler()
        return str(
            handler(
                salt=os.urandom(handler.default_salt_size),
                checksum=bytes(handler.checksum_size),
                memory_cost=handler.memory_cost,
                rounds=handler.default_rounds,
                parallelism=handler.parallelism,
                type=handler.type,
                version=handler.version,
            ).to_string()
        )

    def hash_sync(self, password: str) -> str:
        return str(self.context.hash(normalize_password(password)))

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self.hash_sync, password, limiter=self._limiter())

    def _limiter(self) -> anyio.CapacityLimiter:
        # At most `hash_concurrency` hashes at once per process (one per core by default):
        # argon2 already runs its lanes in parallel threads, and more concurrent 64 MiB hashes
        # than cores only thrash caches and memory (login throughput fell to under half the
        # raw hash rate with 8 at once on 2 cores). Waiting logins queue here, off the loop.
        loop = asyncio.get_running_loop()
        limiter = self._limiters.get(loop)
        if limiter is None:
            limiter = self._limiters[loop] = anyio.CapacityLimiter(self._concurrency)
        return limiter

    async def verify(self, password: str, stored_hash: str | None) -> tuple[bool, str | None]:
        """(matches, new hash if the stored one should be upgraded). Runs off the event loop."""
        candidate = normalize_password(password)
        target = stored_hash if stored_hash is not None else self._dummy_hash

        def check() -> tuple[bool, str | None]:
            try:
                ok, new_hash = self.context.verify_and_update(candidate, target)
            except ValueError:  # an unparseable stored hash never matches
                return False, None
            return bool(ok), new_hash

        ok, new_hash = await anyio.to_thread.run_sync(check, limiter=self._limiter())
        if stored_hash is None:
            return False, None
        return ok, new_hash
