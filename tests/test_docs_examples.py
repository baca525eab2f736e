"""The shell examples of the README and docs/ run as written against a live server.

A block is run when the line before its ```sh fence is `<!-- docs-test: run -->`. The blocks of
one page run in order in one bash process (so variables carry from block to block); pages run in
the order of PAGES, against one server, because the docs pages build on the README walk-through
(its user alice). Blocks name the server only through `BASE=http://127.0.0.1:8000`, which is
replaced by the test server's address. They run in a scratch directory whose `.venv` is the
repository's, so `.venv/bin/authsvc` and `.venv/bin/python` are the ones `make test` installed,
and nothing they write lands in the checkout.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authsvc.config import Settings
from tests.live import clean_env, free_port, live_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    "README.md",
    "docs/cli.md",
    "docs/tokens.md",
    "docs/oauth-clients.md",
    "docs/resource-servers.md",
    "docs/dpop.md",
    "docs/admin-api.md",
    "docs/accounts.md",
]
MARKER = "<!-- docs-test: run -->"
DOCUMENTED_BASE = "BASE=http://127.0.0.1:8000"
_FENCE = re.compile(r"^```sh\n(.*?)^```$", re.S | re.M)


def runnable_blocks(page: Path) -> list[str]:
    text = page.read_text()
    blocks = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        if before.strip() == MARKER:
            blocks.append(match.group(1))
    return blocks


def test_runnable_blocks_name_the_server_only_through_base() -> None:
    for name in PAGES:
        blocks = runnable_blocks(ROOT / name)
        assert blocks, f"{name}: no block marked {MARKER}"
        script = "\n".join(blocks)
        assert script.count(DOCUMENTED_BASE) <= 1, f"{name}: set {DOCUMENTED_BASE} once"
        # Sample answers in comments may show the documented address; commands may not.
        commands = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
        rest = "\n".join(commands).replace(DOCUMENTED_BASE, "")
        assert ":8000" not in rest, f"{name}: refer to the server as $BASE"


def test_no_unmarked_page_has_markers() -> None:
    # A marker on a page the test does not know about would silently never run.
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    marked = {
        str(p.relative_to(ROOT))
        for p in pages
        if MARKER in (line.strip() for line in p.read_text().splitlines())
    }
    assert marked == set(PAGES)


def test_configuration_page_names_every_setting() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    missing = [
        name
        for name in ("AUTHSVC_" + field.upper() for field in Settings.model_fields)
        if f"`{name}`" not in page
    ]
    assert missing == []


def _cli_commands() -> dict[str, set[str]]:
    """Every command of the CLI (`users create`) with its long options."""
    import typer.main

    from authsvc.cli import app

    found: dict[str, set[str]] = {}

    def walk(command: Any, path: tuple[str, ...]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, (*path, name))
            return
        found[" ".join(path)] = {
            opt
            for param in command.params
            for opt in (*param.opts, *getattr(param, "secondary_opts", ()))
            if opt.startswith("--")
        }

    walk(typer.main.get_command(app), ())
    return found


def test_the_cli_page_lists_every_command_and_option_as_they_are() -> None:
    """The table in docs/cli.md: each command it names exists with the options it shows, and
    every command and option of the CLI is in it."""
    commands = _cli_commands()
    groups = {name.split()[0] for name in commands if " " in name}
    documented: dict[str, set[str]] = {}
    for row in (ROOT / "docs" / "cli.md").read_text().splitlines():
        if not row.startswith("| `authsvc "):
            continue
        group = None
        # `authsvc keys rotate [...]`, `keys list`: later fragments may drop `authsvc`.
        for fragment in re.findall(r"`([^`]+)`", row.split(" | ")[0]):
            words = fragment.removeprefix("authsvc ").split()
            if words[0].startswith("--"):  # `authsvc --version`
                continue
            if fragment.startswith("authsvc "):
                group = words[0] if words[0] in groups else None
                name = " ".join(words[:2]) if group else words[0]
            elif group is not None:
                name = " ".join(words[:2]) if words[0] == group else f"{group} {words[0]}"
            else:
                continue
            assert name in commands, (name, row)
            documented.setdefault(name, set()).update(re.findall(r"--[a-z][a-z-]*", fragment))
    for name, options in documented.items():
        assert options <= commands[name], (name, options - commands[name])
    assert set(commands) == set(documented), set(commands) ^ set(documented)
    for name, options in commands.items():
        assert options <= documented[name] | {"--revocation"}, (name, options - documented[name])


# `POST /auth/login`, `DELETE /admin/users/{id}`, `GET`/`POST /oauth/userinfo`
_ENDPOINT = re.compile(r"`((?:(?:GET|POST|PATCH|PUT|DELETE)`?/?`?)+) (/[^`\s?]*)")
# Served outside the OpenAPI document: the metrics scrape and the document itself.
_UNDOCUMENTED_IN_SCHEMA = {"GET /metrics", "GET /openapi.json"}


def _template(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_the_endpoints_the_docs_name_are_the_apps(tmp_path: Path) -> None:
    """Every `METHOD /path` in the README and docs/ is an operation of the app (parameter names
    aside), and every operation's path is named somewhere in them."""
    from authsvc.app import create_app
    from tests.conftest import make_settings

    app = create_app(make_settings(f"sqlite:///{tmp_path}/unused.db", tmp_path / "data"))
    operations = {
        f"{method.upper()} {_template(path)}"
        for path, item in app.openapi()["paths"].items()
        for method in item
    }
    text = _all_docs()
    named = {
        f"{method} {_template(path)}"
        for methods, path in _ENDPOINT.findall(text)
        for method in re.findall(r"GET|POST|PATCH|PUT|DELETE", methods)
    }
    assert named - _UNDOCUMENTED_IN_SCHEMA - operations == set()
    assert {op for op in operations if op.split()[1] not in _template(text)} == set()


