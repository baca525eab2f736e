"""A real SMTP server (aiosmtpd) in the test's event loop, and what it received; over TLS
(smtps or STARTTLS) with a certificate from a CA made for the test."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.smtp import SMTP, AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TOKEN = re.compile(r"token=(at_[A-Za-z0-9_-]{43})")


@dataclass
class Received:
    to: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def part(self, subtype: str) -> str:
        body = self.message.get_body(preferencelist=(subtype,))
        assert body is not None
        content: str = body.get_content()
        return content

    @property
    def text(self) -> str:
        return self.part("plain")

    @property
    def token(self) -> str:
        found = TOKEN.search(self.text)
        assert found is not None, self.text
        return found.group(1)


@dataclass
class Mailbox:
    """Every mail the server accepted, in order; `fail_next` answers that many DATA commands
    with a temporary failure (451) first."""

    port: int = 0
    scheme: str = "smtp"
    received: list[Received] = field(default_factory=list)
    fail_next: int = 0
    failures: int = 0
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    _taken: int = 0

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        if self.fail_next > 0:
            self.fail_next -= 1
            self.failures += 1
            return "451 4.3.0 try again later"
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        async with self._arrived:
            self.received.append(Received(list(envelope.rcpt_tos), message))
            self._arrived.notify_all()
        return "250 OK"

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """The first `count` mails, once they have arrived."""
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(self.received) >= count), timeout
            )
        return self.received[:count]

    async def next(self, timeout: float = 30.0) -> Received:
        """The mail after those already taken with `next`/`wait_for`-and-count."""
        mails = await self.wait_for(self._taken + 1, timeout)
        self._taken += 1
        return mails[-1]


@dataclass(frozen=True)
class ServerCertificate:
    """A CA (its certificate in `ca_file`, PEM) and a certificate it signed for 127.0.0.1."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def make(cls, directory: Path, name: str = "test") -> ServerCertificate:
        now = datetime.now(UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        made = cls(
            directory / f"{name}-ca.pem",
            directory / f"{name}-cert.pem",
            directory / f"{name}-key.pem",
        )
        made.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        made.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        made.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return made

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


@asynccontextmanager
async def smtp_server(
    credentials: tuple[str, str] | None = None,
    *,
    tls: Literal["smtps", "starttls"] | None = None,
    certificate: ServerCertificate | None = None,
) -> AsyncIterator[Mailbox]:
    """With `credentials`, the server demands AUTH (over plain TCP: this is a test). With
    `tls`, it speaks TLS from the first byte (smtps) or requires STARTTLS, presenting
    `certificate`."""
    box = Mailbox(scheme="smtps" if tls == "smtps" else "smtp")
    loop = asyncio.get_running_loop()
    context = certificate.server_context() if certificate is not None else None
    assert (tls is None) == (context is None)

    def authenticate(_server: Any, _session: Any, _envelope: Any, _mech: str, data: Any) -> Any:
        login = (data.login.decode(), data.password.decode())
        return AuthResult(success=login == credentials)

    def protocol() -> SMTP:
        if tls == "starttls":
            return SMTP(box, hostname="mail.test", tls_context=context, require_starttls=True)
        if credentials is None:
            return SMTP(box, hostname="mail.test")
        return SMTP(
            box,
            hostname="mail.test",
            auth_required=True,
            auth_require_tls=False,
            authenticator=authenticate,
        )

    server = await loop.create_server(
        protocol, "127.0.0.1", 0, ssl=context if tls == "smtps" else None
    )
    box.port = server.sockets[0].getsockname()[1]
    try:
        yield box
    finally:
        server.close()
        await server.wait_closed()
