"""Write-ahead decisions (chain entries of kind `intent`) and their outcomes, joined by
decision_id.

An intent is stored before its request leaves for a region; the routing record with the same
decision_id (kind `decision`) is its outcome. An intent no outcome joins is a request the
gateway forwarded, or was about to, and then stopped (`kill -9`, power loss) before it could
record what happened: it is shown as outcome `unknown` ("no outcome recorded"), counted apart,
and is a normal, hash-chained entry (`verify` stays intact).

`routing_intents.outcome_logged` is an index, not evidence: it is set in the transaction that
stores the outcome, so listing the open intents reads a small partial index, and every listed
intent is still checked against the join (an outcome stored without marking, e.g. replayed
after its intent was stored by a process that then died, is never shown as missing).
`unanswered` counts from the join itself (what `verify` reports).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, exists, func, select

from compliance.audit.ledger import placeholder
from compliance.store.schema import routing_decisions, routing_intents

UNKNOWN_OUTCOME = "unknown"
"""The outcome shown for a write-ahead decision without an outcome record."""
NO_OUTCOME_NOTE = (
    "no outcome recorded: the decision was made durable before forwarding, but no outcome "
    "followed (the gateway stopped between forwarding and answering, or the request is "
    "still in flight)"
)
_CHUNK = 500


def mark_answered(conn: Connection, decision_ids: Sequence[str]) -> None:
    """Mark the intents of these (just stored) outcome records as answered (same transaction)."""
    mark = placeholder(conn)
    table = routing_intents.name
    for start in range(0, len(decision_ids), _CHUNK):
        chunk = decision_ids[start : start + _CHUNK]
        marks = ", ".join([mark] * len(chunk))
        conn.exec_driver_sql(
            f"UPDATE {table} SET outcome_logged = {mark} "
            f"WHERE outcome_logged IS NULL AND decision_id IN ({marks})",
            (True, *chunk),
        )


def unanswered(conn: Connection, first: int | None = None, last: int | None = None) -> int:
    """Intents (chain positions `first`..`last`, default all) no outcome record joins."""
    i, d = routing_intents, routing_decisions
    query = (
        select(func.count())
        .select_from(i)
        .where(~exists().where(d.c.decision_id == i.c.decision_id))
    )
    if first is not None and last is not None:
        query = query.where(i.c.chain_seq >= first, i.c.chain_seq <= last)
    return int(conn.execute(query).scalar_one())
