"""The routing decision log: hash-chained batch appends and reads of `routing_decisions`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from compliance.audit.canonical import Kind
from compliance.audit.ledger import append_entries
from compliance.store.engine import BEGIN_OPTION, create_store_engine
from compliance.store.errors import StoreError, StoreUnavailable, translate_errors
from compliance.store.schema import routing_decisions

__all__ = ["COLUMNS", "RoutingLogStore", "StoreError", "StoreUnavailable"]

_CHAIN_COLUMNS = frozenset({"seq", "chain_seq", "prev_hash", "record_hash"})
COLUMNS: tuple[str, ...] = tuple(
    c.name for c in routing_decisions.columns if c.name not in _CHAIN_COLUMNS
)
"""Keys a record may carry (every column except `seq` and the chain columns, assigned here)."""

_REQUIRED = frozenset({"decision_id", "decided_at", "outcome", "status_code"})
_EMPTY_LISTS = frozenset({"attempts", "jurisdictions", "regimes", "reasons"})


def _without_logged(conn: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows whose decision_id is neither logged yet nor repeated earlier in `rows`."""
    ids = routing_decisions.c.decision_id
    logged = set(
        conn.execute(select(ids).where(ids.in_([r["decision_id"] for r in rows]))).scalars()
    )
    fresh = []
    for row in rows:
        if row["decision_id"] not in logged:
            logged.add(row["decision_id"])
            fresh.append(row)
    return fresh


def _normalise(index: int, record: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(record) - set(COLUMNS))
    if unknown:
        raise ValueError(f"records[{index}]: unknown columns {unknown}")
    missing = sorted(_REQUIRED - set(record))
    if missing:
        raise ValueError(f"records[{index}]: missing {missing}")
    decided_at = record["decided_at"]
    if not isinstance(decided_at, datetime) or decided_at.tzinfo is None:
        raise ValueError(f"records[{index}].decided_at: must be a timezone-aware datetime")
    row: dict[str, Any] = {}
    for column in COLUMNS:
        value = record.get(column)
        if value is None and column in _EMPTY_LISTS:
            value = []
        elif value is None and column == "explanation":
            value = {}
        row[column] = value
    return row


class RoutingLogStore:
    """Append-only access to `routing_decisions`; StoreUnavailable if the database is down."""

    def __init__(self, database: str | Engine) -> None:
        """Use an existing engine (e.g. PolicyStore.engine), or create one from a URL."""
        self._owns_engine = not isinstance(database, Engine)
        self.engine = create_store_engine(database) if isinstance(database, str) else database

    def close(self) -> None:
        """Release pooled connections (only if this store created the engine)."""
        if self._owns_engine:
            self.engine.dispose()

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Connection]:
        with translate_errors(), self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.execution_options(**{BEGIN_OPTION: "BEGIN IMMEDIATE" if write else "BEGIN"})
            with conn.begin():
                yield conn

    def append_batch(
        self, records: Sequence[Mapping[str, Any]], *, skip_existing: bool = False
    ) -> int:
        """Insert records in one transaction (all or none) as the next audit-chain entries.

        Keys are column names (see COLUMNS); `decision_id`, `decided_at` (tz-aware),
        `outcome` and `status_code` are required, absent list columns default to [] and
        `explanation` to {}. Bad records raise ValueError before anything is written; a
        duplicate `decision_id` raises StoreError, or with `skip_existing` (replaying a spool)
        the records already logged are left out. Returns how many records were written.
        """
        rows = [_normalise(i, r) for i, r in enumerate(records)]
        if not rows:
            return 0
        with self._transaction(write=True) as conn:
            if skip_existing:
                rows = _without_logged(conn, rows)
            append_entries(conn, Kind.DECISION, rows)
        return len(rows)

    def count(self) -> int:
        """Number of logged decisions."""
        with self._transaction(write=False) as conn:
            return int(
                conn.execute(select(func.count()).select_from(routing_decisions)).scalar_one()
            )

    def get(self, decision_id: str) -> dict[str, Any] | None:
        """One decision (every column, `seq` included), or None."""
        with self._transaction(write=False) as conn:
            row = (
                conn.execute(
                    select(routing_decisions).where(routing_decisions.c.decision_id == decision_id)
                )
                .mappings()
                .first()
            )
        return None if row is None else dict(row)

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest `limit` decisions, newest first (by insertion order)."""
        with self._transaction(write=False) as conn:
            result = conn.execute(
                select(routing_decisions).order_by(routing_decisions.c.seq.desc()).limit(limit)
            )
            return [dict(r) for r in result.mappings()]
