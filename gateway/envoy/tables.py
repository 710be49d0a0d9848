"""Policy snapshot -> decision tables: the policy evaluated ahead of time, for in-Envoy lookups.

The control plane runs the same `compliance.evaluate()` that `decide()` runs, over the finite
inputs (tenant policy class x data class x jurisdiction country); the data plane only looks up,
intersects and ranks. That is correct because the policy stage decomposes over jurisdictions:
a regime applies when it governs *any* of them (or a tenant flag brings it in), and the allowed
set is the intersection of what every applied rule permits, so
``allowed(J) == intersection of allowed({c}) for c in J`` for every non-empty J.

Region sets are bit masks: bit i is ``regions[i]`` (regions sorted by id, as the snapshot
keeps them). Countries that trigger the same regimes share one evaluation; only countries whose
mask differs from the class's default (no regime triggered by the country) are listed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType
from typing import Any

from compliance.jurisdictions import DataClass
from compliance.model import Regime, Tenant
from compliance.snapshot import PolicySnapshot
from gateway.routing.decision import Outcome
from regions.catalog import RegionStatus
from regions.geo import ISO_COUNTRY_CODES, country_centroid

DEFAULT = "*"
"""Key of a data class's mask for every country not listed (no regime governs it)."""
WORD_BITS = 31
"""Bits per mask word in the Lua form: LuaJIT's bit operations are signed 32-bit, and 31 bits
keep every word a non-negative number in the pushed JSON/Struct."""

Mask = int
ClassKey = tuple[object, ...]


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """What an API key hash stands for: the tenant, its policy class and home jurisdiction."""

    tenant_id: str
    policy_class: int
    home: str | None


