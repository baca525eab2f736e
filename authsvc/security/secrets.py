"""The key-encryption keys (KEKs) and the server's HMAC keys.

The KEK ring is the current KEK (AUTHSVC_KEY_ENCRYPTION_KEY), which encrypts everything written
from now on, plus the previous ones (AUTHSVC_PREVIOUS_KEY_ENCRYPTION_KEYS), which still decrypt
what was written under them (cryptography's MultiFernet). `authsvc keys rewrap` re-encrypts what
is stored under the current KEK, after which the previous ones can be dropped.

The HMAC keys (refresh-token digests and successors, client-secret digests, mailed links' digests,
...) are not derived from
the KEK: they are random, stored in the database encrypted under it (services/secrets.py), so
that rotating the KEK changes neither a refresh token's digest nor a client secret's. A
database first used by a version that derived them from its KEK keeps those derived values
(`HmacKeys.derived_from`), so what was issued before the upgrade stays valid.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from authsvc.config import ConfigError, Settings

log = logging.getLogger("authsvc.secrets")

KEK_FILENAME = "key-encryption-key"
CURRENT_KEK = "AUTHSVC_KEY_ENCRYPTION_KEY"
PREVIOUS_KEKS = "AUTHSVC_PREVIOUS_KEY_ENCRYPTION_KEYS"


def new_kek() -> str:
    return Fernet.generate_key().decode()


def _derive(master: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(master)


class UnreadableSecret(ConfigError):
    """Something stored under a KEK that no KEK in the ring decrypts: refused at start-up."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} in the database cannot be decrypted: no key-encryption key configured "
            f"({CURRENT_KEK}, {PREVIOUS_KEKS}) is the one it was written under"
        )
        self.what = what


class KeyEncryptionKeys:
    """The KEK ring: each of its KEKs decrypts; the current one encrypts, or during a rotation
    the previous one until everything is rewrapped (services/secrets.py, kek_to_write)."""

    def __init__(self, current: str, previous: Sequence[str] = ()) -> None:
        named = [(CURRENT_KEK, current)] + [
            (f"{PREVIOUS_KEKS} (entry {n})", kek) for n, kek in enumerate(previous, 1)
        ]
        self._raw: list[bytes] = []
        self._fernets: list[Fernet] = []
        for setting, kek in named:
            try:
                self._raw.append(base64.urlsafe_b64decode(kek.encode()))
                self._fernets.append(Fernet(kek.encode()))
            except (ValueError, binascii.Error) as exc:
                raise ConfigError(
                    f"{setting} must be 32 url-safe base64-encoded bytes "
                    "(make one with `authsvc keys new-kek`)"
                ) from exc
        self._ring = MultiFernet(self._fernets)

    def __len__(self) -> int:
        return len(self._fernets)

    def encrypt(self, data: bytes) -> bytes:
        return self._fernets[0].encrypt(data)

    def fernet(self, index: int) -> Fernet:
        """The ring's KEK `index`, to write under (services/secrets.py, kek_to_write: during a
        KEK rotation, new secrets go under the one every process has)."""
        return self._fernets[index]

    def read(self, blob: bytes, what: str) -> bytes:
        """`blob` decrypted, or UnreadableSecret naming `what` if no KEK of the ring reads it."""
        try:
            return self._ring.decrypt(blob)
        except InvalidToken:
            raise UnreadableSecret(what) from None

    def decrypt(self, blob: bytes) -> bytes:
        """Under whichever KEK of the ring it was written; InvalidToken if none."""
        return self._ring.decrypt(blob)

    def index_of(self, blob: bytes) -> int | None:
        """Which KEK of the ring (0: the current one) decrypts `blob`; None if none does."""
        for index, fernet in enumerate(self._fernets):
            try:
                fernet.decrypt(blob)
            except InvalidToken:
                continue
            return index
        return None

    def rewrap(self, blob: bytes) -> bytes:
        """`blob` re-encrypted under the current KEK (InvalidToken if no KEK reads it)."""
        return self._ring.rotate(blob)

    def derived_hmac_keys(self, index: int) -> HmacKeys:
        return HmacKeys.derived_from(self._raw[index])


