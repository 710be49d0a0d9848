"""The region catalog: GPU regions the gateway may forward to."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class RegionStatus(StrEnum):
    """Lifecycle of a region: only `active` regions take new requests."""

    ACTIVE = "active"
    DRAINING = "draining"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class Region:
    """One inference region, as the routing core sees it."""

    id: str
    name: str
    country: str
    latitude: float
    longitude: float
    base_url: str
    models: frozenset[str] = field(default_factory=frozenset)
    attestations: frozenset[str] = field(default_factory=frozenset)
    status: RegionStatus = RegionStatus.ACTIVE
    weight: int = 100


KNOWN_ATTESTATIONS: frozenset[str] = frozenset(
    {
        "eu_us_dpf",
        "uk_extension_dpf",
        "swiss_us_dpf",
        "pipeda",
        "appi_private_sector",
        "pipa",
        "pipl_cac_mechanism",
    }
)
