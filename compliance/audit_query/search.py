"""Search the routing log with filters and keyset pagination; fetch one record.

Pages are ordered newest first by (decided_at, seq) and continue strictly after the last
record shown, so records written while someone pages never shift a page: no record that
existed when paging began is skipped or shown twice. Both keys are covered by one index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, and_, or_, select, tuple_

from compliance.audit.intents import UNKNOWN_OUTCOME
from compliance.audit_query import open_intents
from compliance.audit_query.cursor import Position, decode_cursor, encode_cursor
from compliance.audit_query.filters import DecisionFilter
from compliance.store.schema import routing_decisions as t
from compliance.store.schema import routing_intents

SUMMARY_COLUMNS: tuple[str, ...] = (
    "seq",
    "decision_id",
    "decided_at",
    "tenant_id",
    "client_country",
    "subject_country",
    "data_class",
    "model",
    "outcome",
    "status_code",
    "chosen_region",
    "served_region",
    "policy_version",
    "trace_id",
    "latency_ms",
    "reasons",
)
"""What a search returns per record (the full explanation only comes with one record)."""


@dataclass(frozen=True, slots=True)
class Page:
    """One page of search results and the cursor of the next page (None on the last)."""

    records: list[dict[str, Any]]
    next_cursor: str | None


def subject_jurisdiction(record: dict[str, Any]) -> str | None:
    """Whose data it is: the declared subject country, else the client's country."""
    value = record.get("subject_country") or record.get("client_country")
    return str(value) if value else None


def conditions(spec: DecisionFilter, table: Table = t) -> list[ColumnElement[bool]]:
    """SQL conditions for a filter (each one can use an index of routing_decisions); on
    routing_intents (open write-ahead decisions) without the outcome, which is unknown."""
    t = table
    out: list[ColumnElement[bool]] = []
    if spec.since is not None:
        out.append(t.c.decided_at >= spec.since)
    if spec.until is not None:
        out.append(t.c.decided_at < spec.until)
    if spec.tenant is not None:
        out.append(t.c.tenant_id == spec.tenant)
    if spec.client_country is not None:
        out.append(t.c.client_country == spec.client_country)
    if spec.jurisdiction is not None:
        out.append(
            or_(
                t.c.subject_country == spec.jurisdiction,
                and_(t.c.subject_country.is_(None), t.c.client_country == spec.jurisdiction),
            )
        )
    if spec.data_class is not None:
        out.append(t.c.data_class == spec.data_class)
    if spec.region is not None:
        out.append(or_(t.c.chosen_region == spec.region, t.c.served_region == spec.region))
    if spec.outcome is not None and table is not routing_intents:
        out.append(t.c.outcome == spec.outcome)
    return out


def search(conn: Connection, spec: DecisionFilter, limit: int, cursor: str | None) -> Page:
    """Up to `limit` records matching `spec`, after `cursor` (FilterError if it is malformed).

    Write-ahead decisions without an outcome are listed among them, with outcome `unknown`
    (compliance.audit_query.open_intents)."""
    after = decode_cursor(cursor) if cursor else None
    rows: list[dict[str, Any]] = []
    if spec.outcome != UNKNOWN_OUTCOME:
        where = conditions(spec)
        if after is not None and after.rank == 1:
            where.append(tuple_(t.c.decided_at, t.c.seq) < tuple_(after.decided_at, after.seq))
        elif after is not None:
            where.append(t.c.decided_at < after.decided_at)
        stmt = (
            select(*(t.c[name] for name in SUMMARY_COLUMNS))
            .where(*where)
            .order_by(t.c.decided_at.desc(), t.c.seq.desc())
            .limit(limit + 1)
        )
        rows = [dict(row) for row in conn.execute(stmt).mappings()]
    if open_intents.wanted(spec):
        where = [*conditions(spec, routing_intents), *open_intents.after(after)]
        rows += open_intents.search_open(conn, where, SUMMARY_COLUMNS, limit + 1)
        rows.sort(key=_order, reverse=True)
    more = len(rows) > limit
    rows = rows[:limit]
    for row in rows:
        row["jurisdiction"] = subject_jurisdiction(row)
    next_cursor = None
    if more and rows:
        last = rows[-1]
        position = Position(last["decided_at"], int(last["seq"]), _rank(last))
        next_cursor = encode_cursor(position)
    return Page(rows, next_cursor)


def _rank(record: dict[str, Any]) -> int:
    return 0 if record.get("outcome_recorded") is False else 1


def _order(record: dict[str, Any]) -> tuple[Any, int, int]:
    return record["decided_at"], _rank(record), int(record["seq"])


def get(conn: Connection, decision_id: str) -> dict[str, Any] | None:
    """Every column of one record, or None; with `write_ahead_seq`, the chain position of its
    write-ahead entry (None if it was not written ahead). A write-ahead decision without an
    outcome is returned with outcome `unknown` (open_intents.as_unknown)."""
    record = _one(conn, t.c.decision_id == decision_id)
    if record is None:
        record = open_intents.get_open(conn, decision_id)
        if record is None:
            return None
        record["jurisdiction"] = subject_jurisdiction(record)
    record["write_ahead_seq"] = open_intents.write_ahead_seq(conn, decision_id)
    return record


def at_chain_seq(conn: Connection, chain_seq: int) -> dict[str, Any] | None:
    """Every column of the record at this chain position, or None."""
    return _one(conn, t.c.chain_seq == chain_seq)


def _one(conn: Connection, where: ColumnElement[bool]) -> dict[str, Any] | None:
    row = conn.execute(select(t).where(where)).mappings().first()
    if row is None:
        return None
    record = dict(row)
    record["jurisdiction"] = subject_jurisdiction(record)
    return record
