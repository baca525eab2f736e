"""Calling the app in process, as uvicorn would, without a socket: for the in-process benchmarks
(bench/inproc_*.py), which measure the app's own work."""

from __future__ import annotations

from typing import Any


def scope(
    method: str, path: str, query: str = "", headers: list[tuple[bytes, bytes]] | None = None
) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
            "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": query.encode(), "root_path": "",
            "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), *(headers or [])],
            "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000), "state": {}}  # fmt: skip


async def call(
    app: Any,
    path: str,
    query: str = "",
    *,
    token: str | None = None,
    body: bytes = b"",
) -> bytes:
    """The body of a 200 answer to GET `path?query` (POST with `body`, as JSON), with
    `token` as the bearer; anything but a 200 is an AssertionError."""
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    if body:
        headers.append((b"content-type", b"application/json"))
    out: list[bytes] = []
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(m: dict[str, Any]) -> None:
        nonlocal status
        if m["type"] == "http.response.start":
            status = m["status"]
        elif m["type"] == "http.response.body":
            out.append(m.get("body", b""))

    await app(scope("POST" if body else "GET", path, query, headers), receive, send)
    assert status == 200, (status, out)
    return b"".join(out)
