"""Appending routing records, encoded once by `record_codec`, to the audit chain.

Same locking and hashing as `ledger.append_entries` (the chain-head row locked for the
transaction, entries numbered and hashed after it, the head moved), but nothing is
re-serialised: each record's hash is spliced from its canonical bytes and its JSON texts are
bound as they are. Rows go in as multi-row INSERTs of `CHUNK` rows: one statement step per
chunk rather than per row (sqlite3 lets go of the GIL around every step: fewer steps, fewer
hand-overs to and from the busy event loop).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import Any

from sqlalchemy import Connection

from compliance.audit.canonical import JSON_FIELDS, Kind
from compliance.audit.ledger import TABLES, ChainHead, lock_head, set_head
from compliance.audit.record_codec import INSERT_COLUMNS, MARKERS, Encoded

CHUNK = 32
"""Rows per INSERT statement (32 x 23 parameters stays under SQLite's oldest limit, 999)."""


def _row_marks(dialect: str) -> str:
    """One row's VALUES group: JSON values bound as their canonical text (PostgreSQL's json
    type keeps the text as given), the timestamp as SQLite's storage text or, on PostgreSQL,
    as canonical ISO 8601 text the server casts."""
    if dialect == "sqlite":
        marks = ["?"] * len(INSERT_COLUMNS)
    else:
        json_names = JSON_FIELDS[Kind.DECISION]
        marks = [
            "CAST(%s AS TIMESTAMP WITH TIME ZONE)"
            if name == "decided_at"
            else "CAST(%s AS JSON)"
            if name in json_names
            else "%s"
            for name in INSERT_COLUMNS
        ]
    return f"({', '.join(marks)})"


_MARKS = {dialect: _row_marks(dialect) for dialect in ("sqlite", "postgresql")}
_PREFIX = {
    kind: f"INSERT INTO {TABLES[kind].name} ({', '.join(INSERT_COLUMNS)}) VALUES "
    for kind in MARKERS
}


def insert_sql(dialect: str, rows: int, kind: Kind = Kind.DECISION) -> str:
    """INSERT of `rows` rows in `record_codec.INSERT_COLUMNS` order into `kind`'s table."""
    return _PREFIX[kind] + ", ".join([_MARKS[dialect]] * rows)


_FULL = {
    (dialect, kind): insert_sql(dialect, CHUNK, kind) for dialect in _MARKS for kind in MARKERS
}


def append_decisions(conn: Connection, items: Sequence[Encoded]) -> int:
    """Insert encoded routing records as the next chain entries, in order, each into its
    kind's table (decisions, write-ahead intents); returns how many.

    Must run inside a write transaction (see ledger.py); the caller commits. Rows are hashed
    and inserted a chunk at a time, so this thread never holds the GIL for long (the event
    loop waits for it meanwhile).
    """
    if not items:
        return 0
    head = lock_head(conn)
    seq, prev = head.seq, head.record_hash
    dialect = "sqlite" if conn.dialect.name == "sqlite" else "postgresql"
    for kind, run in _runs(items):
        for start in range(0, len(run), CHUNK):
            rows: list[tuple[Any, ...]] = []
            for item in run[start : start + CHUNK]:
                seq += 1
                stamp = item.decided_at  # canonical: YYYY-MM-DDTHH:MM:SS.ffffffZ
                if dialect == "sqlite":
                    stamp = f"{stamp[:10]} {stamp[11:26]}"  # as SQLAlchemy stores UTCDateTime
                row, prev = item.chain_row(seq, prev, stamp)
                rows.append(row)
            full = len(rows) == CHUNK
            sql = _FULL[dialect, kind] if full else insert_sql(dialect, len(rows), kind)
            conn.exec_driver_sql(sql, tuple(chain.from_iterable(rows)))
    set_head(conn, ChainHead(seq, prev))
    return len(items)


def _runs(items: Sequence[Encoded]) -> list[tuple[Kind, Sequence[Encoded]]]:
    """`items` cut into runs of one kind, in order (usually one run)."""
    runs: list[tuple[Kind, Sequence[Encoded]]] = []
    start = 0
    for index in range(1, len(items) + 1):
        if index == len(items) or items[index].kind is not items[start].kind:
            runs.append((items[start].kind, items[start:index]))
            start = index
    return runs
