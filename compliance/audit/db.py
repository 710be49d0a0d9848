"""Transactions for the audit modules (errors translated to StoreUnavailable / StoreError)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine

from compliance.store.engine import BEGIN_OPTION
from compliance.store.errors import translate_errors


@contextmanager
def transaction(engine: Engine, *, write: bool) -> Iterator[Connection]:
    """One transaction: writers take SQLite's write lock at BEGIN; readers see one snapshot."""
    with translate_errors(), engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.execution_options(**{BEGIN_OPTION: "BEGIN IMMEDIATE" if write else "BEGIN"})
        elif not write and conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            yield conn
