"""AuditReader: read-only access to the routing log for search, explanation and reports."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from compliance.audit_query import changes, report, search
from compliance.audit_query.changes import ChangeFilter
from compliance.audit_query.filters import DecisionFilter
from compliance.store.engine import BEGIN_OPTION, create_store_engine
from compliance.store.errors import StoreError, StoreUnavailable, translate_errors
from compliance.store.schema import routing_decisions

_STALE = 10
"""Re-analyse when the table has grown this many times over since statistics were taken."""

__all__ = ["AuditReader"]

logger = logging.getLogger(__name__)


class AuditReader:
    """Searches and reports over `routing_decisions`, and lists `config_changes` (SQLite or
    PostgreSQL).

    Database errors surface as StoreUnavailable / StoreError; malformed filters or cursors as
    FilterError naming the field.
    """

    def __init__(self, database: str | Engine) -> None:
        """Use an existing engine (e.g. the gateway's), or create one from a URL."""
        self._owns_engine = not isinstance(database, Engine)
        self.engine = create_store_engine(database) if isinstance(database, str) else database
        self._statistics_checked = False

    def close(self) -> None:
        """Release pooled connections (only if this reader created the engine)."""
        if self._owns_engine:
            self.engine.dispose()

    def _ensure_statistics(self) -> None:
        """Give SQLite's planner statistics for the routing log (once per reader).

        Without them SQLite guesses that `tenant_id = ?` matches a handful of rows and sorts a
        third of the log to show one page. ANALYZE reads the indexes only (about a second per
        million records) and runs again when the log has grown tenfold. PostgreSQL keeps its
        own statistics (autovacuum).
        """
        self._statistics_checked = True
        if self.engine.dialect.name != "sqlite":
            return
        try:
            with translate_errors(), self.engine.connect() as conn:
                with conn.begin():
                    if not _statistics_stale(conn):
                        return
                conn.execution_options(**{BEGIN_OPTION: "BEGIN IMMEDIATE"})
                with conn.begin():
                    if _statistics_stale(conn):  # unless another reader just did it
                        conn.exec_driver_sql("ANALYZE routing_decisions")
        except (StoreUnavailable, StoreError) as exc:
            # Only slower plans: e.g. a read-only copy of the database on an admin host.
            logger.warning("could not refresh SQLite statistics for the routing log: %s", exc)

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """One read-only transaction: every query in it sees the same snapshot."""
        if not self._statistics_checked:
            self._ensure_statistics()
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

    def search_changes(
        self, spec: ChangeFilter, limit: int, cursor: str | None = None
    ) -> changes.ChangePage:
        """One page of configuration changes matching `spec`, newest first, after `cursor`."""
        with self._read() as conn:
            return changes.search_changes(conn, spec, limit, cursor)

    def get_change(self, change_id: int) -> dict[str, Any] | None:
        """One configuration change with every column, or None."""
        with self._read() as conn:
            return changes.get_change(conn, change_id)

    def entry_at(self, chain_seq: int) -> tuple[str, dict[str, Any]] | None:
        """The chain entry at `chain_seq`: ("decision", record) or ("change", record); None if
        there is none (never written, or pruned)."""
        with self._read() as conn:
            change = changes.change_at(conn, chain_seq)
            if change is not None:
                return "change", change
            decision = search.at_chain_seq(conn, chain_seq)
            return None if decision is None else ("decision", decision)

    def report(self, spec: DecisionFilter) -> report.Report:
        """Outcome counts, jurisdiction x region matrix, refusals and re-evaluation."""
        with self._read() as conn:
            return report.build_report(conn, spec)


def _statistics_stale(conn: Connection) -> bool:
    """True if routing_decisions was never analysed or has grown tenfold since."""
    rows = conn.execute(select(func.max(routing_decisions.c.seq))).scalar() or 0
    known = _analysed_rows(conn)
    return known is None or rows > _STALE * max(known, 100)


def _analysed_rows(conn: Connection) -> int | None:
    """Rows of routing_decisions when SQLite last analysed it, or None if it never did."""
    exists = conn.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'"
    ).first()
    if exists is None:
        return None
    stat = conn.exec_driver_sql(
        "SELECT stat FROM sqlite_stat1 WHERE tbl = 'routing_decisions' LIMIT 1"
    ).scalar()
    return int(str(stat).split()[0]) if stat else None
