"""Write-ahead decisions without an outcome, as audit search, show and reports present them.

Such a decision (compliance.audit.intents) is listed like any record, with outcome `unknown`,
no status code and `outcome_recorded: false`; the filters apply to its decision (a region
filter to the region it was chosen for). It is found through the partial index of intents not
marked answered, and each is checked against the join, so an intent whose outcome is stored
never shows as unknown.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, exists, func, or_, select

from compliance.audit.intents import NO_OUTCOME_NOTE, UNKNOWN_OUTCOME
from compliance.audit_query.cursor import Position
from compliance.audit_query.filters import DecisionFilter
from compliance.store.schema import routing_decisions as d
from compliance.store.schema import routing_intents as i

OPEN = and_(i.c.outcome_logged.is_(None), ~exists().where(d.c.decision_id == i.c.decision_id))
"""An intent no outcome record joins."""


def wanted(spec: DecisionFilter) -> bool:
    """Whether open intents can match `spec` (no outcome filter, or `unknown`)."""
    return spec.outcome in (None, UNKNOWN_OUTCOME)


def as_unknown(row: dict[str, Any]) -> dict[str, Any]:
    """An intent row as a record whose outcome is unknown."""
    row.update(
        outcome=UNKNOWN_OUTCOME,
        status_code=None,
        served_region=None,
        outcome_recorded=False,
        outcome_note=NO_OUTCOME_NOTE,
    )
    row.pop("outcome_logged", None)
    return row


def after(position: Position | None) -> list[ColumnElement[bool]]:
    """Open intents strictly after a page's last record, in (decided_at, rank, seq) order
    newest first, where decisions rank above intents at the same instant."""
    if position is None:
        return []
    if position.rank == 0:
        return [
            or_(
                i.c.decided_at < position.decided_at,
                and_(i.c.decided_at == position.decided_at, i.c.seq < position.seq),
            )
        ]
    return [i.c.decided_at <= position.decided_at]


def search_open(
    conn: Connection,
    where: list[ColumnElement[bool]],
    columns: tuple[str, ...],
    limit: int,
) -> list[dict[str, Any]]:
    """Up to `limit` open intents matching `where` (conditions on routing_intents), newest
    first, as records with an unknown outcome."""
    stmt = (
        select(*(i.c[name] for name in columns))
        .where(OPEN, *where)
        .order_by(i.c.decided_at.desc(), i.c.seq.desc())
        .limit(limit)
    )
    return [as_unknown(dict(row)) for row in conn.execute(stmt).mappings()]


def count_open(conn: Connection, where: list[ColumnElement[bool]]) -> int:
    """How many open intents match `where`."""
    return int(conn.execute(select(func.count()).select_from(i).where(OPEN, *where)).scalar_one())


def get_open(conn: Connection, decision_id: str) -> dict[str, Any] | None:
    """The intent of a decision that has no outcome record (the caller looked), as a record
    with an unknown outcome; None if there is none."""
    row = conn.execute(select(i).where(i.c.decision_id == decision_id)).mappings().first()
    return None if row is None else as_unknown(dict(row))


def write_ahead_seq(conn: Connection, decision_id: str) -> int | None:
    """Chain position of a decision's write-ahead entry (None: it was not written ahead)."""
    value = conn.execute(
        select(i.c.chain_seq).where(i.c.decision_id == decision_id)
    ).scalar_one_or_none()
    return None if value is None else int(value)
