"""Background housekeeping inside each server process: pruning and scheduled key rotation.

Both are safe with many processes: pruning deletes only what no one can use any more, in small
batches (each its own transaction); rotation re-checks the newest key's age under a lock, so
whichever process notices first rotates and the others see a fresh key. Rotation is on by
default (AUTHSVC_KEY_ROTATION_INTERVAL), so a deployment that never runs `authsvc keys rotate`
still rotates; a process also checks as it starts, so a key that came due while every process
was down rotates at once. A failing round (database down) is logged and retried at the next
interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from authsvc.clock import Clock
from authsvc.config import Settings
from authsvc.services.keys import KeyService
from authsvc.services.maintenance import prune
from authsvc.store.db import Database

log = logging.getLogger("authsvc.housekeeping")

# How long a stop waits for a round under way (a prune batch or a rotation: one transaction).
STOP_GRACE_SECONDS = 10.0


class Housekeeper:
    def __init__(
        self, settings: Settings, database: Database, keys: KeyService, clock: Clock
    ) -> None:
        self.settings = settings
        self.database = database
        self.keys = keys
        self.clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    async def prune_once(self) -> None:
        report = await prune(self.database, self.keys, self.clock.now(), self.settings.prune_batch)
        if any(vars(report).values()):
            log.info("pruned", extra={"pruned": vars(report)})

    async def rotate_once(self) -> None:
        async with self.database.transaction() as db:
            info = await self.keys.rotate_if_due(
                db, self.clock.now(), self.settings.key_rotation_interval
            )
        if info is not None:
            log.info("scheduled key rotation", extra={"kid": info.kid})

    async def start(self) -> None:
        if self.settings.key_rotation_interval > 0:
            await self._attempt("key_rotation", self.rotate_once)
        if self.settings.prune_interval > 0:
            self._spawn("prune", self.prune_once, float(self.settings.prune_interval))
        if self.settings.key_rotation_interval > 0:
            # Check often enough that a rotation is never late by more than a tenth.
            every = max(1.0, min(60.0, self.settings.key_rotation_interval / 10))
            self._spawn("key_rotation", self.rotate_once, every)

    def _spawn(self, name: str, work: Callable[[], Awaitable[None]], every: float) -> None:
        async def loop() -> None:
            while not self._stopping.is_set():
                try:
                    await asyncio.wait_for(self._stopping.wait(), every)
                except TimeoutError:
                    await self._attempt(name, work)

        self._tasks.append(asyncio.create_task(loop(), name=f"authsvc-{name}"))

    @staticmethod
    async def _attempt(name: str, work: Callable[[], Awaitable[None]]) -> None:
        try:
            await work()
        except Exception as exc:  # the next round retries; the server keeps serving
            log.warning("%s failed: %s", name, type(exc).__name__)

    async def stop(self) -> None:
        """A round under way finishes first: cancelled inside a database call, a round can leave
        the driver waiting on a connection the engine disposes of next (a shutdown that never
        ends). Only a round still running after the grace period is cancelled."""
        self._stopping.set()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=STOP_GRACE_SECONDS)
            for task in late:
                task.cancel()
            for task in late:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._tasks.clear()
