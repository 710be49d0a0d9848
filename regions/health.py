"""Region health as the routing core sees it, and the hysteresis that decides it. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RegionHealth:
    """Latest health verdict for one region."""

    healthy: bool
    detail: str = ""


HealthView = Mapping[str, RegionHealth]
"""Region id -> health. A region not in the view has not been probed yet and counts as healthy."""


@dataclass(slots=True)
class _Counter:
    healthy: bool = True
    streak: int = 0
    detail: str = ""


@dataclass(slots=True)
class HealthTracker:
    """Turns probe results into health with hysteresis.

    A healthy region goes down after `fall` failures in a row; a down region comes back after
    `rise` successes in a row. One flapping probe does not move traffic.
    """

    fall: int = 2
    rise: int = 2
    _state: dict[str, _Counter] = field(default_factory=dict)

    def observe(self, region_id: str, ok: bool, detail: str = "") -> bool:
        """Record one probe result; return True if the region's health changed."""
        counter = self._state.setdefault(region_id, _Counter())
        if ok == counter.healthy:
            counter.streak = 0
            if ok:
                counter.detail = ""
            return False
        counter.streak += 1
        counter.detail = detail
        if counter.streak >= (self.rise if ok else self.fall):
            counter.healthy, counter.streak = ok, 0
            return True
        return False

    def forget(self, keep: set[str]) -> None:
        """Drop state for regions no longer in the catalog."""
        for region_id in set(self._state) - keep:
            del self._state[region_id]

    def view(self) -> dict[str, RegionHealth]:
        """An immutable-by-convention copy of the current verdicts."""
        return {
            rid: RegionHealth(c.healthy, "" if c.healthy else c.detail or "failing health checks")
            for rid, c in self._state.items()
        }
