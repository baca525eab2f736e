"""A live `python -m authsvc serve` for tests that need a real process (started and stopped
by a fixture; listens on 127.0.0.1 only)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.test_cli import CLI, clean_env, free_port


@contextmanager
def live_server(workdir: Path, host: str = "127.0.0.1", **env: str) -> Iterator[str]:
    """Yield the base URL (http://{host}:{port}) of a ready server run from `workdir`."""
    port = free_port()
    base = f"http://{host}:{port}"
    log = workdir / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*CLI, "serve", "--port", str(port)],
            cwd=workdir,
            env=clean_env(AUTHSVC_ISSUER=base, **env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise AssertionError(log.read_text())
            time.sleep(0.2)
        else:
            raise AssertionError("server did not become ready")
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
