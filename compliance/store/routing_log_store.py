"""The routing decision log: hash-chained batch appends and reads of `routing_decisions`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, func, select

from compliance.audit.canonical import DECISION_FIELDS, Kind
from compliance.audit.decision_append import append_decisions
from compliance.audit.intents import mark_answered
from compliance.audit.ledger import TABLES, placeholder
from compliance.audit.record_codec import Encoded, encode_record
from compliance.store.base import EngineStore
from compliance.store.errors import StoreError, StoreUnavailable
from compliance.store.schema import routing_decisions

__all__ = ["COLUMNS", "RoutingLogStore", "StoreError", "StoreUnavailable"]

_CHAIN_COLUMNS = frozenset({"seq", "chain_seq", "prev_hash", "record_hash"})
COLUMNS: tuple[str, ...] = tuple(
    c.name for c in routing_decisions.columns if c.name not in _CHAIN_COLUMNS
)
"""Keys a record may carry (every column except `seq` and the chain columns, assigned here)."""

assert set(COLUMNS) == set(DECISION_FIELDS), "record_codec must encode every column"


def _logged(conn: Connection, decision_ids: list[str], kind: Kind) -> set[str]:
    """Those of `decision_ids` already in `kind`'s table (plain SQL: runs for every batch)."""
    marks = ", ".join([placeholder(conn)] * len(decision_ids))
    query = f"SELECT decision_id FROM {TABLES[kind].name} WHERE decision_id IN ({marks})"
    return {row[0] for row in conn.exec_driver_sql(query, tuple(decision_ids))}


def _fresh(conn: Connection, items: Sequence[Encoded], kind: Kind) -> list[Encoded]:
    """Items (all of `kind`) whose decision_id is neither logged yet nor repeated earlier."""
    if not items:
        return []
    logged = _logged(conn, [i.decision_id for i in items], kind)
    fresh = []
    for item in items:
        if item.decision_id not in logged:
            logged.add(item.decision_id)
            fresh.append(item)
    return fresh


def _encoded(index: int, record: Mapping[str, Any]) -> Encoded:
    try:
        return Encoded(encode_record(record))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"records[{index}]: {exc}") from None


class RoutingLogStore(EngineStore):
    """Append-only access to `routing_decisions` (and the write-ahead `routing_intents`);
    StoreUnavailable if the database is down."""

    _stores_intents = False
    """Set once this store appended a write-ahead intent: from then on outcomes mark theirs
    answered (a store that never sees one skips that UPDATE)."""

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
        return self.append_encoded(
            [_encoded(i, r) for i, r in enumerate(records)], skip_existing=skip_existing
        )

    def append_encoded(self, items: Sequence[Encoded], *, skip_existing: bool = False) -> int:
        """`append_batch` for records already encoded by `record_codec` (and so checked):
        the routing log writer's path, with no re-serialisation.

        Write-ahead decisions (kind `intent`) among them go first, so each precedes its
        outcome in the chain, and the outcomes mark their intents answered
        (compliance.audit.intents)."""
        if not items:
            return 0
        intents = [i for i in items if i.kind is Kind.INTENT]
        outcomes = [i for i in items if i.kind is Kind.DECISION] if intents else items
        if intents:
            self._stores_intents = True
        with self.transaction(write=True) as conn:
            if skip_existing:
                intents = _fresh(conn, intents, Kind.INTENT)
                outcomes = _fresh(conn, outcomes, Kind.DECISION)
            written = append_decisions(conn, [*intents, *outcomes])
            if outcomes and self._stores_intents:
                mark_answered(conn, [i.decision_id for i in outcomes])
            return written

    def count(self) -> int:
        """Number of logged decisions."""
        with self.transaction(write=False) as conn:
            return int(
                conn.execute(select(func.count()).select_from(routing_decisions)).scalar_one()
            )

    def get(self, decision_id: str) -> dict[str, Any] | None:
        """One decision (every column, `seq` included), or None."""
        with self.transaction(write=False) as conn:
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
        with self.transaction(write=False) as conn:
            result = conn.execute(
                select(routing_decisions).order_by(routing_decisions.c.seq.desc()).limit(limit)
            )
            return [dict(r) for r in result.mappings()]