def _all_docs() -> str:
    return "\n".join(p.read_text() for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")])


def test_every_error_code_is_documented() -> None:
    """Clients switch on `error`: each code the server can answer is named in the README or
    docs/. `conflict` alone is left out: a fresh random client id that is already taken."""
    from authsvc.errors import AuthError

    codes: set[str] = set()
    pending: list[type[AuthError]] = [AuthError]
    while pending:
        for sub in pending.pop().__subclasses__():
            codes.add(sub.code)
            pending.append(sub)
    text = _all_docs()
    undocumented = {c for c in codes if f"`{c}`" not in text and f'"{c}"' not in text}
    assert undocumented - {"conflict"} == set()


def test_the_audit_trail_table_names_every_event() -> None:
    """docs/operations.md's table of audit events is the operator's reference: all of them."""
    from authsvc.services import audit

    page = (ROOT / "docs" / "operations.md").read_text()
    table = page[page.index("## Audit trail") : page.index("## Housekeeping")]
    events = {v for k, v in vars(audit).items() if k.isupper() and isinstance(v, str)}
    assert {e for e in events if f"`{e}`" not in table} == set()


_LINK = re.compile(r"\]\(([^)#\s]+\.md)?(?:#([^)\s]+))?\)")


def _anchors(page: Path) -> set[str]:
    # GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens.
    prose = re.sub(r"^```.*?^```$", "", page.read_text(), flags=re.S | re.M)
    headings = re.findall(r"^#+ (.+)$", prose, re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_links_between_pages_resolve() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target, anchor in _LINK.findall(page.read_text()):
            linked = (page.parent / target).resolve() if target else page
            if not linked.exists() or (anchor and anchor not in _anchors(linked)):
                broken.append(f"{page.relative_to(ROOT)}: {target}#{anchor}")
    assert broken == []


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("curl") is None or shutil.which("bash") is None:
        pytest.skip("the docs' examples need curl and bash")
    venv = ROOT / ".venv"
    if not (venv / "bin" / "authsvc").exists():
        pytest.skip("the docs call .venv/bin/authsvc: run `make test` (it creates .venv)")
    work = tmp_path_factory.mktemp("docs")
    (work / ".venv").symlink_to(venv)
    return work


@pytest.fixture(scope="module")
def env(workdir: Path) -> dict[str, str]:
    # The CLI in the blocks must reach the server's database and development KEK; the accounts
    # page runs its own mail server on the port the server sends to.
    return {
        "AUTHSVC_DATA_DIR": str(workdir / "data"),
        "AUTHSVC_SIGNUP_ENABLED": "true",
        "AUTHSVC_SMTP_URL": f"smtp://127.0.0.1:{free_port()}",
        "AUTHSVC_MAIL_RETRY_BASE_SECONDS": "0.2",
    }


@pytest.fixture(scope="module")
def server(workdir: Path, env: dict[str, str]) -> Iterator[str]:
    with live_server(workdir, environ=env) as base:
        yield base


def run_page(name: str, base: str, workdir: Path, env: dict[str, str]) -> str:
    script = "\n".join(runnable_blocks(ROOT / name)).replace(DOCUMENTED_BASE, f"BASE={base}")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=workdir,
        env=clean_env(AUTHSVC_ISSUER=base, **env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


# Every page's blocks run the CLI many times over; the limit is for a hung run, not a slow one.
@pytest.mark.timeout(900)
def test_docs_examples_run_in_order(server: str, workdir: Path, env: dict[str, str]) -> None:
    outputs = {name: run_page(name, server, workdir, env) for name in PAGES}

    readme = outputs["README.md"]
    assert '"username":"alice"' in readme and '"roles":["admin"]' in readme
    assert readme.rstrip().endswith("204\n401")
    assert "Verdict: VALID" in outputs["docs/resource-servers.md"]
    assert outputs["docs/dpop.md"].splitlines() == [
        "DPoP",
        "200 alice",
        '401 DPoP error="invalid_token", algs="ES256 RS256"',
        "200 DPoP",
    ]
    admin = outputs["docs/admin-api.md"]
    assert '"username":"dave"' in admin and '"actor":"user:' in admin
    accounts = outputs["docs/accounts.md"]
    assert accounts.count('{"status":"accepted"') == 2
    # verify, log in, reset, the same link again; TOTP turned off with a recovery code
    statuses = [line for line in accounts.splitlines() if line.isdigit()]
    assert statuses == ["204", "200", "204", "401", "204"]
    assert '"error":"mfa_required"' in accounts and "['pwd', 'otp', 'mfa']" in accounts
