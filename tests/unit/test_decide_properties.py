"""Properties of decide() over generated snapshots and facts, checked against a tiny oracle.

The oracle re-states compliance/packs/RULES.md by hand (it does not read the pack), so a
divergence points at the pack, the policy stage or this reading of the reference.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compliance.model import Tenant
from gateway.routing.decide import decide
from gateway.routing.decision import Decision, Outcome
from gateway.routing.facts import RequestFacts
from gateway.routing.snapshot import RoutingSnapshot
from regions.catalog import KNOWN_ATTESTATIONS, Region, RegionStatus
from regions.geo import haversine_km
from tests.factories import default_regimes, enable_regimes, facts, region, routing_snapshot
from tests.factories import tenant as make_tenant

# -- the oracle ----------------------------------------------------------------------------

EU27 = {
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT",
    "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
}  # fmt: skip
EEA = EU27 | {"IS", "LI", "NO"}
PERSONAL = {"personal", "special", "health", "payment", "financial_securities", "insurance"}
SDF_FROM = date(2027, 5, 13)

Permits = Callable[[str, frozenset[str]], bool]


def _adequacy(plain: set[str], partial: dict[str, str]) -> Permits:
    def permits(country: str, attestations: frozenset[str]) -> bool:
        return country in plain or partial.get(country, "\0") in attestations

    return permits


EU_PERMITS = _adequacy(
    EEA | {"CH", "AR", "GG", "IM", "JE", "FO", "AD", "UY", "NZ", "GB", "BR", "IL"},
    {"CA": "pipeda", "JP": "appi_private_sector", "KR": "pipa", "US": "eu_us_dpf"},
)
UK_PERMITS = _adequacy(
    EEA | {"GB", "GI", "CH", "AR", "GG", "IM", "JE", "AD", "IL", "UY", "NZ", "FO"},
    {"JP": "appi_private_sector", "CA": "pipeda", "KR": "pipa", "US": "uk_extension_dpf"},
)
# "Annex 1, largely the EU adequacy list": the pack's reading of it.
CH_PERMITS = _adequacy(
    EEA | {"CH", "GB", "AD", "AR", "FO", "GG", "IM", "IL", "JE", "NZ", "UY", "GI"},
    {"CA": "pipeda", "US": "swiss_us_dpf"},
)


def _only(*countries: str) -> Permits:
    return lambda country, _attestations: country in countries


@dataclass(frozen=True)
class Constraint:
    regime: str
    permits: Permits
    contractual: bool


def constraints(
    countries: frozenset[str], data_class: str, tenant: Tenant | None, on: date, enabled: set[str]
) -> list[Constraint]:
    """Every legal constraint on where this request may go (before tenant narrowing)."""
    if data_class not in PERSONAL:
        return []
    flags = tenant.flags if tenant else frozenset()
    opt_ins = tenant.opt_ins if tenant else frozenset()
    out: list[Constraint] = []
    if countries & EEA:
        out.append(Constraint("gdpr", EU_PERMITS, True))
    if "GB" in countries:
        out.append(Constraint("uk_gdpr", UK_PERMITS, True))
    if "CH" in countries:
        out.append(Constraint("ch_fadp", CH_PERMITS, True))
    # Indian regulators' flags bind the tenant wherever its clients are; the data-class rules
    # bind only data governed by Indian law.
    india_only = (
        "IN" in countries
        and (
            (data_class == "payment" and "rbi_offshore_processing_with_purge" not in opt_ins)
            or data_class in {"financial_securities", "insurance"}
        )
    ) or (
        bool(flags & {"sebi_regulated", "irdai_regulated"})
        or ("significant_data_fiduciary" in flags and on >= SDF_FROM)
    )
    if india_only:
        out.append(Constraint("in", _only("IN"), False))
    if "CN" in countries and "pipl_cac_mechanism" not in opt_ins:
        out.append(Constraint("cn_pipl", _only("CN"), False))
    if "RU" in countries:
        out.append(Constraint("ru_152fz", _only("RU"), False))
    if "AU" in countries and data_class == "health":
        out.append(Constraint("au", _only("AU"), False))
    if "BR" in countries:
        out.append(Constraint("br_lgpd", _only("BR", *EU27), True))
    for regime, country in (("sa_pdpl", "SA"), ("id_pdp", "ID"), ("vn_pdpd", "VN")):
        if regime in enabled and country in countries:
            out.append(Constraint(regime, _only(country), True))
    return out


def oracle_allowed(
    regions: list[Region], f: RequestFacts, tenant: Tenant | None, enabled: set[str]
) -> set[str]:
    countries = {c for c in (f.client_country, f.subject_country) if c}
    if tenant is not None and tenant.home_jurisdiction:
        countries.add(tenant.home_jurisdiction)
    if not countries:
        return set()
    rules = constraints(frozenset(countries), f.data_class.value, tenant, f.at.date(), enabled)
    allowed = set()
    for r in regions:
        lawful = all(
            c.permits(r.country, r.attestations)
            or (
                c.contractual
                and tenant is not None
                and any(
                    o.regime_id == c.regime and o.country == r.country
                    for o in tenant.transfer_opt_ins
                )
            )
            for c in rules
        )
        if tenant is not None:
            lawful = (
                lawful
                and r.id not in tenant.denied_regions
                and (tenant.allowed_regions is None or r.id in tenant.allowed_regions)
                and (tenant.allowed_countries is None or r.country in tenant.allowed_countries)
            )
        if lawful:
            allowed.add(r.id)
    return allowed


# -- strategies ----------------------------------------------------------------------------

# Repeats weight the draw towards the countries with the most rules.
REGION_COUNTRIES = [
    "DE", "FR", "NO", "IS", "GB", "GI", "CH", "US", "US", "US", "CA", "JP", "KR", "IN", "IN",
    "CN", "RU", "AU", "BR", "SG", "IL", "AR", "FO", "SA", "ID", "VN", "ZA",
]  # fmt: skip
FACT_COUNTRIES = [
    "DE", "AT", "LI", "NO", "GB", "GB", "CH", "CH", "IN", "IN", "IN", "CN", "RU", "AU", "BR",
    "BR", "SA", "ID", "VN", "US", "JP", "SG", "ZA", "MX",
]  # fmt: skip
MODELS = ["m1", "m2", "m3"]
OPTIONAL_REGIMES = ["sa_pdpl", "id_pdp", "vn_pdpd"]
TRANSFER_REGIMES = ["gdpr", "uk_gdpr", "ch_fadp", "br_lgpd", "cn_pipl", "ru_152fz", "sa_pdpl"]


@st.composite
def regions_st(draw: st.DrawFn) -> list[Region]:
    n = draw(st.integers(1, 12))
    out = []
    for i in range(n):
        country = draw(st.sampled_from(REGION_COUNTRIES))
        near = draw(st.booleans())
        out.append(
            region(
                f"r{i}",
                country,
                lat=None if near else draw(st.floats(-60, 70)),
                lon=None if near else draw(st.floats(-180, 180)),
                attestations=draw(st.sets(st.sampled_from(sorted(KNOWN_ATTESTATIONS)))),
                models=draw(st.sets(st.sampled_from(MODELS))),
                status=draw(st.sampled_from(list(RegionStatus))),
                weight=draw(st.sampled_from([0, 0, 1, 5, 100])),
            )
        )
    return out


def _rarely(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """None three times out of four: tenant narrowing would otherwise hide most rules."""
    return st.one_of(st.none(), st.none(), st.none(), strategy)


def _subset(*items: str) -> st.SearchStrategy[set[str]]:
    return st.sets(st.sampled_from(items))


@st.composite
def tenants_st(draw: st.DrawFn, regions: list[Region]) -> list[Tenant]:
    out = []
    for i in range(draw(st.integers(0, 3))):
        ids = st.sets(st.sampled_from([r.id for r in regions]), max_size=3)
        # opt-ins only matter for countries that have a region: draw from those
        countries = sorted({r.country for r in regions})
        transfer = st.tuples(st.sampled_from(TRANSFER_REGIMES), st.sampled_from(countries))
        out.append(
            make_tenant(
                f"t{i}",
                home=draw(st.none() | st.sampled_from(FACT_COUNTRIES)),
                flags=draw(_subset("significant_data_fiduciary"))
                | (draw(_rarely(_subset("sebi_regulated", "irdai_regulated"))) or set()),
                opt_ins=draw(_subset("rbi_offshore_processing_with_purge", "pipl_cac_mechanism")),
                transfers=draw(st.lists(transfer, max_size=3)),
                allowed_regions=draw(_rarely(ids)),
                allowed_countries=draw(_rarely(_subset(*REGION_COUNTRIES))),
                denied_regions=draw(_rarely(ids)) or (),
            )
        )
    return out


@dataclass(frozen=True)
class World:
    regions: list[Region]
    tenants: list[Tenant]
    enabled: set[str]
    snapshot: RoutingSnapshot


@st.composite
def worlds(draw: st.DrawFn) -> World:
    regions = draw(regions_st())
    ids = [r.id for r in regions]
    tenants = draw(tenants_st(regions))
    enabled = draw(st.sets(st.sampled_from(OPTIONAL_REGIMES)))
    health = draw(st.dictionaries(st.sampled_from(ids), st.booleans()))
    snapshot = routing_snapshot(
        regions,
        tenants=tenants,
        regimes=enable_regimes(default_regimes(), *enabled),
        health=health,
    )
    return World(regions, tenants, enabled, snapshot)


@st.composite
def facts_st(draw: st.DrawFn, world: World) -> RequestFacts:
    tenant_ids = [t.id for t in world.tenants]
    return facts(
        client=draw(st.none() | st.sampled_from(FACT_COUNTRIES)),
        subject=draw(st.none() | st.sampled_from(FACT_COUNTRIES)),
        tenant_id=draw(st.sampled_from([None, *tenant_ids, *tenant_ids])),
        data_class=draw(st.sampled_from(["public", *sorted(PERSONAL)])),
        model=draw(st.none() | st.sampled_from([*MODELS, "m-unknown"])),
        at=draw(st.datetimes(datetime(2026, 1, 1), datetime(2028, 12, 31), timezones=st.just(UTC))),
        coords=draw(st.none() | st.tuples(st.floats(-60, 70), st.floats(-180, 180))),
        request_id=draw(st.text(min_size=1, max_size=12)),
    )


PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _usable(r: Region, world: World, model: str | None) -> bool:
    health = world.snapshot.health.get(r.id)
    return (
        r.status is RegionStatus.ACTIVE
        and (health is None or health.healthy)
        and (model is None or model in r.models)
    )


# -- properties ----------------------------------------------------------------------------
# Each generated snapshot is checked with a few facts against every property: generating the
# snapshots is what costs time.


@PROPERTY_SETTINGS
@given(data=st.data())
def test_decide_properties(data: st.DataObject) -> None:
    world = data.draw(worlds())
    for f in data.draw(st.lists(facts_st(world), min_size=1, max_size=4)):
        decision = decide(f, world.snapshot)
        check_route_goes_only_to_allowed_usable_regions(world, f, decision)
        check_allowed_set_agrees_with_the_oracle(world, f, decision)
        check_fallbacks_are_ordered_by_distance(world, f, decision)
        check_declared_subject_only_narrows(world, f, decision)


def check_route_goes_only_to_allowed_usable_regions(
    world: World, f: RequestFacts, decision: Decision
) -> None:
    by_id = world.snapshot.policy.region_by_id
    allowed = set(decision.allowed_regions)
    route = decision.route()
    assert len(set(route)) == len(route)
    for rid in route:
        assert rid in allowed
        assert _usable(by_id[rid], world, f.model)
    usable_allowed = {rid for rid in allowed if _usable(by_id[rid], world, f.model)}
    assert set(route) == usable_allowed
    assert (decision.outcome is Outcome.ROUTED) == (decision.chosen is not None)
    if not allowed:
        assert decision.outcome is Outcome.REFUSED
    elif not usable_allowed:
        assert decision.outcome in {Outcome.UNAVAILABLE, Outcome.MODEL_NOT_FOUND, Outcome.REFUSED}


def check_allowed_set_agrees_with_the_oracle(
    world: World, f: RequestFacts, decision: Decision
) -> None:
    tenant = world.snapshot.policy.tenants.get(f.tenant_id) if f.tenant_id else None
    expected = oracle_allowed(world.regions, f, tenant, world.enabled)
    assert set(decision.allowed_regions) == expected, _explain(decision)


def check_fallbacks_are_ordered_by_distance(
    world: World, f: RequestFacts, decision: Decision
) -> None:
    if f.client_coordinates is None or not decision.fallbacks:
        return
    by_id = world.snapshot.policy.region_by_id
    km = [
        haversine_km(*f.client_coordinates, by_id[r].latitude, by_id[r].longitude)
        for r in decision.fallbacks
    ]
    # distances are memoised at ~1 km precision
    assert all(a <= b + 2.0 for a, b in itertools.pairwise(km))


def check_declared_subject_only_narrows(world: World, f: RequestFacts, decision: Decision) -> None:
    if f.client_country is None or f.subject_country is None:
        return
    without = decide(dataclasses.replace(f, subject_country=None), world.snapshot)
    assert set(decision.allowed_regions) <= set(without.allowed_regions)


def _explain(decision: Decision) -> str:
    return "\n".join(f"{v.region_id}: {v.allowed} {v.reasons}" for v in decision.verdicts)
