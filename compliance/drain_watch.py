"""Noticing a routing log drain that makes no progress.

The drain retries a failed batch forever (records stay in the spool, so nothing is lost), but a
drain that keeps failing at the same spool position is stuck: no later record reaches the
database. After STUCK_AFTER failures in a row at one position the drain is reported as stuck
(readiness, metrics) and logged with its spool slot, segment and offset, at most once per
`log_interval` seconds while it stays stuck, instead of once per retry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compliance.audit.spool import Position

logger = logging.getLogger("compliance.routing_log")

STUCK_AFTER = 3
"""Failures in a row at one spool position that make a drain stuck."""
LOG_INTERVAL = 60.0
"""Seconds between the log lines about one stuck drain."""


@dataclass(frozen=True, slots=True)
class StuckDrain:
    """A drain that keeps failing at one spool position."""

    slot: str
    segment: int
    offset: int
    failures: int
    error: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (readiness)."""
        return {
            "slot": self.slot,
            "segment": self.segment,
            "offset": self.offset,
            "failures": self.failures,
            "error": self.error,
        }


class DrainWatch:
    """Counts each spool slot's drain failures in a row at one position (see the module)."""

    def __init__(
        self,
        stuck_after: int = STUCK_AFTER,
        log_interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stuck_after = stuck_after
        self.log_interval = log_interval
        self._clock = clock
        self._failing: dict[str, StuckDrain] = {}
        self._logged_at: dict[str, float] = {}
        self.failures_total = 0

    def failed(self, slot: Path | None, position: Position, error: str) -> bool:
        """Count a failed drain at `position`; True while the caller should log the failure
        itself (not stuck yet), False once this watch logs it (rate limited)."""
        self.failures_total += 1
        key = str(slot)
        before = self._failing.get(key)
        count = 1
        if before is not None and Position(before.segment, before.offset) == position:
            count = before.failures + 1
        state = StuckDrain(key, position.segment, position.offset, count, error)
        self._failing[key] = state
        if count < self.stuck_after:
            return True
        now = self._clock()
        logged = self._logged_at.get(key)
        if logged is None or now - logged >= self.log_interval:
            self._logged_at[key] = now
            logger.error(
                "routing log drain stuck: spool %s segment %d offset %d failed %d times in a "
                "row (last: %s); later records wait in the spool (kept, not stored)",
                key,
                state.segment,
                state.offset,
                count,
                error,
            )
        return False

    def progressed(self, slot: Path | None) -> None:
        """The drain of `slot` succeeded (stored records, or found nothing to store)."""
        key = str(slot)
        state = self._failing.pop(key, None)
        if self._logged_at.pop(key, None) is not None and state is not None:
            logger.warning(
                "routing log drain moving again: spool %s past segment %d offset %d after "
                "%d failures",
                key,
                state.segment,
                state.offset,
                state.failures,
            )

    def forget(self, slot: Path | None) -> None:
        """Stop reporting `slot` (an abandoned slot given back for the next start)."""
        self._failing.pop(str(slot), None)
        self._logged_at.pop(str(slot), None)

    @property
    def stuck(self) -> list[StuckDrain]:
        """The drains stuck now."""
        return [s for s in list(self._failing.values()) if s.failures >= self.stuck_after]
