"""The systems under test and their databases: authsvc, the simplejwt peer, the baseline apps,
each started as its own process group on the server's cores."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from runner.common import ARGON2, PEER_DIR, PEER_VENV, PG_ADMIN, ROOT, log


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_layout() -> tuple[str, str, str]:
    """(server cpus, wrk cpus, description). The generator gets the last core; the server gets
    all cores (on 2 cores it shares one with wrk: PostgreSQL, unpinned, needs them too)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) == 1:
        one = str(cpus[0])
        return one, one, f"1 core: server, wrk and PostgreSQL all on cpu {one}"
    wrk = str(cpus[-1])
    server = ",".join(str(c) for c in cpus)
    return (
        server,
        wrk,
        f"server workers and baselines: taskset -c {server}; wrk: taskset -c {wrk} "
        f"(shares cpu {wrk} with the server); PostgreSQL: unpinned (system service)",
    )


class Server:
    """A server process group we started, stopped by its own pgid."""

    def __init__(
        self, argv: list[str], env: dict[str, str], cwd: Path, health: str, any_status: bool = False
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.env, self.cwd, self.health, self.any_status = env, cwd, health, any_status
        self.proc: subprocess.Popen[bytes] | None = None
        self.pg_db: str | None = None  # set to count its PostgreSQL backends' CPU
        self.logfile = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__

    def __enter__(self) -> Server:
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=self.logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                status = httpx.get(self.url + self.health, timeout=2).status_code
                if status == 200 or self.any_status:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.logfile.seek(0)
        output = self.logfile.read().decode(errors="replace")[-3000:]
        self.__exit__(None, None, None)
        raise RuntimeError(f"server {self.argv} did not start:\n{output}")

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(
            ["pgrep", "-g", str(self.proc.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        return [int(p) for p in out if int(p) != self.proc.pid] or [self.proc.pid]

    def __exit__(self, *_: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.logfile.close()


# --set: settings added to authsvc_env's, for A/B experiments (printed in the report).
EXTRA_SETTINGS: dict[str, str] = {}


def authsvc_env(db_url: str, workdir: Path, kek: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHSVC_", "PEER_"))}
    env.update(
        AUTHSVC_ENV="production",
        AUTHSVC_DATABASE_URL=db_url,
        AUTHSVC_DATA_DIR=str(workdir / "authsvc-data"),
        AUTHSVC_KEY_ENCRYPTION_KEY=kek,
        AUTHSVC_RATE_LIMIT_ENABLED="false",
        AUTHSVC_ACCESS_LOG="false",
        AUTHSVC_LOG_LEVEL="warning",
        AUTHSVC_ARGON2_TIME_COST=str(ARGON2[0]),
        AUTHSVC_ARGON2_MEMORY_COST=str(ARGON2[1]),
        AUTHSVC_ARGON2_PARALLELISM=str(ARGON2[2]),
    )
    env.update(EXTRA_SETTINGS)
    return env


def peer_env(db_url: str, workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHSVC_", "PEER_"))}
    env.update(
        PEER_DATABASE_URL=db_url,
        PEER_PRIVATE_KEY_FILE=str(workdir / "peer-key.pem"),
        PEER_PUBLIC_KEY_FILE=str(workdir / "peer-key.pub.pem"),
        PEER_ARGON2=",".join(str(x) for x in ARGON2),
        DJANGO_SETTINGS_MODULE="peer.settings",
    )
    return env


def ensure_peer_venv() -> Path:
    python = PEER_VENV / "bin" / "python"
    req = PEER_DIR / "requirements.txt"
    stamp = PEER_VENV / ".installed"
    if not stamp.exists() or stamp.read_text() != req.read_text():
        log(f"installing the peer into {PEER_VENV.relative_to(ROOT)} (once)")
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "-r", str(req)],
            check=True,
        )  # fmt: skip
        stamp.write_text(req.read_text())
    return python


def write_peer_keys(workdir: Path) -> None:
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (workdir / "peer-key.pem").write_bytes(
        key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    )
    (workdir / "peer-key.pub.pem").write_bytes(
        key.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
    )


@contextlib.contextmanager
def postgres_database(suffix: str = "") -> Iterator[str | None]:
    """A private database on the local PostgreSQL, dropped afterwards; None if unreachable."""
    name = f"authsvc_bench_{os.getpid()}{suffix}"
    admin = ["psql", PG_ADMIN, "-q", "-v", "ON_ERROR_STOP=1", "-c"]
    try:
        subprocess.run([*admin, f"CREATE DATABASE {name}"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        log(f"PostgreSQL unavailable at {PG_ADMIN}: {exc}; skipping it")
        yield None
        return
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        subprocess.run(
            [*admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
            check=False,
            capture_output=True,
        )
