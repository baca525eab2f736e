"""A real SMTP server (aiosmtpd) in the test's event loop, and what it received."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult

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
    received: list[Received] = field(default_factory=list)
    fail_next: int = 0
    failures: int = 0
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    _taken: int = 0

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

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

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """The first `count` mails, once they have arrived."""
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(self.received) >= count), timeout
            )
        return self.received[:count]

    async def next(self, timeout: float = 10.0) -> Received:
        """The mail after those already taken with `next`/`wait_for`-and-count."""
        mails = await self.wait_for(self._taken + 1, timeout)
        self._taken += 1
        return mails[-1]


@asynccontextmanager
async def smtp_server(credentials: tuple[str, str] | None = None) -> AsyncIterator[Mailbox]:
    """With `credentials`, the server demands AUTH (over plain TCP: this is a test)."""
    box = Mailbox()
    loop = asyncio.get_running_loop()

    def authenticate(_server: Any, _session: Any, _envelope: Any, _mech: str, data: Any) -> Any:
        login = (data.login.decode(), data.password.decode())
        return AuthResult(success=login == credentials)

    def protocol() -> SMTP:
        if credentials is None:
            return SMTP(box, hostname="mail.test")
        return SMTP(
            box,
            hostname="mail.test",
            auth_required=True,
            auth_require_tls=False,
            authenticator=authenticate,
        )

    server = await loop.create_server(protocol, "127.0.0.1", 0)
    box.port = server.sockets[0].getsockname()[1]
    try:
        yield box
    finally:
        server.close()
        await server.wait_closed()
