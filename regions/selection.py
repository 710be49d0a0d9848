"""The select stage: nearest healthy allowed region, then ordered fallbacks. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from regions.catalog import Region, RegionStatus
from regions.health import HealthView

NEAR_TIER_KM = 100.0
"""Regions within this distance of the nearest one count as equally near (weights decide)."""


@dataclass(frozen=True, slots=True)
class Selection:
    """The chosen region, the fallbacks in order, and why other allowed regions were skipped."""

    chosen: str | None
    fallbacks: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]


def skip_reason(region: Region, model: str | None, health: HealthView) -> str | None:
    """Why an allowed region cannot take this request now, or None if it can."""
    if region.status is not RegionStatus.ACTIVE:
        return f"region is {region.status.value}"
    state = health.get(region.id)
    if state is not None and not state.healthy:
        return f"unhealthy: {state.detail}"
    if model is not None and model not in region.models:
        return f"does not serve model {model}"
    return None


def _weighted_pick(tier: Sequence[Region], seed: int) -> Region:
    total = sum(r.weight for r in tier)
    if total <= 0:
        return tier[0]
    point = seed % total
    for region in tier:
        if point < region.weight:
            return region
        point -= region.weight
    return tier[-1]  # unreachable: point < total


def select(
    allowed: Sequence[Region],
    distances_km: Mapping[str, float],
    model: str | None,
    health: HealthView,
    seed: int,
) -> Selection:
    """Order the usable allowed regions by distance; pick by weight among the equally near.

    Contract: `chosen` and every fallback are members of `allowed`.
    """
    usable: list[Region] = []
    skipped: list[tuple[str, str]] = []
    for region in allowed:
        reason = skip_reason(region, model, health)
        if reason is None:
            usable.append(region)
        else:
            skipped.append((region.id, reason))
    if not usable:
        return Selection(None, (), tuple(skipped))
    far = float("inf")
    usable.sort(key=lambda r: (distances_km.get(r.id, far), r.id))
    nearest = distances_km.get(usable[0].id, far)
    tier = [
        r for r in usable if distances_km.get(r.id, far) - nearest <= NEAR_TIER_KM and r.weight > 0
    ]
    chosen = _weighted_pick(tier, seed) if tier else usable[0]
    fallbacks = tuple(r.id for r in usable if r is not chosen)
    return Selection(chosen.id, fallbacks, tuple(skipped))
