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
    """The chosen region, the fallbacks in order, and why other allowed regions were skipped.

    `weighted` lists the equally near regions with their weights when the choice among them
    was weighted (two or more); empty when one region was simply the nearest.
    """

    chosen: str | None
    fallbacks: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    weighted: tuple[tuple[str, int], ...] = ()


def unavailability(region: Region, health: HealthView) -> str | None:
    """Why a region cannot take any new request now (status, health), or None if it can."""
    if region.status is not RegionStatus.ACTIVE:
        return f"region is {region.status.value}"
    state = health.get(region.id)
    if state is not None and not state.healthy:
        return f"unhealthy: {state.detail}"
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
    ranked: Sequence[tuple[Region, float]],
    model: str | None,
    unavailable: Mapping[str, str],
    seed: int,
) -> Selection:
    """Pick from allowed regions ranked nearest first; weights decide among the equally near.

    `unavailable` maps region ids to why they take no new requests. Contract: `chosen` and
    every fallback come from `ranked`.
    """
    usable: list[tuple[Region, float]] = []
    skipped: list[tuple[str, str]] = []
    for region, distance in ranked:
        reason = unavailable.get(region.id)
        if reason is None and model is not None and model not in region.models:
            reason = f"does not serve model {model}"
        if reason is None:
            usable.append((region, distance))
        else:
            skipped.append((region.id, reason))
    if not usable:
        return Selection(None, (), tuple(skipped))
    nearest = usable[0][1]
    tier = [r for r, d in usable if d - nearest <= NEAR_TIER_KM and r.weight > 0]
    chosen = _weighted_pick(tier, seed) if tier else usable[0][0]
    fallbacks = tuple(r.id for r, _ in usable if r is not chosen)
    weighted = tuple((r.id, r.weight) for r in tier) if len(tier) > 1 else ()
    return Selection(chosen.id, fallbacks, tuple(skipped), weighted)
