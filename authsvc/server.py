"""Running the ASGI server: `authsvc serve` is uvicorn with a connection guard in its protocol.

uvicorn bounds keep-alive idleness but not how long a client may take to send a request: a
client that trickles its headers, or its body one byte at a time, holds a connection (a file
descriptor and a buffer) for as long as it likes, and nothing caps how many it may hold. The
guard is a subclass of uvicorn's httptools protocol that adds, per connection, one timer armed
only while a request is partly read:

- the header phase (from the first byte of a request, or from accept, until the header block is
  complete) must end within `header_timeout_seconds`, else 408 and close; its bytes are capped
  (431 and close) so that a header block cannot grow without limit before the app sees it;
- the body phase (headers complete until the last body byte) must end within
  `body_timeout_seconds`, else the connection is closed;
- an idle keep-alive connection is closed after `keepalive_timeout_seconds` (uvicorn's timer);
- a process holds at most `max_connections` connections, and one client address (IPv6: its
  /64) at most `max_connections_per_client`; further connections get 503 and are closed at
  once. Addresses in AUTHSVC_TRUSTED_PROXIES are exempt from the per-address cap: behind a proxy
  every connection comes from the proxy, and per-client limits belong to the proxy.

A request that arrives in one read (the usual case) arms no timer at all, so the guard costs a
few attribute checks per request. Limits are per process: with `--workers N` each worker
applies them to the connections it accepted.

Metrics, on the other hand, are per process group: with `--workers N` the workers write them to
one directory for the run (prometheus-client's multiprocess mode, see observability/metrics.py),
and the supervisor marks a worker's live gauges dead when it replaces or stops that worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import logging.config
import os
import resource
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState
from uvicorn.supervisors import Multiprocess

from authsvc.config import Settings, load_settings
from authsvc.services.ratelimit import address_key

log = logging.getLogger("authsvc.server")

# Descriptors kept free for the database pool, log files and the listening socket.
_RESERVED_FDS: Final = 128
# The request line and framing on top of the header block the app accepts.
_HEADER_SLACK: Final = 8 * 1024

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Phase = Literal["headers", "body"]


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float
    body_timeout: float
    keepalive_timeout: int
    max_connections: int
    max_connections_per_client: int  # 0: no per-address cap
    max_header_bytes: int
    exempt: tuple[_Network, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            header_timeout=settings.header_timeout_seconds,
            body_timeout=settings.body_timeout_seconds,
            keepalive_timeout=settings.keepalive_timeout_seconds,
            max_connections=settings.max_connections,
            max_connections_per_client=settings.max_connections_per_client,
            max_header_bytes=settings.max_header_bytes + _HEADER_SLACK,
            exempt=tuple(settings.trusted_proxy_networks),
        )

    def client_key(self, host: str) -> str | None:
        """The per-address counting key of a peer, or None when the peer is exempt."""
        if self.max_connections_per_client == 0:
            return None
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None  # not an IP peer (a Unix socket): nothing to count by
        if any(address in network for network in self.exempt):
            return None
        return address_key(host)


class GuardedConfig(uvicorn.Config):
    """uvicorn's Config plus the limits; pickled into each worker, so each counts its own."""

    def __init__(self, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limits = limits
        self.per_client: dict[str, int] = {}


def _response(status: bytes) -> bytes:
    return b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


_BUSY: Final = _response(b"503 Service Unavailable")
_HEADER_TIMEOUT: Final = _response(b"408 Request Timeout")
_HEADER_TOO_LARGE: Final = _response(b"431 Request Header Fields Too Large")


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if not isinstance(config, GuardedConfig):
            raise TypeError("GuardedHttpToolsProtocol needs a GuardedConfig")
        self.limits = config.limits
        self.per_client = config.per_client
        self.client_key: str | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self.deadline_phase: _Phase | None = None
        # Where the parser is in the current request: None between requests.
        self.phase: _Phase | None = None
        self.header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = self.limits
        if len(self.connections) > limits.max_connections:
            self._refuse("process connection limit reached")
            return
        if self.client is not None:
            key = limits.client_key(self.client[0])
            if key is not None:
                held = self.per_client.get(key, 0)
                if held >= limits.max_connections_per_client:
                    self._refuse("per-client connection limit reached")
                    return
                self.per_client[key] = held + 1
                self.client_key = key
        # A new connection must deliver its first header block in time, like any request.
        self._arm("headers", limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._disarm()
        key = self.client_key
        if key is not None:
            self.client_key = None
            left = self.per_client[key] - 1
            if left:
                self.per_client[key] = left
            else:
                del self.per_client[key]

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        phase = self.phase
        if phase == "headers":
            self.header_bytes += len(data)
            if self.header_bytes > self.limits.max_header_bytes:
                self._close(_HEADER_TOO_LARGE, "request header block too large")
            elif self.deadline_phase != "headers":
                self._arm("headers", self.limits.header_timeout)
        elif phase == "body":
            if self.deadline_phase != "body":
                self._arm("body", self.limits.body_timeout)
        elif self.cycle is None or self.cycle.response_complete:
            # Bytes that start no request (blank lines) while idle: uvicorn has just stopped its
            # keep-alive timer, so ours must run or the connection is held for free.
            if self.deadline_phase != "headers" and not self.transport.is_closing():
                self._arm("headers", self.limits.header_timeout)
        elif self.deadline is not None:
            self._disarm()  # the request is read; the app's time is not the client's

    # httptools parser callbacks: keep track of the phase (no timers here: one check per read).
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.phase = "headers"
        self.header_bytes = 0

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self.phase = "body"

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.phase = None

    def _arm(self, phase: _Phase, seconds: float) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        self.deadline = self.loop.call_later(seconds, self._expired)
        self.deadline_phase = phase

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
            self.deadline_phase = None

    def _expired(self) -> None:
        phase = self.deadline_phase
        self.deadline = None
        self.deadline_phase = None
        if phase == "headers":
            self._close(_HEADER_TIMEOUT, "request headers not received in time")
        else:
            # The app may be reading this body: closing tells it the client is gone.
            self._close(None, "request body not received in time")

    def _refuse(self, why: str) -> None:
        self._close(_BUSY, why)

    def _close(self, answer: bytes | None, why: str) -> None:
        if self.transport.is_closing():
            return
        log.debug("closing connection from %s: %s", self.client[0] if self.client else "-", why)
        if answer is not None:
            self.transport.write(answer)
        self.transport.close()


def raise_fd_limit(limits: ConnectionLimits) -> ConnectionLimits:
    """Make room for `max_connections` descriptors: raise the soft limit toward the hard one,
    and when that is not enough, lower the connection cap so that accepting never fails."""
    needed = limits.max_connections + _RESERVED_FDS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        cap = max(1, soft - _RESERVED_FDS)
        log.warning(
            "AUTHSVC_MAX_CONNECTIONS=%d needs %d file descriptors but the limit is %d; "
            "serving at most %d connections per process",
            limits.max_connections,
            needed,
            soft,
            cap,
        )
        return ConnectionLimits(**{**vars(limits), "max_connections": cap})
    return limits


class MetricsAwareMultiprocess(Multiprocess):
    """uvicorn's supervisor, telling prometheus-client when a worker is gone (died and replaced,
    restarted on SIGHUP, or stopped): its live gauges (pool usage) stop counting, while its
    counters stay in the directory, as the group's counts must not go backwards."""

    def __init__(self, config: uvicorn.Config, sockets: list[Any], metrics_dir: str) -> None:
        super().__init__(config, sockets)
        self.metrics_dir = metrics_dir

    def _pids(self) -> set[int]:
        return {p.pid for p in self.processes if p.pid is not None}

    def _mark_dead(self, pids: set[int]) -> None:
        from prometheus_client.multiprocess import mark_process_dead

        for pid in pids:
            mark_process_dead(pid, self.metrics_dir)  # type: ignore[no-untyped-call]

    def _reap(self, before: set[int]) -> None:
        self._mark_dead(before - self._pids())

    def keep_subprocess_alive(self) -> None:
        before = self._pids()
        super().keep_subprocess_alive()
        self._reap(before)

    def restart_all(self) -> None:
        before = self._pids()
        super().restart_all()
        self._reap(before)

    def join_all(self) -> None:
        super().join_all()
        self._mark_dead(self._pids())  # an operator's directory outlives the run


@contextlib.contextmanager
def metrics_directory() -> Iterator[str]:
    """The run's multiprocess-metrics directory, exported as PROMETHEUS_MULTIPROC_DIR for the
    workers (they are spawned, so they import prometheus-client with it set). An operator's own
    PROMETHEUS_MULTIPROC_DIR is used and emptied first (a previous run's files would count
    again); otherwise a fresh private directory is made and removed at exit."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        os.makedirs(given, exist_ok=True)
        for name in os.listdir(given):
            if name.endswith(".db"):
                os.remove(os.path.join(given, name))
        yield given
        return
    made = tempfile.mkdtemp(prefix="authsvc-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = made
    try:
        yield made
    finally:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        shutil.rmtree(made, ignore_errors=True)


def worker_app() -> FastAPI:
    """The app in each worker. The serving process has migrated already (once, before any
    worker starts), so workers do not run migrations again."""
    from authsvc.app import create_app

    return create_app(load_settings(auto_migrate=False))


# How long a worker may take to answer the supervisor's ping (see serve()).
WORKER_HEALTHCHECK_SECONDS = 60


def serve(settings: Settings, host: str, port: int, workers: int) -> None:
    """Set up logging, make the development KEK and migrate when configured to (once, before any
    worker starts), then run uvicorn with the connection guard: in this process, or under its
    supervisor with `workers` processes. Raises ConfigError before anything starts; exits 3 when
    the server could not start, as uvicorn.run does."""
    from authsvc.observability.logs import logging_config
    from authsvc.security.secrets import load_secrets
    from authsvc.store.db import upgrade

    log_config = logging_config(settings.resolved_log_format, settings.log_level)
    logging.config.dictConfig(log_config)
    load_secrets(settings)  # create the development KEK once, before workers race for it
    if settings.key_encryption_key is None:
        logging.getLogger("authsvc").warning(
            "development mode: signing keys are encrypted under the key-encryption key in %s; "
            "do not use this for real deployments (set AUTHSVC_ENV=production and "
            "AUTHSVC_KEY_ENCRYPTION_KEY)",
            settings.data_dir,
        )
    if workers > 1 and settings.is_sqlite:
        log.warning("SQLite is for a single host; use PostgreSQL to scale out")
    if settings.should_auto_migrate:
        upgrade(settings.resolved_database_url)
    limits = raise_fd_limit(ConnectionLimits.from_settings(settings))
    config = GuardedConfig(
        limits,
        app="authsvc.server:worker_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http=GuardedHttpToolsProtocol,
        # No WebSocket routes; an upgrade would also take the connection out of the guard.
        ws="none",
        log_level=settings.log_level.lower(),
        # Applied in every worker; authsvc.access writes the one line per request instead.
        log_config=log_config,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=limits.keepalive_timeout,
        # The supervisor pings each worker and kills one that does not answer in time, but a
        # worker answers only once it has imported the app: on a busy host that takes longer
        # than uvicorn's 5 s, and the workers were killed and restarted for ever.
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
    )
    server = uvicorn.Server(config)
    if workers > 1:
        with metrics_directory() as metrics_dir:
            MetricsAwareMultiprocess(config, [config.bind_socket()], metrics_dir).run()
        return
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(3)
