"""WebAuthn ceremonies (passkeys) through py_webauthn: options out, responses checked.

Everything a client sends is untrusted JSON; any malformation, from a missing member to a
CBOR bomb, ends as `PasskeyRejected` (its reason is for the audit trail, never the client).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# py_webauthn (with the ASN.1 modules it loads) is imported by the functions that use it: a
# large share of a CLI command's start, and no command needs it.
if TYPE_CHECKING:
    from webauthn.helpers.structs import AuthenticatorTransport

CHALLENGE_BYTES = 32


@functools.cache
def _transport_names() -> dict[str, AuthenticatorTransport]:
    from webauthn.helpers.structs import AuthenticatorTransport

    return {t.value: t for t in AuthenticatorTransport}


class PasskeyRejected(Exception):
    """A ceremony response that does not verify; `reason` goes to the audit trail only."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class RelyingParty:
    id: str
    name: str
    origins: list[str]
    timeout_ms: int


@dataclass(frozen=True)
class NewCredential:
    credential_id: bytes
    public_key: bytes
    sign_count: int
    transports: list[str]


@dataclass(frozen=True)
class Assertion:
    credential_id: bytes
    sign_count: int
    user_handle: bytes | None


def new_challenge() -> bytes:
    return secrets.token_bytes(CHALLENGE_BYTES)


def challenge_digest(challenge: bytes) -> bytes:
    """A challenge is 256 random bits, so a plain SHA-256 keeps it unguessable at rest."""
    return hashlib.sha256(challenge).digest()


def b64url_decode(value: object) -> bytes:
    if not isinstance(value, str) or len(value) > 16384:
        raise PasskeyRejected("not base64url")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise PasskeyRejected("not base64url") from exc


def b64url(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode("ascii")


def credential_id(credential: dict[str, Any]) -> bytes:
    """The raw credential id a response names (checked against `id` by the verification)."""
    raw = b64url_decode(credential.get("rawId"))
    if not raw or len(raw) > 1023:
        raise PasskeyRejected("bad credential id")
    return raw


def response_challenge(credential: dict[str, Any]) -> bytes:
    """The challenge inside the response's clientDataJSON: how the server finds the
    ceremony it belongs to (it is checked again, exactly, by the verification)."""
    response = credential.get("response")
    if not isinstance(response, dict):
        raise PasskeyRejected("no response")
    try:
        client_data = json.loads(b64url_decode(response.get("clientDataJSON")))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PasskeyRejected("clientDataJSON is not JSON") from exc
    if not isinstance(client_data, dict):
        raise PasskeyRejected("clientDataJSON is not an object")
    challenge = b64url_decode(client_data.get("challenge"))
    if len(challenge) != CHALLENGE_BYTES:
        raise PasskeyRejected("unknown challenge")
    return challenge


def user_handle(credential: dict[str, Any]) -> bytes | None:
    response = credential.get("response")
    value = response.get("userHandle") if isinstance(response, dict) else None
    return b64url_decode(value) if value else None


def registration_options(
    rp: RelyingParty,
    challenge: bytes,
    user_handle: bytes,
    user_name: str,
    exclude: list[tuple[bytes, list[str] | None]],
) -> dict[str, Any]:
    """PublicKeyCredentialCreationOptions (WebAuthn L3 section 5.4) as JSON: a discoverable
    credential with user verification, no attestation, the user's passkeys excluded."""
    from webauthn import generate_registration_options, options_to_json
    from webauthn.helpers.structs import (
        AuthenticatorSelectionCriteria,
        PublicKeyCredentialDescriptor,
        ResidentKeyRequirement,
        UserVerificationRequirement,
    )

    options = generate_registration_options(
        rp_id=rp.id,
        rp_name=rp.name,
        user_id=user_handle,
        user_name=user_name,
        challenge=challenge,
        timeout=rp.timeout_ms,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            require_resident_key=True,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=[
            PublicKeyCredentialDescriptor(id=cid, transports=_transports(transports))
            for cid, transports in exclude
        ],
    )
    result: dict[str, Any] = json.loads(options_to_json(options))
    return result


def authentication_options(
    rp: RelyingParty,
    challenge: bytes,
    allow: list[tuple[bytes, list[str] | None]] | None = None,
) -> dict[str, Any]:
    """PublicKeyCredentialRequestOptions (section 5.5). For sign-in, a discoverable credential:
    no allowCredentials, so nothing about any account is disclosed. `allow` lists a known
    user's passkeys (a second factor, after the password named the user)."""
    from webauthn import generate_authentication_options, options_to_json
    from webauthn.helpers.structs import PublicKeyCredentialDescriptor, UserVerificationRequirement

    options = generate_authentication_options(
        rp_id=rp.id,
        challenge=challenge,
        timeout=rp.timeout_ms,
        allow_credentials=[
            PublicKeyCredentialDescriptor(id=cid, transports=_transports(transports))
            for cid, transports in allow or []
        ],
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    result: dict[str, Any] = json.loads(options_to_json(options))
    return result


def verify_registration(
    rp: RelyingParty, credential: dict[str, Any], challenge: bytes
) -> NewCredential:
    """Section 7.1: type, challenge, origin, RP id hash, UP and UV flags, the key."""
    from webauthn import verify_registration_response

    try:
        verified = verify_registration_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origins,
            require_user_presence=True,
            require_user_verification=True,
        )
    except Exception as exc:  # py_webauthn raises many kinds on hostile input
        raise PasskeyRejected(f"registration: {type(exc).__name__}: {exc}"[:200]) from exc
    response = credential.get("response")
    raw = response.get("transports") if isinstance(response, dict) else None
    # A hint only (section 5.2.1.2): kept when it is a list of known names, else dropped.
    listed = raw if isinstance(raw, list) else []
    known = _transport_names()
    transports = [t for t in listed if isinstance(t, str) and t in known]
    return NewCredential(
        credential_id=verified.credential_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        transports=transports[:8],
    )


def verify_assertion(
    rp: RelyingParty, credential: dict[str, Any], challenge: bytes, public_key: bytes
) -> Assertion:
    """Section 7.2: type, challenge, origin, RP id hash, UP and UV flags, the signature. The
    counter is not compared here (it is given as 0): the caller compares it, so that a counter
    going backwards on an otherwise valid assertion can be told apart and audited."""
    from webauthn import verify_authentication_response

    try:
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origins,
            credential_public_key=public_key,
            credential_current_sign_count=0,
            require_user_verification=True,
        )
    except Exception as exc:  # py_webauthn raises many kinds on hostile input
        raise PasskeyRejected(f"assertion: {type(exc).__name__}: {exc}"[:200]) from exc
    return Assertion(
        credential_id=verified.credential_id,
        sign_count=verified.new_sign_count,
        user_handle=user_handle(credential),
    )


def _transports(values: list[str] | None) -> list[AuthenticatorTransport] | None:
    if not values:
        return None
    known = _transport_names()
    return [known[v] for v in values if v in known]
