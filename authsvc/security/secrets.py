"""The key-encryption key (KEK) and the secrets derived from it.

One secret to manage: the KEK encrypts signing keys at rest (Fernet), and HKDF derives from it
the HMAC keys for refresh-token digests and successor derivation, client secrets and mailed
one-time links, so every process that shares the KEK agrees on them. Rotating the KEK
therefore also invalidates outstanding refresh tokens (and mailed links).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from authsvc.config import ConfigError, Settings

log = logging.getLogger("authsvc.secrets")

KEK_FILENAME = "key-encryption-key"


def new_kek() -> str:
    return Fernet.generate_key().decode()


def _derive(master: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(master)


@dataclass(frozen=True)
class ServerSecrets:
    fernet: Fernet
    refresh_digest_key: bytes
    refresh_successor_key: bytes
    client_secret_key: bytes = b""
    account_token_key: bytes = b""

    @classmethod
    def from_kek(cls, kek: str) -> ServerSecrets:
        try:
            raw = base64.urlsafe_b64decode(kek.encode())
            fernet = Fernet(kek.encode())
        except (ValueError, binascii.Error) as exc:
            raise ConfigError(
                "AUTHSVC_KEY_ENCRYPTION_KEY must be 32 url-safe base64-encoded bytes "
                "(make one with `authsvc keys new-kek`)"
            ) from exc
        return cls(
            fernet=fernet,
            refresh_digest_key=_derive(raw, b"authsvc/refresh-token/digest/v1"),
            refresh_successor_key=_derive(raw, b"authsvc/refresh-token/successor/v1"),
            client_secret_key=_derive(raw, b"authsvc/client-secret/digest/v1"),
            account_token_key=_derive(raw, b"authsvc/account-token/digest/v1"),
        )


def load_secrets(settings: Settings) -> ServerSecrets:
    if settings.key_encryption_key is not None:
        return ServerSecrets.from_kek(settings.key_encryption_key.get_secret_value())
    if settings.env == "production":  # Settings already refuses this; belt and braces.
        raise ConfigError("AUTHSVC_KEY_ENCRYPTION_KEY is required in production")
    return ServerSecrets.from_kek(_dev_kek(settings.data_dir))


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
