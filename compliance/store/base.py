"""What every store shares: an engine it may own, and translated, dialect-aware transactions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from sqlalchemy import Connection, Engine

from compliance.store.engine import BEGIN_OPTION, create_store_engine
from compliance.store.errors import translate_errors


@contextmanager
def transaction(engine: Engine, *, write: bool) -> Iterator[Connection]:
    """One transaction, errors translated to Store*: writers take SQLite's write lock at BEGIN
    (BEGIN IMMEDIATE); reads on PostgreSQL see one consistent, read-only snapshot."""
    with translate_errors(), engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.execution_options(**{BEGIN_OPTION: "BEGIN IMMEDIATE" if write else "BEGIN"})
        elif not write and conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            yield conn


class EngineStore:
    """Base of the stores: wraps an engine (or creates one from a URL) and opens transactions."""

    def __init__(self, database: str | Engine) -> None:
        """Use an existing engine, or create one (WAL and busy timeout for SQLite) from a URL."""
        self._owns_engine = not isinstance(database, Engine)
        self.engine = create_store_engine(database) if isinstance(database, str) else database

    def close(self) -> None:
        """Release pooled connections (only if this store created the engine)."""
        if self._owns_engine:
            self.engine.dispose()

    def transaction(self, *, write: bool) -> AbstractContextManager[Connection]:
        """One transaction on this store's engine (see `transaction`)."""
        return transaction(self.engine, write=write)
