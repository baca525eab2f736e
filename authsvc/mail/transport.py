"""How a mail leaves: SMTP (aiosmtplib) when AUTHSVC_SMTP_URL is set, else the log
(development only; Settings refuses production sign-up without SMTP)."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from authsvc.config import Settings
from authsvc.mail.templates import Mail

log = logging.getLogger("authsvc.mail")


class Transport(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


def build_message(mail: Mail, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message["Date"] = formatdate(localtime=False)
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    message["Message-ID"] = make_msgid(domain=domain)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834 section 5: no auto-replies
    message.set_content(mail.text)
    message.add_alternative(mail.html, subtype="html")
    return message


@dataclass(frozen=True)
class SMTPConfig:
    host: str
    port: int
    use_tls: bool  # smtps: TLS from the first byte
    start_tls: bool | None  # True: required; False: never; None: when the server offers it
    username: str | None
    password: str | None
    timeout: float
    tls_context: ssl.SSLContext

    @classmethod
    def from_settings(cls, settings: Settings) -> SMTPConfig:
        assert settings.smtp_url is not None
        parts = urlsplit(settings.smtp_url.get_secret_value())
        query = {k: v[-1].lower() for k, v in parse_qs(parts.query).items()}
        use_tls = parts.scheme == "smtps"
        starttls = query.get("starttls")
        start_tls = None if use_tls or starttls is None else starttls in ("1", "true", "yes")
        if use_tls:
            start_tls = False
        username = unquote(parts.username) if parts.username else settings.smtp_username
        password = (
            unquote(parts.password)
            if parts.password
            else (settings.smtp_password.get_secret_value() if settings.smtp_password else None)
        )
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or (465 if use_tls else 25),
            use_tls=use_tls,
            start_tls=start_tls,
            username=username,
            password=password,
            timeout=settings.smtp_timeout_seconds,
            tls_context=tls_context(settings),
        )


def tls_context(settings: Settings) -> ssl.SSLContext:
    """How the relay's certificate is checked, for smtps:// and STARTTLS alike: its chain must
    lead to a trusted CA and it must name the URL's host. Trusted are the CAs in
    AUTHSVC_SMTP_CA_FILE when it is set (those alone: a private relay's CA does not widen to
    the public ones), else the system's, which OpenSSL reads from SSL_CERT_FILE / SSL_CERT_DIR
    when they are set. Built once, at start-up, so an unreadable file is a start-up error."""
    if settings.smtp_ca_file is not None:
        return ssl.create_default_context(cafile=str(settings.smtp_ca_file))
    return ssl.create_default_context()


class SMTPTransport:
    """One connection per mail: mails are rare, and a kept connection would need keep-alive
    and reconnect logic for little gain."""

    def __init__(self, config: SMTPConfig) -> None:
        self.config = config

    async def send(self, message: EmailMessage) -> None:
        c = self.config
        await aiosmtplib.send(
            message,
            hostname=c.host,
            port=c.port,
            username=c.username,
            password=c.password,
            use_tls=c.use_tls,
            start_tls=c.start_tls,
            tls_context=c.tls_context,
            timeout=c.timeout,
        )


class LogTransport:
    """Development without SMTP: the mail, links and all, goes to the log."""

    async def send(self, message: EmailMessage) -> None:
        body = message.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        log.warning(
            "mail not sent (no AUTHSVC_SMTP_URL): to %s, subject %r\n%s",
            message["To"],
            message["Subject"],
            text,
        )


def transport_for(settings: Settings) -> Transport | None:
    """SMTP when configured; the log in development; None (no mail at all) otherwise."""
    if settings.smtp_url is not None:
        return SMTPTransport(SMTPConfig.from_settings(settings))
    if settings.env == "development":
        return LogTransport()
    return None
