"""The decision tables reproduce decide(): intersecting their masks gives its allowed set.

This proves the decomposition the in-Envoy decision relies on, in Python, before any Lua.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import date, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compliance.model import Tenant
from compliance.snapshot import PolicySnapshot, hash_api_key
from gateway.envoy.decision_filters import lua_literal
from gateway.envoy.tables import DEFAULT, DecisionTables, build_tables, lookup, words
from gateway.routing.decide import decide
from gateway.routing.decision import Outcome
from gateway.routing.snapshot import RoutingSnapshot
from regions.catalog import RegionStatus
from regions.geo import ISO_COUNTRY_CODES
from tests.factories import region, routing_snapshot
from tests.factories import tenant as make_tenant
from tests.unit.test_decide_properties import FACT_COUNTRIES, World, facts_st, worlds

TABLE_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _keyed(world: World) -> PolicySnapshot:
    """The world's policy with one API key per tenant (its id hashed, as the store keeps it)."""
    policy = world.snapshot.policy
    tenants = [
        dataclasses.replace(t, api_key_hashes=frozenset({hash_api_key(t.id)}))
        for t in world.tenants
    ]
    return PolicySnapshot(policy.version, policy.regimes, policy.regions, tenants)


@TABLE_SETTINGS
@given(data=st.data())
def test_table_lookup_equals_decide(data: st.DataObject) -> None:
    world: World = data.draw(worlds())
    if not world.tenants:
        return  # the data path always has a tenant (no key is a 401 before any decision)
    # Envoy health-checks its clusters itself: the tables carry status, not health.
    snapshot = RoutingSnapshot(_keyed(world))
    by_date: dict[date, DecisionTables] = {}
    for f in data.draw(st.lists(facts_st(world), min_size=1, max_size=6)):
        if f.tenant_id is None:
            f = dataclasses.replace(f, tenant_id=world.tenants[0].id)
        on = f.at.date()
        tables = by_date.get(on) or by_date.setdefault(on, build_tables(snapshot.policy, on))
        entry = tables.keys[hash_api_key(f.tenant_id or "")]
        answer = lookup(
            tables, entry, f.client_country, f.subject_country, f.data_class.value, f.model
        )
        decision = decide(f, snapshot)
        assert answer.outcome is decision.outcome
        assert tables.region_ids(answer.allowed) == set(decision.allowed_regions)
        assert tables.region_ids(answer.usable) == set(decision.route())


@TABLE_SETTINGS
@given(
    world=worlds(),
    countries=st.sets(st.sampled_from([*FACT_COUNTRIES, "FR", "ZZ", "US"]), min_size=1),
    start=st.dates(date(2026, 1, 1), date(2028, 12, 31)),
    later=st.integers(0, 800),
    data_class=st.sampled_from(["public", "personal", "health", "payment", "insurance"]),
)
def test_tables_hold_until_valid_until(
    world: World, countries: set[str], start: date, later: int, data_class: str
) -> None:
    """Tables built on one date answer like the policy on every date before `valid_until`."""
    policy = _keyed(world)
    tables = build_tables(policy, start)
    on = start + timedelta(days=later)
    if tables.valid_until is not None and on >= tables.valid_until:
        on = tables.valid_until - timedelta(days=1)
    for entry in tables.keys.values():
        tenant_ = policy.tenants[entry.tenant_id]
        expected = policy.evaluate(frozenset(countries), data_class, tenant_, on).allowed
        assert tables.region_ids(tables.allowed(entry.policy_class, data_class, countries)) == (
            expected
        )


def test_tenants_with_the_same_policy_share_a_class_and_keys_are_hashes() -> None:
    regions = [region("eu-frankfurt", "DE"), region("us-east", "US")]
    tenants = [
        _tenant("a", home="DE", keys=["key-a"]),
        _tenant("b", home="FR", keys=["key-b"]),
        _tenant("c", flags={"sebi_regulated"}, keys=["key-c"]),
    ]
    tables = build_tables(routing_snapshot(regions, tenants=tenants).policy, date(2026, 6, 1))
    a, b, c = (tables.keys[hash_api_key(k)] for k in ("key-a", "key-b", "key-c"))
    assert (a.tenant_id, a.home, b.home) == ("a", "DE", "FR")
    assert a.policy_class == b.policy_class != c.policy_class
    pushed = json.dumps(tables.to_dict())
    assert "key-a" not in pushed and hash_api_key("key-a") in pushed


def test_countries_no_regime_governs_use_the_default_mask() -> None:
    regions = [region("eu-frankfurt", "DE"), region("us-east", "US"), region("in-mumbai", "IN")]
    policy = routing_snapshot(regions, tenants=[_tenant("a", keys=["k"])]).policy
    tables = build_tables(policy, date(2026, 6, 1))
    personal = tables.allow[0]["personal"]
    assert personal[DEFAULT] == 0b111  # no regime: anywhere
    assert "MX" not in personal and "DE" in personal
    assert set(personal) - {DEFAULT} <= ISO_COUNTRY_CODES
    assert tables.region_ids(personal["DE"]) == {"eu-frankfurt"}


def test_masks_split_into_31_bit_words() -> None:
    assert words(0, 3) == [0]
    assert words((1 << 31) | 1, 32) == [1, 1]
    assert words((1 << 31) - 1, 31) == [(1 << 31) - 1]


def test_inactive_regions_stay_in_the_policy_set_but_are_not_usable() -> None:
    regions = [
        region("eu-frankfurt", "DE", status=RegionStatus.DRAINING),
        region("us-east", "US"),
    ]
    policy = routing_snapshot(regions, tenants=[_tenant("a", home="DE", keys=["k"])]).policy
    tables = build_tables(policy, date(2026, 6, 1))
    answer = lookup(tables, tables.keys[hash_api_key("k")], None, None, "personal", None)
    assert answer.outcome is Outcome.UNAVAILABLE
    assert tables.region_ids(answer.allowed) == {"eu-frankfurt"}


def _tenant(id: str, keys: list[str], **fields: object) -> Tenant:
    hashes = frozenset(hash_api_key(k) for k in keys)
    return dataclasses.replace(make_tenant(id, **fields), api_key_hashes=hashes)  # type: ignore[arg-type]


def test_tables_become_a_lua_literal() -> None:
    literal = lua_literal({"a": [1, 2.5, None, True], 'b"\\': "é\n"})
    assert literal == '{["a"]={1,2.5,nil,true},["b\\34\\92"]="\\233\\10"}'
