"""Checks made before a command touches the database, or before `serve` starts a worker.

Each turns the usual set-up mistake into one line with a hint (cli/errors.py): a database URL
that is not one, a database that cannot be reached or was never migrated, signing keys that the
configured key-encryption key cannot decrypt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from authsvc.cli.errors import KEK_MISMATCH, CliError, not_migrated
from authsvc.config import Settings

if TYPE_CHECKING:
    from authsvc.store.db import Database

DATABASE_URL_HINT = "use sqlite:///path/to/authsvc.db or postgresql://user:password@host/dbname"


async def check(
    settings: Settings,
    *,
    migrate_first: bool = False,
    will_migrate: bool = False,
    keys: bool = False,
) -> None:
    """Refuse a database that cannot serve: a bad URL, no answer, an unmigrated schema.

    `migrate_first`: migrate if the settings say so (the embedded SQLite database) before the
    schema is checked. `will_migrate`: the caller migrates next, so an older schema will do.
    `keys`: also check that the signing keys decrypt (`serve`, once, before workers start)."""
    from authsvc.store.db import Database, upgrade_if_behind

    database_url(settings)
    database = Database(settings.resolved_database_url, pool_size=1)
    try:
        await reachable(database, settings)
        if migrate_first and settings.should_auto_migrate:
            await upgrade_if_behind(database)
        revision = await migrated(database, will_migrate=will_migrate)
        # A database whose schema is still to be made has no keys yet.
        if keys and revision is not None:
            await keys_decrypt(database, settings)
    finally:
        await database.dispose()


def database_url(settings: Settings) -> str:
    """The configured database URL, refused here if SQLAlchemy could not use it; shown with
    its password hidden."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from authsvc.store.db import async_url

    url = settings.resolved_database_url
    try:
        async_url(url)
    except ArgumentError as exc:
        raise CliError("AUTHSVC_DATABASE_URL is not a database URL", DATABASE_URL_HINT) from exc
    except ValueError as exc:
        try:
            reason = f"unsupported database {make_url(url).get_backend_name()!r}"
        except (ArgumentError, ValueError):
            reason = "not a database URL"
        raise CliError(f"AUTHSVC_DATABASE_URL: {reason}", DATABASE_URL_HINT) from exc
    return make_url(url).render_as_string(hide_password=True)


async def reachable(database: Database, settings: Settings) -> None:
    from sqlalchemy.exc import DBAPIError

    from authsvc.cli.errors import database_reason

    try:
        await database.ping()
    except (DBAPIError, OSError) as exc:
        hint = (
            "check AUTHSVC_DATABASE_URL and AUTHSVC_DATA_DIR"
            if settings.is_sqlite
            else "is PostgreSQL running there, and is AUTHSVC_DATABASE_URL right?"
        )
        raise CliError(
            f"cannot connect to the database at {database_url(settings)}: {database_reason(exc)}",
            hint,
        ) from exc


async def migrated(database: Database, *, will_migrate: bool = False) -> str | None:
    """The schema revision, refused unless it is this authsvc's head (or, when the caller
    migrates next, one it can migrate from)."""
    from authsvc.store.db import alembic_config, head_revision

    revision = await database.schema_revision()
    head = head_revision()
    if revision == head:
        return revision
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    if revision is not None:
        try:
            ScriptDirectory.from_config(alembic_config(database.url)).get_revision(revision)
        except CommandError as exc:
            raise CliError(
                f"the database schema is at revision {revision}, which this authsvc does not "
                "know: a newer authsvc migrated it",
                "run that version, or restore a backup made before the upgrade",
            ) from exc
    if will_migrate:
        return revision
    raise not_migrated(revision, head)


async def keys_decrypt(database: Database, settings: Settings) -> None:
    """Every stored signing key and server secret decrypts with a key-encryption key of the
    ring (the current one or a previous one).

    In development the key-encryption key is a file that the server makes on first start; if it
    is missing while keys exist, they were made with another one (the file was deleted)."""
    from authsvc.security.secrets import KEK_FILENAME, load_secrets
    from authsvc.services.secrets import SecretService
    from authsvc.store.repositories import SigningKeyRepository

    async with database.read() as db:
        rows = await SigningKeyRepository(db).all()
    if not rows:
        return
    if settings.key_encryption_key is None and not (settings.data_dir / KEK_FILENAME).exists():
        raise CliError(
            KEK_MISMATCH.message,
            f"{settings.data_dir / KEK_FILENAME} is missing; restore it, or set "
            "AUTHSVC_KEY_ENCRYPTION_KEY",
        )
    async with database.read() as db:
        await SecretService(load_secrets(settings)).check(db)
