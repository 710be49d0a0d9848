"""AuditReader: read-only access to the routing log for search, explanation and reports."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine

from compliance.audit_query import report, search
from compliance.audit_query.filters import DecisionFilter
from compliance.store.engine import create_store_engine
from compliance.store.errors import translate_errors

__all__ = ["AuditReader"]


class AuditReader:
    """Searches and reports over `routing_decisions` (SQLite or PostgreSQL).

    Database errors surface as StoreUnavailable / StoreError; malformed filters or cursors as
    FilterError naming the field.
    """

    def __init__(self, database: str | Engine) -> None:
        """Use an existing engine (e.g. the gateway's), or create one from a URL."""
        self._owns_engine = not isinstance(database, Engine)
        self.engine = create_store_engine(database) if isinstance(database, str) else database

    def close(self) -> None:
        """Release pooled connections (only if this reader created the engine)."""
        if self._owns_engine:
            self.engine.dispose()

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """One read-only transaction: every query in it sees the same snapshot."""
        with translate_errors(), self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            with conn.begin():
                yield conn

    def search(self, spec: DecisionFilter, limit: int, cursor: str | None = None) -> search.Page:
        """One page of records matching `spec`, newest first, after `cursor`."""
        with self._read() as conn:
            return search.search(conn, spec, limit, cursor)

    def get(self, decision_id: str) -> dict[str, Any] | None:
        """One record with every column, or None."""
        with self._read() as conn:
            return search.get(conn, decision_id)

    def report(self, spec: DecisionFilter) -> report.Report:
        """Outcome counts, jurisdiction x region matrix, refusals and re-evaluation."""
        with self._read() as conn:
            return report.build_report(conn, spec)
