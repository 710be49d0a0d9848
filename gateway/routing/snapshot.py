"""The routing snapshot: the policy snapshot plus the latest health view, swapped as one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from compliance.snapshot import PolicySnapshot
from regions.health import HealthView
from regions.selection import unavailability


@dataclass(frozen=True, slots=True)
class RoutingSnapshot:
    """Everything a routing decision reads. Immutable: replace it, never change it."""

    policy: PolicySnapshot
    health: HealthView = field(default_factory=lambda: MappingProxyType({}))
    health_known: bool = True
    """False where nobody probes the regions (the offline `gateway explain`)."""
    unavailable: Mapping[str, str] = field(init=False)

    def __post_init__(self) -> None:
        reasons = {}
        for region in self.policy.regions:
            reason = unavailability(region, self.health)
            if reason is not None:
                reasons[region.id] = reason
        object.__setattr__(self, "unavailable", MappingProxyType(reasons))

    def with_health(self, health: HealthView) -> RoutingSnapshot:
        """A copy with a new health view."""
        return replace(self, health=MappingProxyType(dict(health)))

    def with_policy(self, policy: PolicySnapshot) -> RoutingSnapshot:
        """A copy with a new policy snapshot (health carried over)."""
        return replace(self, policy=policy)