@dataclass(frozen=True, slots=True)
class DecisionTables:
    """Everything the in-Envoy decision reads, for one policy version and one date range.

    `allow[k][data_class]` maps a country to the mask of regions that country's law (with
    tenant class k's policy) permits; `DEFAULT` covers every unlisted country. Masks include
    regions of every status, like the policy stage; `active` is applied by the lookup.
    """

    policy_version: int
    on: date
    valid_until: date | None
    """First date the tables may be wrong (a rule comes into or goes out of force); None: never."""
    regions: tuple[str, ...]
    coordinates: tuple[tuple[float, float], ...]
    weights: tuple[int, ...]
    active: Mask
    models: Mapping[str, Mask]
    allow: tuple[Mapping[str, Mapping[str, Mask]], ...]
    keys: Mapping[str, KeyEntry]

    def allowed(self, policy_class: int, data_class: str, countries: Iterable[str]) -> Mask:
        """The policy's allowed set for these jurisdictions: the intersection of their masks.

        `countries` must not be empty (an unknown origin is refused before any lookup).
        """
        table = self.allow[policy_class][data_class]
        mask = (1 << len(self.regions)) - 1
        for country in countries:
            mask &= table.get(country, table[DEFAULT])
        return mask

    def region_ids(self, mask: Mask) -> frozenset[str]:
        """The region ids in `mask`."""
        return frozenset(r for i, r in enumerate(self.regions) if mask >> i & 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form pushed to Envoy (route metadata): masks as lists of 31-bit words."""
        n = len(self.regions)
        return {
            "version": self.policy_version,
            "on": self.on.isoformat(),
            "valid_until": self.valid_until.isoformat() if self.valid_until else None,
            "regions": list(self.regions),
            "coordinates": [list(c) for c in self.coordinates],
            "weights": list(self.weights),
            "active": words(self.active, n),
            "models": {m: words(v, n) for m, v in sorted(self.models.items())},
            "allow": [
                {
                    dc: {c: words(v, n) for c, v in sorted(table.items())}
                    for dc, table in sorted(by_class.items())
                }
                for by_class in self.allow
            ],
            "keys": {
                h: {"tenant": e.tenant_id, "class": e.policy_class, "home": e.home}
                for h, e in sorted(self.keys.items())
            },
            "centroids": {c: list(_centroid(c)) for c in sorted(ISO_COUNTRY_CODES)},
        }


def words(mask: Mask, n: int) -> list[int]:
    """`mask` split into little-endian 31-bit words (at least one)."""
    count = max(1, -(-n // WORD_BITS))
    return [(mask >> (WORD_BITS * i)) & ((1 << WORD_BITS) - 1) for i in range(count)]


def _centroid(country: str) -> tuple[float, float]:
    point = country_centroid(country)
    assert point is not None  # every ISO code has a centroid
    return point


def policy_class_key(tenant: Tenant) -> ClassKey:
    """Everything the policy stage reads from a tenant, except its id, name and home."""
    return (
        tenant.flags,
        tenant.opt_ins,
        frozenset((o.regime_id, o.country) for o in tenant.transfer_opt_ins),
        tenant.allowed_regions,
        tenant.allowed_countries,
        tenant.denied_regions,
    )


def _country_groups(regimes: Iterable[Regime]) -> dict[frozenset[str], list[str]]:
    """Countries grouped by the enabled regimes they trigger (only governed countries)."""
    triggered: dict[str, set[str]] = {}
    for regime in regimes:
        if regime.enabled:
            for country in regime.countries:
                triggered.setdefault(country, set()).add(regime.id)
    groups: dict[frozenset[str], list[str]] = {}
    for country, ids in sorted(triggered.items()):
        groups.setdefault(frozenset(ids), []).append(country)
    return groups


def valid_until(regimes: Iterable[Regime], on: date) -> date | None:
    """The first date after `on` on which a rule comes into or goes out of force (None: never):
    tables built for `on` hold until then. Rules' dates are the policy's only dates."""
    bounds = {
        d
        for regime in regimes
        for rule in regime.rules
        for d in (rule.effective_from, rule.effective_to)
        if d is not None and d > on
    }
    return min(bounds) if bounds else None


def build_tables(policy: PolicySnapshot, on: date) -> DecisionTables:
    """Compile the decision tables for `policy` as in force on `on`. Pure."""
    regions = policy.regions
    bit = {r.id: 1 << i for i, r in enumerate(regions)}
    classes: dict[ClassKey, Tenant] = {}  # policy class -> the first tenant in it
    index: dict[ClassKey, int] = {}
    keys: dict[str, KeyEntry] = {}
    for tenant in sorted(policy.tenants.values(), key=lambda t: t.id):
        class_key = policy_class_key(tenant)
        classes.setdefault(class_key, tenant)
        position = index.setdefault(class_key, len(index))
        for key_hash in tenant.api_key_hashes:
            keys[key_hash] = KeyEntry(tenant.id, position, tenant.home_jurisdiction)
    groups = _country_groups(policy.regimes)

    def mask(countries: frozenset[str], data_class: str, tenant: Tenant) -> Mask:
        allowed = policy.evaluate(countries, data_class, tenant, on).allowed
        return sum(bit[r] for r in allowed)

    allow: list[Mapping[str, Mapping[str, Mask]]] = []
    for tenant in classes.values():
        by_class: dict[str, Mapping[str, Mask]] = {}
        for data_class in DataClass:
            # A jurisdiction no regime governs triggers nothing: the sentinel "" stands for it.
            default = mask(frozenset({""}), data_class.value, tenant)
            table = {DEFAULT: default}
            for countries in groups.values():
                value = mask(frozenset(countries[:1]), data_class.value, tenant)
                if value != default:
                    table.update(dict.fromkeys(countries, value))
            by_class[data_class.value] = MappingProxyType(table)
        allow.append(MappingProxyType(by_class))
    models: dict[str, Mask] = {}
    for region in regions:
        for model in region.models:
            models[model] = models.get(model, 0) | bit[region.id]
    return DecisionTables(
        policy_version=policy.version,
        on=on,
        valid_until=valid_until(policy.regimes, on),
        regions=tuple(r.id for r in regions),
        coordinates=tuple((r.latitude, r.longitude) for r in regions),
        weights=tuple(r.weight for r in regions),
        active=sum(bit[r.id] for r in regions if r.status is RegionStatus.ACTIVE),
        models=MappingProxyType(models),
        allow=tuple(allow),
        keys=MappingProxyType(keys),
    )


@dataclass(frozen=True, slots=True)
class TableAnswer:
    """What the in-Envoy lookup concludes: the outcome, the policy's set and the usable set."""

    outcome: Outcome
    allowed: Mask
    usable: Mask


def lookup(
    tables: DecisionTables,
    entry: KeyEntry,
    client_country: str | None,
    subject_country: str | None,
    data_class: str,
    model: str | None,
) -> TableAnswer:
    """The lookup the Lua filter performs, stated in Python (the reference it is tested against).

    Region health is not an input: every Envoy health-checks its own clusters.
    """
    countries = [c for c in (client_country, subject_country, entry.home) if c]
    if not countries:
        return TableAnswer(Outcome.REFUSED, 0, 0)
    allowed = tables.allowed(entry.policy_class, data_class, countries)
    serving = tables.models.get(model, 0) if model is not None else ~0
    usable = allowed & tables.active & serving
    if usable:
        return TableAnswer(Outcome.ROUTED, allowed, usable)
    if not allowed or (model is not None and not allowed & serving and model in tables.models):
        return TableAnswer(Outcome.REFUSED, allowed, 0)
    if model is not None and model not in tables.models:
        return TableAnswer(Outcome.MODEL_NOT_FOUND, allowed, 0)
    return TableAnswer(Outcome.UNAVAILABLE, allowed, 0)
