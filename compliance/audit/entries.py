"""Reading chain entries back from both tables, merged in chain order, fast.

On SQLite, rows are read through the driver as raw tuples (no SQLAlchemy type processing) in
the layout `RawLayout` hashes without parsing; `verify` walks those directly and turns a row
into an `Entry` only to explain a break. On PostgreSQL, rows are read through SQLAlchemy Core.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from hashlib import sha256
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, func, select

from compliance.audit.canonical import FIELDS, TIME_FIELD, Kind, RawLayout, entry_hash
from compliance.audit.ledger import TABLES

PAGE = 20_000
KINDS = (Kind.DECISION, Kind.CONFIG_CHANGE, Kind.INTENT)
PREFIX = 5  # chain_seq, prev_hash, record_hash, row seq, kind index
LAYOUTS = tuple(RawLayout(kind, PREFIX) for kind in KINDS)
"""Raw SQLite row layouts, indexed by the kind index in column 4."""

Row = Sequence[Any]


class Entry:
    """One chain entry as stored: its position, links, hashed fields and a readable name."""

    __slots__ = ("_fields", "_row", "kind", "prev_hash", "record_hash", "row_seq", "seq")

    def __init__(
        self,
        seq: int,
        kind: Kind,
        prev_hash: str | None,
        record_hash: str | None,
        row_seq: int,
        fields: dict[str, Any] | None = None,
        row: Row | None = None,
    ) -> None:
        self.seq = seq
        self.kind = kind
        self.prev_hash = prev_hash
        self.record_hash = record_hash
        self.row_seq = row_seq
        self._fields = fields
        self._row = row

    @classmethod
    def from_row(cls, row: Row) -> Entry:
        """An entry from a raw SQLite row."""
        return cls(row[0], KINDS[row[4]], row[1], row[2], row[3], row=row)

    @property
    def fields(self) -> dict[str, Any]:
        """The hashed fields (JSON values parsed)."""
        if self._fields is None:
            assert self._row is not None
            self._fields = LAYOUTS[self._row[4]].fields(self._row)
        return self._fields

    def digest(self, seq: int | None = None) -> str | None:
        """The hash recomputed for position `seq` (default: its own); None if unreadable."""
        return digest_of(self, self.seq if seq is None else seq)

    def describe(self) -> str:
        """`decision dec-123`, `write-ahead decision dec-123` or
        `config change 4 (region eu-frankfurt update by alice)`."""
        f = self.fields
        if self.kind is Kind.DECISION:
            return f"decision {f.get('decision_id')}"
        if self.kind is Kind.INTENT:
            return f"write-ahead decision {f.get('decision_id')}"
        return (
            f"config change {self.row_seq} ({f.get('object_type')} {f.get('object_id')} "
            f"{f.get('action')} by {f.get('actor')})"
        )


def digest_of(entry: Entry, seq: int) -> str | None:
    """Hex hash of `entry` at position `seq`: spliced from the raw row when that matches its
    stored hash, else from parsed fields; None if a value is unreadable (altered)."""
    prev = entry.prev_hash or ""
    row = entry._row
    if row is not None:
        try:
            fast = sha256_hex(LAYOUTS[row[4]].entry_bytes(seq, prev, row))
        except (TypeError, ValueError):
            fast = None
        if fast == entry.record_hash:
            return fast
    try:
        return entry_hash(entry.kind, seq, prev, entry.fields)
    except (TypeError, ValueError):
        return None


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256."""
    return sha256(data).hexdigest()


def _sqlite_select(kind: Kind) -> str:
    table = TABLES[kind].name
    layout = LAYOUTS[KINDS.index(kind)]
    stamp = TIME_FIELD[kind]
    columns = [f"COALESCE({name}, 'null')" for name in layout.json_names]
    columns += [_timestamp_sql(n) if n == stamp else n for n in layout.scalar_names]
    return (
        f"SELECT chain_seq, prev_hash, record_hash, seq, {KINDS.index(kind)}, "
        f"{', '.join(columns)} FROM {table} WHERE chain_seq >= ? AND chain_seq < ?"
    )


def _timestamp_sql(name: str) -> str:
    """SQLAlchemy's 'YYYY-MM-DD HH:MM:SS.ffffff' as 'YYYY-MM-DDTHH:MM:SS.ffffffZ' (else as is)."""
    return (
        f"CASE WHEN length({name}) = 26 AND substr({name}, 11, 1) = ' ' THEN "
        f"substr({name}, 1, 10) || 'T' || substr({name}, 12) || 'Z' ELSE {name} END"
    )


