"""Real processes for tests: the CLI, and a live `python -m authsvc serve` (started and stopped
by a context manager; listens on 127.0.0.1 only)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

CLI = [sys.executable, "-m", "authsvc"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
    env.update(
        AUTHSVC_ARGON2_TIME_COST="1",
        AUTHSVC_ARGON2_MEMORY_COST="1024",
        AUTHSVC_ARGON2_PARALLELISM="1",
    )
    env.update(extra)
    return env


def cli(cwd: Path, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        env=clean_env(**env),
        timeout=60,
        check=False,
    )


@contextmanager
def live_server(
    workdir: Path,
    host: str = "127.0.0.1",
    *,
    set_issuer: bool = True,
    args: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    **env: str,
) -> Iterator[str]:
    """Yield the base URL (http://{host}:{port}) of a ready server run from `workdir`.

    The issuer is the server's own URL unless `set_issuer` is false (the embedded default);
    `args` are further `serve` options (`--workers`); `environ` and `env` are settings."""
    env = {**(environ or {}), **env}
    port = free_port()
    base = f"http://{host}:{port}"
    log = workdir / "serve.log"
    if set_issuer:
        env = {"AUTHSVC_ISSUER": base, **env}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*CLI, "serve", "--port", str(port), *args],
            cwd=workdir,
            env=clean_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90  # a server starting on a busy machine
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
