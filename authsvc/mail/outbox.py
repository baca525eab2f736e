"""The outbox: mails leave from a background task, never from the request that asked for them.

A request enqueues (no I/O; a full queue drops the mail with a warning rather than make the
request wait) and answers; one worker sends. A failed send is retried after base * 2^attempt
seconds, up to AUTHSVC_MAIL_MAX_ATTEMPTS tries; a retry waits in its own timer task, so one
slow or failing mail does not hold up the others. The outbox lives in process memory: mails
still queued when the process stops are logged as lost (the user asks again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass

from authsvc.config import Settings
from authsvc.mail.templates import Mail
from authsvc.mail.transport import Transport, build_message

log = logging.getLogger("authsvc.mail")


@dataclass(frozen=True)
class _Item:
    mail: Mail
    attempt: int


class Outbox:
    def __init__(self, settings: Settings, transport: Transport | None) -> None:
        self.settings = settings
        self.transport = transport
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=settings.mail_queue_size)
        self._worker: asyncio.Task[None] | None = None
        self._timers: set[asyncio.Task[None]] = set()
        self.sent = 0
        self.failed = 0

    @property
    def enabled(self) -> bool:
        """Whether mail can go out at all (SMTP, or the log in development)."""
        return self.transport is not None

    def enqueue(self, mail: Mail) -> bool:
        """Queue a mail; False (logged) if the outbox is off or full."""
        return self._put(_Item(mail, 0))

    def _put(self, item: _Item) -> bool:
        if self.transport is None:
            log.warning("no mail transport: %s mail dropped", item.mail.kind)
            return False
        if len(self._timers) + self._queue.qsize() >= self.settings.mail_queue_size:
            log.warning("mail queue full: %s mail dropped", item.mail.kind)
            return False
        self._queue.put_nowait(item)
        return True

    def start(self) -> None:
        if self.transport is not None and self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="authsvc-mail")

    async def stop(self, drain_seconds: float = 5.0) -> None:
        """Give queued mails a moment to go, then stop; whatever is left is logged as lost."""
        if self._worker is None:
            return
        if not self._timers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), drain_seconds)
        tasks = [self._worker, *self._timers]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        lost = self._queue.qsize() + len(self._timers)
        if lost:
            log.warning("%d queued mails not sent at shutdown", lost)
        self._worker = None
        self._timers.clear()

    async def join(self) -> None:
        """Until every queued mail has been tried once (retries may still be waiting)."""
        await self._queue.join()

    async def _run(self) -> None:
        assert self.transport is not None
        sender = self.settings.mail_from
        while True:
            item = await self._queue.get()
            try:
                await self.transport.send(build_message(item.mail, sender))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._retry(item, exc)
            else:
                self.sent += 1
                log.info("mail sent", extra={"mail_kind": item.mail.kind})
            finally:
                self._queue.task_done()

    def _retry(self, item: _Item, exc: Exception) -> None:
        attempt = item.attempt + 1
        if attempt >= self.settings.mail_max_attempts:
            self.failed += 1
            log.error(
                "mail not sent after %d attempts (%s): %s mail dropped",
                attempt,
                _reason(exc),
                item.mail.kind,
            )
            return
        delay = self.settings.mail_retry_base_seconds * 2 ** (attempt - 1)
        log.warning("mail send failed (%s); retry %d in %.0f s", _reason(exc), attempt, delay)

        async def later() -> None:
            await asyncio.sleep(delay)
            self._timers.discard(task)
            self._put(_Item(item.mail, attempt))

        task = asyncio.create_task(later(), name="authsvc-mail-retry")
        self._timers.add(task)


def _reason(exc: BaseException) -> str:
    """The error's type and, when the relay's TLS certificate failed verification, why: the
    one cause an operator cannot guess from the type (smtps wraps it in a connect error). Other
    messages stay out of the log: a server's reply may echo what it was sent."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"{type(exc).__name__}: TLS certificate not trusted: {cause.verify_message}"
        cause = cause.__cause__ or cause.__context__
    return type(exc).__name__
