"""The second factor's secrets: TOTP (RFC 6238) with pyotp, its enrolment QR code (segno, SVG),
recovery codes, and the short-lived mfa_token that carries a password check to the code check.

The TOTP secret has to be read back to check codes, so it is encrypted at rest under the KEK
ring like the signing keys (security/secrets.py; `authsvc keys rewrap` re-encrypts it). Recovery
codes and mfa tokens are only ever compared, so only their HMAC-SHA256 digests are kept, under
one of the server's stored HMAC keys: an mfa token is an opaque token (security/opaque.py), a
recovery code is typed by a person and so has its own alphabet and shape.
"""

from __future__ import annotations

import hmac
import re
import secrets
from datetime import datetime

import pyotp
import segno

from authsvc.security.opaque import OpaqueTokens
from authsvc.security.secrets import KeyEncryptionKeys, ServerSecrets

# RFC 6238 section 4: the defaults every authenticator app implements (SHA-1, 6 digits, 30 s).
DIGITS = 6
PERIOD = 30
# Section 5.2: codes of the neighbouring time steps are accepted too (clock drift, typing time).
DRIFT_STEPS = 1
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i to misread
_RECOVERY_SHAPE = re.compile(f"[{_RECOVERY_ALPHABET}]{{5}}-[{_RECOVERY_ALPHABET}]{{5}}")
MFA_TOKEN_PREFIX = "mfa_"  # noqa: S105 - a prefix, not a secret


class TotpSecrets:
    """TOTP secrets: made, sealed for storage, and checked against a code."""

    def __init__(self, keks: KeyEncryptionKeys, issuer_name: str) -> None:
        self.keks = keks
        self.issuer_name = issuer_name

    @staticmethod
    def new() -> str:
        """160 random bits, base32 (RFC 4226 section 4 asks for at least 128)."""
        return pyotp.random_base32(32)

    def seal(self, secret: str, under: int) -> bytes:
        """Under the ring's KEK `under` (services/secrets.py, kek_to_write)."""
        return self.keks.fernet(under).encrypt(secret.encode())

    def open(self, sealed: bytes) -> str:
        """Under whichever KEK of the ring sealed it."""
        return self.keks.read(sealed, "a TOTP secret").decode()

    def uri(self, secret: str, account: str) -> str:
        """The otpauth:// URI authenticator apps import (Key Uri Format)."""
        return pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD).provisioning_uri(
            name=account, issuer_name=self.issuer_name
        )

    @staticmethod
    def qr_svg(uri: str) -> str:
        return str(segno.make(uri, error="m").svg_inline(scale=4))

    @staticmethod
    def matching_step(secret: str, code: str, now: datetime) -> int | None:
        """The time step (RFC 6238 section 4.2: T) whose code `code` is, within the drift
        window, or None. Every candidate is compared in constant time."""
        if len(code) != DIGITS or not code.isascii() or not code.isdigit():
            return None
        totp = pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD)
        current = int(now.timestamp()) // PERIOD
        found = None
        for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
            if hmac.compare_digest(totp.generate_otp(step), code) and found is None:
                found = step
        return found


class OneTimeSecrets(OpaqueTokens):
    """Mfa tokens and recovery codes: random, shown once, kept as digests under one key."""

    def __init__(self, secrets: ServerSecrets) -> None:
        super().__init__(MFA_TOKEN_PREFIX, secrets, "mfa_digest")

    def new_mfa_token(self) -> str:
        return self.new()

    @staticmethod
    def new_recovery_codes() -> list[str]:
        """Ten codes of 10 characters (about 50 bits each), shown as xxxxx-xxxxx."""
        codes = []
        for _ in range(RECOVERY_CODES):
            raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(10))
            codes.append(f"{raw[:5]}-{raw[5:]}")
        return codes

    @staticmethod
    def recovery_code_well_formed(normalized: str) -> bool:
        """Whether a normalized recovery code could be one this class made, so a wrong shape
        is refused without a lookup."""
        return _RECOVERY_SHAPE.fullmatch(normalized) is not None

    @staticmethod
    def normalize_recovery_code(value: str) -> str:
        """What a person types: any case, with or without the dash or spaces."""
        raw = "".join(value.split()).replace("-", "").lower()
        return f"{raw[:5]}-{raw[5:]}" if len(raw) == 10 else raw
