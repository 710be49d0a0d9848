"""Run the policy database migrations (Alembic, configured in code: no alembic.ini needed)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, select

from compliance.store.engine import create_store_engine, sqlite_file
from compliance.store.errors import translate_errors

_MIGRATION_LOCK_KEY = 0x52474D49  # "RGMI": one migrator at a time on PostgreSQL
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str | None = None) -> Config:
    """An Alembic Config pointing at the bundled migrations (and at `database_url`, if given)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if database_url is not None:
        # ConfigParser interpolates '%': escape it so URL-encoded passwords survive.
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest migration revision shipped with this code."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def upgrade(database_url: str) -> None:
    """Migrate the database to head, creating a SQLite file (and its directory) if needed.

    Raises StoreUnavailable if the database cannot be reached.
    """
    path = sqlite_file(database_url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    config = alembic_config(database_url)
    engine = create_store_engine(database_url)
    try:
        with translate_errors(), engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                # Replicas starting together migrate one at a time; the others then find head.
                connection.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()
    finally:
        engine.dispose()


def current_revision(database_url: str) -> str | None:
    """The revision the database is at; None if never migrated (or the SQLite file is absent)."""
    path = sqlite_file(database_url)
    if path is not None and not path.exists():
        return None
    engine = create_store_engine(database_url)
    try:
        with translate_errors(), engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
