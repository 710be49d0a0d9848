"""Retention: remove chain entries older than N days, bridged by a signed prune checkpoint.

The oldest entries are removed as one prefix of the chain (routing decisions and configuration
changes alike), after signing a `prune` checkpoint of the last removed entry; `verify` then
starts from that checkpoint, so the remaining chain stays verifiable.

Checkpoints are never pruned (about one row per `audit_checkpoint_records` entries): the
checkpoint chain stays whole, so its links still verify, the prune checkpoint is the retained
signed anchor the remaining entries start from, and an auditor's receipt for a pruned stretch is
still found (verify reports it as `pruned`, not as tampering).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, Engine, delete, func, select

from compliance.audit import checkpoints as cps
from compliance.audit.canonical import TIME_FIELD
from compliance.audit.entries import seq_bounds
from compliance.audit.ledger import TABLES, lock_head
from compliance.store.base import transaction
from compliance.store.errors import StoreError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What a prune removed: `removed` entries up to and including `through` (0: none)."""

    removed: int
    through: int
    checkpoint: cps.Checkpoint | None


def _first_kept(conn: Connection, cutoff: datetime) -> int | None:
    """The lowest chain position whose timestamp is at or after `cutoff`."""
    found = []
    for kind, table in TABLES.items():
        column = table.c[TIME_FIELD[kind]]
        value = conn.execute(select(func.min(table.c.chain_seq)).where(column >= cutoff)).scalar()
        if value is not None:
            found.append(int(value))
    return min(found) if found else None


def _hash_at(conn: Connection, seq: int) -> str | None:
    for table in TABLES.values():
        value = conn.execute(select(table.c.record_hash).where(table.c.chain_seq == seq)).scalar()
        if value is not None:
            return str(value)
    return None


def prune(
    engine: Engine,
    key: Ed25519PrivateKey,
    cutoff: datetime,
    cadence: cps.Cadence = cps.DEFAULT_CADENCE,
) -> PruneResult:
    """Remove the chain prefix older than `cutoff` (entries after a newer one are kept)."""
    with transaction(engine, write=True) as conn:
        head = lock_head(conn)
        first, _ = seq_bounds(conn)
        kept = _first_kept(conn, cutoff)
        through = head.seq if kept is None else kept - 1
        if first is None or through < first:
            return PruneResult(0, 0, None)
        record_hash = _hash_at(conn, through)
        if record_hash is None:
            raise StoreError(f"cannot prune: chain entry #{through} is missing (run verify)")
        checkpoint = cps.append(conn, key, through, record_hash, cps.PRUNE, cadence)
        removed = 0
        for table in TABLES.values():
            result = conn.execute(delete(table).where(table.c.chain_seq <= through))
            removed += result.rowcount or 0
    logger.info("audit retention: removed %d entries up to #%d", removed, through)
    return PruneResult(removed, through, checkpoint)


class RetentionJob:
    """Runs `prune` for entries older than `days` at most every `interval` seconds."""

    run_at_close = False

    def __init__(
        self,
        engine: Engine,
        key: Ed25519PrivateKey,
        days: int,
        interval: float = 3600.0,
        cadence: cps.Cadence = cps.DEFAULT_CADENCE,
    ) -> None:
        self._engine = engine
        self._cadence = cadence
        self._key = key
        self.days = days
        self.interval = interval
        self._last = float("-inf")

    def note(self, appended: int) -> None:
        """Not counted: retention is time-driven."""

    def due(self) -> bool:
        """True once per `interval`."""
        return time.monotonic() - self._last >= self.interval

    def run(self) -> PruneResult:
        """Prune now."""
        self._last = time.monotonic()
        cutoff = datetime.now(UTC) - timedelta(days=self.days)
        return prune(self._engine, self._key, cutoff, self._cadence)