def _canonical_select(kind: Kind) -> str:
    """SQL making SQLite build each row's canonical text itself with json_object (compact,
    keys in the order given: sorted). Where SQLite formats a value differently from orjson (a
    float needing 16+ digits, say) the hash differs and the caller re-checks that row."""
    layout = LAYOUTS[KINDS.index(kind)]
    stamp = TIME_FIELD[kind]
    json_part = ", ".join(f"'{n}', json(COALESCE({n}, 'null'))" for n in layout.json_names)
    record = ", ".join(
        f"'{n}', {_timestamp_sql(n) if n == stamp else n}" for n in sorted(layout.scalar_names)
    )
    text = (
        f"json_object('json', json_object({json_part}), 'kind', '{kind.value}', "
        f"'prev', prev_hash, 'record', json_object({record}), 'seq', chain_seq)"
    )
    return (
        f"SELECT chain_seq, prev_hash, record_hash, {text}, {KINDS.index(kind)} "
        f"FROM {TABLES[kind].name} WHERE chain_seq >= ? AND chain_seq < ?"
    )


_SQLITE_SELECTS = {kind: _sqlite_select(kind) for kind in KINDS}
CANONICAL_SELECTS = {kind: _canonical_select(kind) for kind in KINDS}
_BY_SEQ = itemgetter(0)


def sqlite_can_hash(conn: Connection) -> bool:
    """True if this SQLite has the JSON functions, so `iter_canonical` works."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("SELECT json_object('a', json('[1]'))")
    except Exception:  # sqlite3.OperationalError: no such function
        return False
    finally:
        cursor.close()
    return True


def iter_canonical(conn: Connection, first: int, last: int, page: int = PAGE) -> Iterator[Row]:
    """(seq, prev_hash, record_hash, canonical text, kind index) in seq order (SQLite).

    A page SQLite cannot render (JSON text that does not parse: altered) is rendered in Python
    instead, with None as the text of rows that cannot be rendered at all.
    """
    for low in range(first, last + 1, page):
        high = min(low + page - 1, last)
        try:
            rows = list(_paged(conn, CANONICAL_SELECTS, low, high, page))
        except sqlite3.Error:
            rows = [_render(row) for row in _paged(conn, _SQLITE_SELECTS, low, high, page)]
        yield from rows


def _render(row: Row) -> Row:
    try:
        text: str | None = LAYOUTS[row[4]].entry_bytes(row[0], row[1], row).decode("utf-8")
    except (TypeError, ValueError):
        text = None
    return (row[0], row[1], row[2], text, row[4])


def rows_at(conn: Connection, seq: int) -> list[Row]:
    """Raw rows stored at chain position `seq` (normally one)."""
    return list(_paged(conn, _SQLITE_SELECTS, seq, seq, 1))


def _paged(
    conn: Connection, queries: dict[Kind, str], first: int, last: int, page: int
) -> Iterator[Row]:
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        for low in range(first, last + 1, page):
            high = min(low + page, last + 1)
            rows = []
            for kind in KINDS:
                rows.extend(cursor.execute(queries[kind], (low, high)).fetchall())
            rows.sort(key=_BY_SEQ)
            yield from rows
    finally:
        cursor.close()


def iter_rows(conn: Connection, first: int, last: int, page: int = PAGE) -> Iterator[Row]:
    """Raw SQLite rows with `first <= seq <= last`, both kinds, in seq order."""
    return _paged(conn, _SQLITE_SELECTS, first, last, page)


def _iter_generic(conn: Connection, first: int, last: int, page: int) -> Iterator[Entry]:
    for low in range(first, last + 1, page):
        high = min(low + page, last + 1)
        entries: list[Entry] = []
        for kind in KINDS:
            table = TABLES[kind]
            names = FIELDS[kind]
            query = select(
                table.c.chain_seq,
                table.c.prev_hash,
                table.c.record_hash,
                table.c.seq,
                *(table.c[n] for n in names),
            ).where(table.c.chain_seq >= low, table.c.chain_seq < high)
            entries.extend(
                Entry(r[0], kind, r[1], r[2], r[3], dict(zip(names, r[4:], strict=True)))
                for r in conn.execute(query)
            )
        entries.sort(key=lambda e: e.seq)
        yield from entries


def iter_entries(
    conn: Connection, first: int | None = None, last: int | None = None, page: int = PAGE
) -> Iterator[Entry]:
    """Entries with `first <= seq <= last` (default: all), both kinds merged by seq."""
    low, high = seq_bounds(conn)
    if low is None or high is None:
        return iter(())
    first = low if first is None else max(first, low)
    last = high if last is None else min(last, high)
    if conn.dialect.name == "sqlite":
        return (Entry.from_row(row) for row in iter_rows(conn, first, last, page))
    return _iter_generic(conn, first, last, page)


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
                first = Entry(0, kind, None, None, row[0], fields).describe()
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
