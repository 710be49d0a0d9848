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


@dataclass(frozen=True, slots=True)
class ProbeStatus:
    """One region's health with its history, for operators (the admin API)."""

    healthy: bool
    detail: str
    since: float | None
    """Epoch seconds of the first probe, or of the last change of verdict."""
    checked_at: float | None
    """Epoch seconds of the latest probe."""


@dataclass(slots=True)
class _Counter:
    healthy: bool = True
    streak: int = 0
    detail: str = ""
    since: float | None = None
    checked_at: float | None = None


@dataclass(slots=True)
class HealthTracker:
    """Turns probe results into health with hysteresis.

    A healthy region goes down after `fall` failures in a row; a down region comes back after
    `rise` successes in a row. One flapping probe does not move traffic.
    """

    fall: int = 2
    rise: int = 2
    _state: dict[str, _Counter] = field(default_factory=dict)

    def observe(self, region_id: str, ok: bool, detail: str = "", at: float | None = None) -> bool:
        """Record one probe result (made at epoch seconds `at`, if given); return True if the
        region's health changed."""
        counter = self._state.get(region_id)
        if counter is None:
            counter = self._state[region_id] = _Counter(since=at)
        counter.checked_at = at
        if ok == counter.healthy:
            counter.streak = 0
            counter.detail = "" if ok else detail or counter.detail
            return False
        counter.streak += 1
        if detail:  # a passing probe of a down region keeps the reason it went down
            counter.detail = detail
        if counter.streak >= (self.rise if ok else self.fall):
            counter.healthy, counter.streak, counter.since = ok, 0, at
            return True
        return False

    def forget(self, keep: set[str]) -> None:
        """Drop state for regions no longer in the catalog."""
        for region_id in set(self._state) - keep:
            del self._state[region_id]

    def status(self, region_id: str) -> ProbeStatus | None:
        """The region's health as routing sees it, or None if it was never probed. While a
        verdict is about to change, the detail says how many probes disagreed so far."""
        counter = self._state.get(region_id)
        if counter is None:
            return None
        streak = counter.streak
        if counter.healthy:
            detail = f"{streak} of {self.fall} failed probes to go down: {counter.detail}"
            detail = detail if streak else ""
        else:
            detail = counter.detail or "failing health checks"
            if streak:
                detail += f"; {streak} of {self.rise} passed probes to come back"
        return ProbeStatus(counter.healthy, detail, counter.since, counter.checked_at)

    def view(self) -> dict[str, RegionHealth]:
        """An immutable-by-convention copy of the current verdicts."""
        return {
            rid: RegionHealth(c.healthy, "" if c.healthy else c.detail or "failing health checks")
            for rid, c in self._state.items()
        }
