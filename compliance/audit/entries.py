"""Reading chain entries back from both tables, merged in chain order, fast.

SQLite rows are read through the driver without SQLAlchemy's type processing (the verify
benchmark reads 100,000+ entries a second); PostgreSQL rows through SQLAlchemy Core.
"""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Iterator, Sequence
from hashlib import sha256
from typing import Any

import orjson
from sqlalchemy import Connection, func, select

from compliance.audit.canonical import FIELDS, JSON_FIELDS, TIME_FIELD, Kind, RawLayout, entry_hash
from compliance.audit.ledger import TABLES

PAGE = 20_000


class Entry:
    """One chain entry as stored: its position, links, hashed fields and a readable name.

    Rows read from SQLite keep their raw column values; `fields` parses them on first use and
    `digest` hashes them without parsing when they are in canonical form.
    """

    __slots__ = (
        "_fields",
        "_layout",
        "_values",
        "kind",
        "prev_hash",
        "record_hash",
        "row_seq",
        "seq",
    )

    def __init__(
        self,
        seq: int,
        kind: Kind,
        prev_hash: str | None,
        record_hash: str | None,
        row_seq: int,
        fields: dict[str, Any] | None = None,
        raw: tuple[RawLayout, Sequence[Any]] | None = None,
    ) -> None:
        self.seq = seq
        self.kind = kind
        self.prev_hash = prev_hash
        self.record_hash = record_hash
        self.row_seq = row_seq
        self._fields = fields
        self._layout, self._values = raw if raw is not None else (None, ())

    @property
    def fields(self) -> dict[str, Any]:
        """The hashed fields (JSON values parsed; timestamps as stored)."""
        if self._fields is None:
            names = FIELDS[self.kind]
            json_fields = JSON_FIELDS[self.kind]
            fields = {}
            for name, value in zip(names, self._values, strict=True):
                if name in json_fields and isinstance(value, str):
                    # unparsable text stays text: it cannot hash like the JSON that was written
                    with contextlib.suppress(orjson.JSONDecodeError):
                        value = orjson.loads(value)
                fields[name] = value
            self._fields = fields
        return self._fields

    def digest(self, seq: int | None = None) -> str | None:
        """The entry's hash recomputed for position `seq` (default: its own); None if unreadable."""
        seq = self.seq if seq is None else seq
        prev = self.prev_hash or ""
        if self._layout is not None:
            try:
                fast = sha256(self._layout.entry_bytes(seq, prev, self._values)).hexdigest()
            except (ValueError, TypeError):
                fast = None
            if fast == self.record_hash:
                return fast
        try:
            return entry_hash(self.kind, seq, prev, self.fields)
        except (ValueError, TypeError):
            return None  # an unreadable timestamp or value: the entry was altered

    def describe(self) -> str:
        """`decision dec-123` or `config change 4 (region eu-frankfurt update by alice)`."""
        f = self.fields
        if self.kind is Kind.DECISION:
            return f"decision {f.get('decision_id')}"
        return (
            f"config change {self.row_seq} ({f.get('object_type')} {f.get('object_id')} "
            f"{f.get('action')} by {f.get('actor')})"
        )


_LAYOUTS = {kind: RawLayout(kind, FIELDS[kind]) for kind in Kind}


def _page_sqlite(
    conn: Connection, kind: Kind, after: int, last: int | None, limit: int
) -> list[Entry]:
    table = TABLES[kind].name
    names = FIELDS[kind]
    bound = "" if last is None else f" AND chain_seq <= {int(last)}"
    sql = (
        f"SELECT chain_seq, prev_hash, record_hash, seq, {', '.join(names)} FROM {table} "
        f"WHERE chain_seq > {int(after)}{bound} ORDER BY chain_seq LIMIT {int(limit)}"
    )
    layout = _LAYOUTS[kind]
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        rows = cursor.execute(sql).fetchall()
    finally:
        cursor.close()
    return [Entry(r[0], kind, r[1], r[2], r[3], raw=(layout, r[4:])) for r in rows]


def _page_generic(
    conn: Connection, kind: Kind, after: int, last: int | None, limit: int
) -> list[Entry]:
    table = TABLES[kind]
    names = FIELDS[kind]
    query = select(
        table.c.chain_seq,
        table.c.prev_hash,
        table.c.record_hash,
        table.c.seq,
        *(table.c[n] for n in names),
    ).where(table.c.chain_seq > after)
    if last is not None:
        query = query.where(table.c.chain_seq <= last)
    query = query.order_by(table.c.chain_seq).limit(limit)
    return [
        Entry(row[0], kind, row[1], row[2], row[3], dict(zip(names, row[4:], strict=True)))
        for row in conn.execute(query)
    ]


def _iter_kind(
    conn: Connection, kind: Kind, first: int, last: int | None, page: int
) -> Iterator[Entry]:
    reader = _page_sqlite if conn.dialect.name == "sqlite" else _page_generic
    after = first - 1
    while True:
        rows = reader(conn, kind, after, last, page)
        yield from rows
        if len(rows) < page:
            return
        after = rows[-1].seq


def iter_entries(
    conn: Connection, first: int = 1, last: int | None = None, page: int = PAGE
) -> Iterator[Entry]:
    """Entries with `first <= seq <= last`, both kinds merged by seq (ties: decision first)."""
    return heapq.merge(
        _iter_kind(conn, Kind.DECISION, first, last, page),
        _iter_kind(conn, Kind.CONFIG_CHANGE, first, last, page),
        key=lambda e: e.seq,
    )


def seq_bounds(conn: Connection) -> tuple[int | None, int | None]:
    """Lowest and highest chain seq over both tables (None, None when empty)."""
    lows, highs = [], []
    for table in TABLES.values():
        low, high = conn.execute(
            select(func.min(table.c.chain_seq), func.max(table.c.chain_seq))
        ).one()
        if low is not None:
            lows.append(int(low))
            highs.append(int(high))
    return (min(lows), max(highs)) if lows else (None, None)


def unchained(conn: Connection) -> tuple[int, str | None]:
    """How many rows have no chain position, and a description of the first one."""
    total, first = 0, None
    for kind, table in TABLES.items():
        count = conn.execute(select(func.count()).where(table.c.chain_seq.is_(None))).scalar_one()
        if count and first is None:
            row = conn.execute(
                select(table.c.seq, *(table.c[n] for n in FIELDS[kind]))
                .where(table.c.chain_seq.is_(None))
                .order_by(table.c.seq)
                .limit(1)
            ).first()
            if row is not None:
                fields = dict(zip(FIELDS[kind], row[1:], strict=True))
                entry = Entry(0, kind, None, None, row[0], fields)
                first = entry.describe()
        total += int(count)
    return total, first


def seqs_with_hash(conn: Connection, record_hash: str) -> list[int]:
    """Chain positions of entries stored with this record_hash (normally zero or one)."""
    found: list[int] = []
    for table in TABLES.values():
        found.extend(
            int(s)
            for (s,) in conn.execute(
                select(table.c.chain_seq).where(table.c.record_hash == record_hash)
            )
            if s is not None
        )
    return sorted(found)


def time_field(kind: Kind) -> str:
    """The timestamp field of an entry kind."""
    return TIME_FIELD[kind]
