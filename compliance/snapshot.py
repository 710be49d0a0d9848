"""The immutable policy snapshot every request decides against."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from types import MappingProxyType

from compliance.evaluation import PolicyEvaluation, evaluate
from compliance.model import Regime, Tenant
from regions.catalog import Region
from regions.geo import haversine_km

_CACHE_LIMIT = 4096

Origin = tuple[float, float] | None
Ranking = tuple[tuple[Region, float], ...]
"""Allowed regions with their distance in km from the request's origin, nearest first."""


@functools.lru_cache(maxsize=4096)
def hash_api_key(api_key: str) -> str:
    """SHA-256 of an API key: keys are random and long, so a plain hash stores them safely."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


class PolicySnapshot:
    """Regimes, regions and tenants as of one policy version. Never mutated after creation.

    Evaluations and distances are memoised per snapshot: the snapshot is immutable, so a cached
    answer stays right for as long as the snapshot is in use.
    """

    __slots__ = (
        "_distance_cache",
        "_evaluation_cache",
        "_ranking_cache",
        "compiled_at",
        "label",
        "regimes",
        "region_by_id",
        "regions",
        "tenant_by_key_hash",
        "tenants",
        "version",
    )

    def __init__(
        self,
        version: int,
        regimes: Iterable[Regime],
        regions: Iterable[Region],
        tenants: Iterable[Tenant],
        label: str = "",
        compiled_at: datetime | None = None,
    ) -> None:
        self.version = version
        self.label = label
        self.compiled_at = compiled_at or datetime.now(UTC)
        self.regimes: tuple[Regime, ...] = tuple(regimes)
        self.regions: tuple[Region, ...] = tuple(sorted(regions, key=lambda r: r.id))
        self.region_by_id: Mapping[str, Region] = MappingProxyType({r.id: r for r in self.regions})
        tenant_list = tuple(tenants)
        self.tenants: Mapping[str, Tenant] = MappingProxyType({t.id: t for t in tenant_list})
        self.tenant_by_key_hash: Mapping[str, Tenant] = MappingProxyType(
            {h: t for t in tenant_list for h in t.api_key_hashes}
        )
        self._evaluation_cache: dict[tuple[frozenset[str], str, str | None, date], PolicyEvaluation]
        self._evaluation_cache = {}
        self._distance_cache: dict[tuple[float, float], Mapping[str, float]] = {}
        self._ranking_cache: dict[tuple[object, ...], Ranking] = {}

    def tenant_for_key(self, api_key: str) -> Tenant | None:
        """The tenant owning `api_key`, or None."""
        return self.tenant_by_key_hash.get(hash_api_key(api_key))

    def evaluate(
        self, jurisdictions: frozenset[str], data_class: str, tenant: Tenant | None, on: date
    ) -> PolicyEvaluation:
        """The policy stage for these facts (memoised)."""
        key = (jurisdictions, data_class, tenant.id if tenant else None, on)
        cached = self._evaluation_cache.get(key)
        if cached is None:
            cached = evaluate(self.regimes, self.regions, jurisdictions, data_class, tenant, on)
            if len(self._evaluation_cache) >= _CACHE_LIMIT:
                self._evaluation_cache.clear()
            self._evaluation_cache[key] = cached
        return cached

    def distances_from(self, latitude: float, longitude: float) -> Mapping[str, float]:
        """Kilometres from a point to every region (memoised at ~1 km precision)."""
        key = (round(latitude, 2), round(longitude, 2))
        cached = self._distance_cache.get(key)
        if cached is None:
            cached = {
                r.id: haversine_km(latitude, longitude, r.latitude, r.longitude)
                for r in self.regions
            }
            if len(self._distance_cache) >= _CACHE_LIMIT:
                self._distance_cache.clear()
            self._distance_cache[key] = cached
        return cached

    def ranked_allowed(
        self, evaluation: PolicyEvaluation, key: tuple[object, ...], origin: Origin
    ) -> Ranking:
        """The allowed regions nearest first, with their distances (memoised per `key`/origin).

        `key` must identify `evaluation` (the facts it was evaluated for).
        """
        point = (round(origin[0], 2), round(origin[1], 2)) if origin else None
        cache_key = (key, point)
        cached = self._ranking_cache.get(cache_key)
        if cached is None:
            distances = self.distances_from(*origin) if origin else {}
            far = float("inf")
            pairs = [
                (r, distances.get(r.id, far)) for r in self.regions if r.id in evaluation.allowed
            ]
            pairs.sort(key=lambda pair: (pair[1], pair[0].id))
            cached = tuple(pairs)
            if len(self._ranking_cache) >= _CACHE_LIMIT:
                self._ranking_cache.clear()
            self._ranking_cache[cache_key] = cached
        return cached

    def served_models(self) -> frozenset[str]:
        """Every model some region in the catalog serves."""
        return frozenset(m for r in self.regions for m in r.models)
