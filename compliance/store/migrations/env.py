"""Alembic environment for the policy database (configured in code by compliance.store.migrate).

The caller either hands over a live connection in `config.attributes["connection"]` or sets
`sqlalchemy.url`; offline (SQL script) mode is supported for reviewing DDL.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from compliance.store.engine import create_store_engine
from compliance.store.schema import metadata

config = context.config


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transactional_ddl=True,  # SQLite too: the store engine emits real BEGINs
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    """Emit the migration as SQL for the configured URL's dialect."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Migrate over the given connection, or over a fresh one to `sqlalchemy.url`."""
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        _configure(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("alembic: no connection and no sqlalchemy.url configured")
    engine = create_store_engine(url)
    try:
        with engine.connect() as conn:
            _configure(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
