"""Appends to the one audit chain, inside the caller's database transaction.

Every append locks the chain-head row first (PostgreSQL: SELECT ... FOR UPDATE; SQLite: the
caller's transaction must be BEGIN IMMEDIATE), then numbers and hashes its entries after the
head and moves the head. So any number of gateway processes writing to one database still
build one gap-free chain: their appends are serialised by that row lock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Connection, Table, insert
from sqlalchemy.dialects import postgresql, sqlite

from compliance.audit.canonical import (
    GENESIS_HASH,
    Kind,
    entry_hash,
    json_text,
    normalise_fields,
    sqlite_timestamp,
)
from compliance.store.schema import (
    UTCDateTime,
    audit_chain_head,
    config_changes,
    routing_decisions,
    routing_intents,
)

TABLES: dict[Kind, Table] = {
    Kind.DECISION: routing_decisions,
    Kind.CONFIG_CHANGE: config_changes,
    Kind.INTENT: routing_intents,
}


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last entry of the chain: its sequence number (0: empty chain) and hash."""

    seq: int
    record_hash: str


def _ensure_head_row(conn: Connection) -> None:
    """Insert the genesis head if missing (databases created without the 0003 migration)."""
    row = {"id": 1, "seq": 0, "record_hash": GENESIS_HASH, "updated_at": datetime.now(UTC)}
    dialect = conn.dialect.name
    if dialect in ("postgresql", "sqlite"):
        module: Any = postgresql if dialect == "postgresql" else sqlite
        conn.execute(module.insert(audit_chain_head).values(row).on_conflict_do_nothing())
    else:  # pragma: no cover - only the two supported backends
        conn.execute(insert(audit_chain_head).values(row))


# Plain SQL for the statements run once per append: building them with SQLAlchemy Core costs
# more than the database does (they run for every batch of routing records).
_HEAD_SQL = f"SELECT seq, record_hash FROM {audit_chain_head.name} WHERE id = 1"


def placeholder(conn: Connection) -> str:
    """The driver's positional parameter marker (sqlite3: ?, psycopg: %s)."""
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def read_head(conn: Connection, *, lock: bool = False) -> ChainHead:
    """The chain head; `lock=True` holds its row lock until the transaction ends.

    A missing head row is created when locking, and read as the empty chain otherwise.
    """
    query = _HEAD_SQL
    if lock and conn.dialect.name == "postgresql":
        query += " FOR UPDATE"
    row = conn.exec_driver_sql(query).first()
    if row is None:
        if not lock:
            return ChainHead(0, GENESIS_HASH)
        _ensure_head_row(conn)
        row = conn.exec_driver_sql(query).first()
        assert row is not None
    return ChainHead(int(row[0]), str(row[1]))


def lock_head(conn: Connection) -> ChainHead:
    """Lock the head row for this transaction and return it."""
    return read_head(conn, lock=True)


def set_head(conn: Connection, head: ChainHead) -> None:
    """Move the head (the caller holds the lock)."""
    now = datetime.now(UTC)
    mark = placeholder(conn)
    conn.exec_driver_sql(
        f"UPDATE {audit_chain_head.name} SET seq = {mark}, record_hash = {mark}, "
        f"updated_at = {mark} WHERE id = 1",
        (head.seq, head.record_hash, sqlite_timestamp(now) if _is_sqlite(conn) else now),
    )


def _is_sqlite(conn: Connection) -> bool:
    return conn.dialect.name == "sqlite"


def chain_rows(
    kind: Kind, records: Sequence[Mapping[str, Any]], head: ChainHead
) -> tuple[list[dict[str, Any]], ChainHead]:
    """Rows for `records` numbered and hashed after `head`, and the new head (pure)."""
    rows: list[dict[str, Any]] = []
    seq, prev = head.seq, head.record_hash
    for record in records:
        seq += 1
        fields = normalise_fields(kind, record)
        digest = entry_hash(kind, seq, prev, fields)
        rows.append(
            {**record, **fields, "chain_seq": seq, "prev_hash": prev, "record_hash": digest}
        )
        prev = digest
    return rows, ChainHead(seq, prev)


def append_entries(
    conn: Connection, kind: Kind, records: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Insert `records` into their table as the next chain entries; returns the rows written.

    Must run inside a write transaction (see the module docstring); the caller commits.
    """
    if not records:
        return []
    head = lock_head(conn)
    rows, new_head = chain_rows(kind, records, head)
    if conn.dialect.name == "sqlite":
        _insert_sqlite(conn, TABLES[kind], rows)
    else:
        conn.execute(insert(TABLES[kind]), rows)
    set_head(conn, new_head)
    return rows


def _insert_sqlite(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert with JSON columns as canonical text (what SQLAlchemy's JSON type would store, but
    compact and key-sorted, so verify can hash stored rows without parsing them) and
    timestamps in SQLAlchemy's SQLite format; other values are bound unchanged."""
    columns = [c for c in table.columns if c.name in rows[0]]
    encoders = [_sqlite_encoder(c) for c in columns]
    names = ", ".join(c.name for c in columns)
    marks = ", ".join("?" for _ in columns)
    values = [
        tuple(encode(row[c.name]) for c, encode in zip(columns, encoders, strict=True))
        for row in rows
    ]
    conn.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", values)


def _sqlite_encoder(column: Column[Any]) -> Callable[[Any], Any]:
    if isinstance(column.type, JSON):
        null = None if column.type.none_as_null else "null"
        return lambda v: null if v is None else json_text(v)
    if isinstance(column.type, UTCDateTime):
        return lambda v: None if v is None else sqlite_timestamp(v)
    return lambda v: v
