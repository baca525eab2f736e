"""authsvc.verifier must import without the server: no database, migration or password code."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKED = (
    "authsvc.store",
    "authsvc.services",
    "authsvc.api",
    "authsvc.app",
    "authsvc.config",
    "authsvc.errors",
    "authsvc.security",
    "sqlalchemy",
    "alembic",
    "passlib",
    "asyncpg",
    "aiosqlite",
    "pydantic_settings",
    "jwt",
)


def test_verifier_imports_with_server_modules_blocked() -> None:
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys
        BLOCKED = {BLOCKED!r}

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                    raise ImportError("blocked: " + name)
                return None

        sys.meta_path.insert(0, Block())
        import authsvc.verifier
        import authsvc.verifier.inspect
        from authsvc.verifier import Verifier, VerifierMiddleware
        v = Verifier(issuer="https://a.test", audience="x", jwks={{"keys": []}}, revocations=False)
        v.require(scopes=["api"])  # the FastAPI dependency, fastapi being installed here
        loaded = [m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED)]
        assert not loaded, loaded
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_jose_needs_only_cryptography() -> None:
    """The token format both sides share: the verifier's dependencies minus httpx and FastAPI."""
    blocked = (*BLOCKED, "httpx", "fastapi", "starlette", "pydantic", "authsvc.verifier")
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys
        BLOCKED = {blocked!r}

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                    raise ImportError("blocked: " + name)
                return None

        sys.meta_path.insert(0, Block())
        import authsvc.jose.access_token, authsvc.jose.bearer, authsvc.jose.jws
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
