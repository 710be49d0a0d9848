"""The routing decision log: hash-chained batch appends and reads of `routing_decisions`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, func, select

from compliance.audit.canonical import DECISION_FIELDS
from compliance.audit.decision_append import append_decisions
from compliance.audit.ledger import placeholder
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


def _logged(conn: Connection, decision_ids: list[str]) -> set[str]:
    """Those of `decision_ids` already in the log (plain SQL: this runs for every batch)."""
    marks = ", ".join([placeholder(conn)] * len(decision_ids))
    query = f"SELECT decision_id FROM {routing_decisions.name} WHERE decision_id IN ({marks})"
    return {row[0] for row in conn.exec_driver_sql(query, tuple(decision_ids))}


def _fresh(conn: Connection, items: Sequence[Encoded]) -> list[Encoded]:
    """Items whose decision_id is neither logged yet nor repeated earlier in `items`."""
    logged = _logged(conn, [i.decision_id for i in items])
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
    """Append-only access to `routing_decisions`; StoreUnavailable if the database is down."""

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
        the routing log writer's path, with no re-serialisation."""
        if not items:
            return 0
        with self.transaction(write=True) as conn:
            return append_decisions(conn, _fresh(conn, items) if skip_existing else items)

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