# The attributes of HmacKeys, for what takes one of the keys by name (tests keep the two equal).
HmacKeyName = Literal[
    "refresh_digest",
    "refresh_successor",
    "client_secret",
    "authorization_code",
    "login_page",
    "dpop_nonce",
    "account_token",
    "mfa_digest",
]


@dataclass(frozen=True)
class HmacKeys:
    """The server's HMAC-SHA256 keys; stored (encrypted) under the names in NAMES."""

    refresh_digest: bytes
    refresh_successor: bytes
    client_secret: bytes
    authorization_code: bytes
    login_page: bytes
    dpop_nonce: bytes
    account_token: bytes
    mfa_digest: bytes

    # Stored name -> attribute; the HKDF label the KEK-derived value was made with is
    # b"authsvc/<name>/v1".
    NAMES: ClassVar[dict[str, str]] = {
        "refresh-token/digest": "refresh_digest",
        "refresh-token/successor": "refresh_successor",
        "client-secret/digest": "client_secret",
        # Added later: a database that lacks them gets them at the next start (SecretService).
        "authorization-code/digest": "authorization_code",
        "login-page/csrf": "login_page",
        "dpop-nonce": "dpop_nonce",
        "account-token/digest": "account_token",
        "mfa/digest": "mfa_digest",
    }

    @classmethod
    def generate(cls) -> HmacKeys:
        return cls.from_named({name: secrets.token_bytes(32) for name in cls.NAMES})

    @classmethod
    def derived_from(cls, kek: bytes) -> HmacKeys:
        """What a version that derived these keys from its KEK used."""
        return cls.from_named(
            {name: _derive(kek, f"authsvc/{name}/v1".encode()) for name in cls.NAMES}
        )

    @classmethod
    def from_named(cls, values: dict[str, bytes]) -> HmacKeys:
        return cls(**{attr: values[name] for name, attr in cls.NAMES.items()})

    def named(self) -> dict[str, bytes]:
        return {name: getattr(self, attr) for name, attr in self.NAMES.items()}


class ServerSecrets:
    """The KEK ring (from the settings) and the HMAC keys (from the database, once loaded by
    services/secrets.py when the app or a CLI command starts)."""

    def __init__(self, keks: KeyEncryptionKeys) -> None:
        self.keks = keks
        self._hmac: HmacKeys | None = None

    @property
    def hmac(self) -> HmacKeys:
        if self._hmac is None:
            raise RuntimeError("the server's HMAC keys are read from the database at start-up")
        return self._hmac

    def use(self, keys: HmacKeys) -> None:
        self._hmac = keys

    def mac(self, key: HmacKeyName, value: str) -> bytes:
        """HMAC-SHA256 of `value` under the HMAC key `key`, read at each call: services are
        built before the keys are loaded."""
        return hmac.new(getattr(self.hmac, key), value.encode(), hashlib.sha256).digest()


def load_secrets(settings: Settings) -> ServerSecrets:
    previous = settings.previous_kek_list
    if settings.key_encryption_key is not None:
        current = settings.key_encryption_key.get_secret_value()
    elif settings.env == "production":  # Settings already refuses this; belt and braces.
        raise ConfigError("AUTHSVC_KEY_ENCRYPTION_KEY is required in production")
    else:
        current = _dev_kek(settings.data_dir)
    return ServerSecrets(KeyEncryptionKeys(current, previous))


def _dev_kek(data_dir: Path) -> str:
    path = data_dir / KEK_FILENAME
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    kek = new_kek()
    # O_EXCL: two processes starting at once must not each write a different KEK.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(kek + "\n")
    log.warning(
        "development mode: generated a key-encryption key at %s; set AUTHSVC_KEY_ENCRYPTION_KEY "
        "and AUTHSVC_ENV=production for real deployments",
        path,
    )
    return kek
