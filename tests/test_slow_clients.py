"""Slow and greedy clients against a real `authsvc serve` (one worker and two), over raw sockets:
trickled headers and bodies are cut at their deadlines, idle keep-alive connections are closed,
the per-address and per-process connection caps hold, and /healthz answers meanwhile.

Every address in 127.0.0.0/8 reaches the loopback server, so each scenario connects from its own
source address and the per-address caps of one do not touch another."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.live import live_server

pytestmark = pytest.mark.slow

HEADER_TIMEOUT = 1.5
BODY_TIMEOUT = 1.5
KEEPALIVE = 1
PER_CLIENT = 4
PER_PROCESS = 12
# A cut must come at its deadline, give or take the loop's and the machine's latency.
SLACK = 1.5


@pytest.fixture(params=[1, 2], ids=["1-worker", "2-workers"], scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, int]]:
    workers: int = request.param
    workdir: Path = tmp_path_factory.mktemp(f"slow-{workers}")
    with live_server(
        workdir,
        args=("--workers", str(workers)),
        AUTHSVC_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        AUTHSVC_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT),
        AUTHSVC_KEEPALIVE_TIMEOUT_SECONDS=str(KEEPALIVE),
        AUTHSVC_MAX_CONNECTIONS_PER_CLIENT=str(PER_CLIENT),
        AUTHSVC_MAX_CONNECTIONS=str(PER_PROCESS),
    ) as base:
        yield int(base.rsplit(":", 1)[1]), workers


def _connect(port: int, source: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))


def _trickle(sock: socket.socket, payload: bytes, every: float = 0.25) -> tuple[float, bytes]:
    """Send `payload` one byte every `every` seconds until the server closes the connection;
    the seconds that took and whatever the server answered. Fails if it never closes."""
    started = time.monotonic()
    sock.settimeout(every)
    for byte in payload:
        try:
            sock.sendall(bytes([byte]))
            answer = sock.recv(4096)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started, b""
        return time.monotonic() - started, answer
    raise AssertionError("the server read the whole trickle without closing")


def _closed_after(sock: socket.socket, within: float) -> tuple[float, bytes]:
    """Wait (sending nothing) until the server closes; the seconds and what it sent first."""
    started = time.monotonic()
    sock.settimeout(within)
    answer = b""
    try:
        while chunk := sock.recv(4096):
            answer += chunk
    except ConnectionResetError:
        pass
    return time.monotonic() - started, answer


def _healthz(port: int) -> int:
    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code


def _slow_headers(port: int) -> tuple[float, bytes]:
    with _connect(port, "127.0.0.11") as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        return _trickle(sock, b"X-Slow: " + b"a" * 200)


def _slow_body(port: int) -> tuple[float, bytes]:
    with _connect(port, "127.0.0.12") as sock:
        sock.sendall(
            b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200\r\n\r\n"
        )
        return _trickle(sock, b"{" + b" " * 199)


def _silent(port: int) -> tuple[float, bytes]:
    with _connect(port, "127.0.0.13") as sock:
        return _closed_after(sock, HEADER_TIMEOUT + 5)


def _idle_keepalive(port: int) -> tuple[float, bytes]:
    with _connect(port, "127.0.0.14") as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        first = b""
        while not first.endswith(b"}"):
            first += sock.recv(4096)
        assert first.startswith(b"HTTP/1.1 200"), first
        return _closed_after(sock, KEEPALIVE + 5)


def test_slow_and_idle_connections_are_cut_while_healthz_answers(server: tuple[int, int]) -> None:
    port, _ = server
    with ThreadPoolExecutor(4) as pool:
        headers = pool.submit(_slow_headers, port)
        body = pool.submit(_slow_body, port)
        silent = pool.submit(_silent, port)
        keepalive = pool.submit(_idle_keepalive, port)
        time.sleep(0.5)
        # The slow clients are all being held: others are still served.
        assert _healthz(port) == 200
        headers_after, headers_answer = headers.result()
        body_after, _ = body.result()
        silent_after, silent_answer = silent.result()
        keepalive_after, keepalive_answer = keepalive.result()

    assert HEADER_TIMEOUT - 0.3 < headers_after < HEADER_TIMEOUT + SLACK
    assert headers_answer.startswith(b"HTTP/1.1 408")
    assert BODY_TIMEOUT - 0.3 < body_after < BODY_TIMEOUT + SLACK
    # A connection that never sends a request gets the header deadline too.
    assert HEADER_TIMEOUT - 0.3 < silent_after < HEADER_TIMEOUT + SLACK
    assert silent_answer.startswith(b"HTTP/1.1 408")
    assert KEEPALIVE - 0.3 < keepalive_after < KEEPALIVE + SLACK
    assert keepalive_answer == b""


BUSY = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def _refused(sockets: list[socket.socket]) -> int:
    """How many of `sockets` the server answered 503 and closed at once (well before the header
    deadline closes the ones it holds)."""
    time.sleep(0.5)
    readable, _, _ = select.select(sockets, [], [], 0)
    for sock in readable:
        try:
            answer = sock.recv(4096)
        except ConnectionResetError:
            answer = b""
        assert answer in (b"", BUSY)
    return len(readable)


def test_one_address_cannot_hold_more_than_its_share(server: tuple[int, int]) -> None:
    port, workers = server
    allowed = PER_CLIENT * workers  # the cap is per process; each worker accepts its part
    opened = [_connect(port, "127.0.0.21") for _ in range(allowed + 6)]
    try:
        assert _refused(opened) >= 6
        # Another address is served meanwhile.
        assert _healthz(port) == 200
    finally:
        for sock in opened:
            sock.close()


def test_a_process_holds_at_most_its_connection_cap(server: tuple[int, int]) -> None:
    port, workers = server
    allowed = PER_PROCESS * workers
    sources = [f"127.0.1.{i}" for i in range(1, (allowed + 6) // (PER_CLIENT - 1) + 2)]
    opened = [_connect(port, sources[i // (PER_CLIENT - 1)]) for i in range(allowed + 6)]
    try:
        assert _refused(opened) >= 6
    finally:
        for sock in opened:
            sock.close()
    # Capacity comes back as soon as the connections are gone.
    deadline = time.monotonic() + 30
    while _healthz(port) != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_header_block_that_never_ends_is_cut_at_its_size_limit(server: tuple[int, int]) -> None:
    port, _ = server
    with _connect(port, "127.0.0.31") as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        line = b"X-Filler: " + b"a" * 4000 + b"\r\n"
        sent = 0
        try:
            for _ in range(64):  # 256 KB, far above AUTHSVC_MAX_HEADER_BYTES (16 KiB)
                sock.sendall(line)
                sent += len(line)
                time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            pass
        _, answer = _closed_after(sock, HEADER_TIMEOUT)
    assert sent < 64 * 1024
    assert answer in (
        b"",
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n"
        b"connection: close\r\n\r\n",
    )
