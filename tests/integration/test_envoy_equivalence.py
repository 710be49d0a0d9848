"""Envoy's in-filter decision against decide(): drawn request facts, and the residency matrix.

Both go through a real Envoy with tables our control plane pushed. The weighted pick among
equally near regions differs by design (Envoy draws a random number, Python hashes the request
id), so a routed answer is checked against decide()'s allowed set and its nearest tier.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import maxminddb
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from compliance.jurisdictions import DataClass
from compliance.model import Tenant
from compliance.snapshot import PolicySnapshot, hash_api_key
from gateway.routing.decide import decide
from gateway.routing.decision import Decision, Outcome
from gateway.routing.facts import RequestFacts
from gateway.routing.locate import locate
from gateway.routing.snapshot import RoutingSnapshot
from regions.catalog import RegionStatus
from regions.geo import haversine_km
from regions.geoip import GeoIpLocator, bundled_database_path
from regions.selection import NEAR_TIER_KM
from regions.simulator.fleet import SimulatorFleet
from tests.factories import default_regimes, region
from tests.factories import tenant as make_tenant
from tests.integration.conftest import ACME_KEY, BROKER_KEY, DEMO_KEY, REGIONS, sim_requests
from tests.integration.envoy_decision_support import (
    DecidingEnvoy,
    catalog_policy,
    deciding_envoy,
)
from tests.integration.envoy_support import accepted, publish, wait_for
from tests.unit import test_policy_rules as matrix

pytestmark = pytest.mark.integration


def _keyed(key: str, tenant: Tenant) -> tuple[str, Tenant]:
    return key, dataclasses.replace(tenant, api_key_hashes=frozenset({hash_api_key(key)}))


VIRGINIA_KEY = "rg-virginia-key-0123456789abcdef0123"
EXTRA_TENANTS = dict(
    [
        _keyed(
            "rg-narrow-key-0123456789abcdef012345",
            make_tenant("narrow", allowed_countries=["GB", "US"]),
        ),
        _keyed(
            "rg-home-in-key-0123456789abcdef01234",
            make_tenant("home-in", home="IN", opt_ins=["rbi_offshore_processing_with_purge"]),
        ),
        _keyed(
            "rg-scc-us-key-0123456789abcdef012345",
            make_tenant("scc-us", transfers=[("gdpr", "US")]),
        ),
        _keyed(
            "rg-deny-key-0123456789abcdef01234567",
            make_tenant("deny-oregon", home="GB", denied_regions=["us-oregon"]),
        ),
        _keyed(VIRGINIA_KEY, make_tenant("virginia-only", allowed_regions=["us-virginia"])),
    ]
)
KEYS = [DEMO_KEY, ACME_KEY, BROKER_KEY, *EXTRA_TENANTS, VIRGINIA_KEY, VIRGINIA_KEY]
CLIENT_COUNTRIES = ["DE", "GB", "IN", "US", "CN", "FR", "JP", "BR", "CH", "RU", "AU", "SG"]
SUBJECTS = ["DE", "GB", "IN", "US", "CN", "CH", "BR", "RU", "AU", "ZA", "MX"]
HI = [{"role": "user", "content": "hi"}]
DRAINING = "us-virginia"
MODELS = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "indic-gpt", "no-such-model"]


@cache
def ip_in(country: str) -> str:
    """A public IPv4 address the bundled database places in `country`."""
    with maxminddb.open_database(str(bundled_database_path())) as reader:
        for network, record in reader:
            if (
                network.version == 4
                and isinstance(record, dict)
                and record.get("country", {}).get("iso_code") == country
            ):
                return str(ipaddress.ip_network(network).network_address + 1)
    raise AssertionError(f"no network for {country} in the bundled database")


@pytest.fixture(scope="module")
def locator() -> Iterator[GeoIpLocator]:
    with GeoIpLocator(bundled_database_path()) as found:
        yield found


@pytest.fixture(scope="module")
def policy(catalog: Path) -> PolicySnapshot:
    base = catalog_policy(catalog)
    tenants = [*base.tenants.values(), *EXTRA_TENANTS.values()]
    # A draining region keeps its cluster but takes no new request: the 503 path.
    regions = [
        dataclasses.replace(r, status=RegionStatus.DRAINING) if r.id == DRAINING else r
        for r in base.regions
    ]
    return PolicySnapshot(base.version, base.regimes, regions, tenants)


@pytest.fixture(scope="module")
def plane(
    policy: PolicySnapshot, fleet: SimulatorFleet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DecidingEnvoy]:
    directory = tmp_path_factory.mktemp("envoy-equivalence")
    with deciding_envoy(policy, directory, "equivalence-envoy", tuple(REGIONS)) as deciding:
        yield deciding


def _nearest_tier(decision: Decision, snapshot: RoutingSnapshot, tenant: Tenant | None) -> set[str]:
    """The regions decide() could have picked with another seed: its weighted tier."""
    origin = locate(decision.facts, tenant).origin
    assert origin is not None
    by_id = snapshot.policy.region_by_id
    usable = [by_id[r] for r in decision.route()]
    km = {r.id: haversine_km(*origin, r.latitude, r.longitude) for r in usable}
    nearest = min(km.values())
    tier = {r.id for r in usable if km[r.id] - nearest <= NEAR_TIER_KM and r.weight > 0}
    return tier or {min(usable, key=lambda r: (km[r.id], r.id)).id}


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    key=st.sampled_from(KEYS),
    client=st.none() | st.sampled_from(CLIENT_COUNTRIES),
    subject=st.none() | st.sampled_from(SUBJECTS),
    data_class=st.sampled_from(list(DataClass)),
    model=st.sampled_from(MODELS),
)
def test_envoy_decides_like_decide(
    plane: DecidingEnvoy,
    policy: PolicySnapshot,
    locator: GeoIpLocator,
    fleet: SimulatorFleet,
    key: str,
    client: str | None,
    subject: str | None,
    data_class: DataClass,
    model: str,
) -> None:
    ip = ip_in(client) if client else None
    location = locator.locate(ip) if ip else None
    tenant = policy.tenant_for_key(key)
    assert tenant is not None
    facts = RequestFacts(
        request_id="equivalence",
        at=datetime.now(UTC),
        tenant_id=tenant.id,
        client_ip=ip,
        client_country=location.country if location else None,
        subject_country=subject,
        data_class=data_class,
        model=model,
    )
    snapshot = RoutingSnapshot(policy)
    decision = decide(facts, snapshot)
    headers = {"Authorization": f"Bearer {key}", "X-Data-Class": data_class.value}
    if ip:
        headers["X-Forwarded-For"] = ip
    if subject:
        headers["X-Data-Subject-Country"] = subject
    before = {rid: sim_requests(fleet, rid) for rid in REGIONS}
    response = plane.post({"model": model, "messages": HI}, headers)
    event(f"status {response.status_code}")
    assert response.status_code == decision.http_status, (response.text, decision.reasons)
    after = {rid: sim_requests(fleet, rid) for rid in REGIONS}
    reached = {rid for rid in REGIONS if after[rid] != before[rid]}
    if decision.outcome is Outcome.ROUTED:
        chosen = response.headers["x-residency-region"]
        assert chosen in _nearest_tier(decision, snapshot, tenant), decision.reasons
        assert reached == {chosen}  # the simulators' own counters
    else:
        assert_refusal_explained_alike(response.json()["error"], decision)
        assert response.headers["x-residency-decision"] == response.json()["error"]["decision_id"]
        assert reached == set()


EXPLAINED_ALIKE = (
    "outcome",
    "status",
    "chosen_region",
    "fallbacks",
    "policy_version",
    "reasons",
    "jurisdictions",
    "regimes",
)


def assert_refusal_explained_alike(error: dict[str, Any], decision: Decision) -> None:
    """Envoy's refusal body says what decide() says (all but per-region verdicts and ids)."""
    expected = decision.to_dict()
    assert error["message"] == "; ".join(decision.reasons)
    assert error["reasons"] == list(decision.reasons)
    residency = error["residency"]
    assert set(residency) == set(expected) - {"candidates"}
    for key in EXPLAINED_ALIKE:
        assert residency[key] == expected[key], key
    facts = {k: v for k, v in expected["facts"].items() if k != "at"}
    assert {k: v for k, v in residency["facts"].items() if k != "at"} == facts
    assert residency["decision_id"] == error["decision_id"]


# -- the residency matrix (tests/unit/test_policy_rules.py) through Envoy --------------------

MATRIX = (
    matrix.EEA_CASES
    + matrix.FULL_ADEQUACY_CASES
    + matrix.PARTIAL_CASES
    + matrix.THIRD_COUNTRY_CASES
    + matrix.UK_CASES
    + matrix.SWISS_CASES
    + matrix.INDIA_CASES
    + matrix.OTHER_REGIME_CASES
    + matrix.CONFIGURABLE_CASES
    + matrix.PUBLIC_CASES
)
MATRIX_KEY = "rg-matrix-key-0123456789abcdef0123456"
_versions = iter(range(100, 100_000))


@pytest.fixture(scope="module")
def matrix_plane(
    catalog: Path, fleet: SimulatorFleet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DecidingEnvoy]:
    directory = tmp_path_factory.mktemp("envoy-matrix")
    with deciding_envoy(catalog_policy(catalog), directory, "matrix-envoy", ()) as deciding:
        yield deciding


@pytest.mark.parametrize("case", MATRIX)
def test_residency_matrix_through_envoy(
    matrix_plane: DecidingEnvoy, fleet: SimulatorFleet, case: matrix.Case
) -> None:
    dest = dataclasses.replace(
        region("dest", case.dest, attestations=case.attestations),
        base_url=fleet.spec("eu-frankfurt").base_url,
    )
    tenant = case.tenant or make_tenant("anyone")
    _, keyed = _keyed(MATRIX_KEY, tenant)
    regimes = case.regimes if case.regimes is not None else default_regimes()
    policy = PolicySnapshot(next(_versions), regimes, [dest], [keyed])
    options = dataclasses.replace(matrix_plane.options, decision_on=case.at.date())
    resources = publish(matrix_plane.server, policy, options)
    wait_for(
        "the case's ACK", lambda: accepted(matrix_plane.server, "matrix-envoy", resources.version)
    )
    wait_for("dest healthy in Envoy", lambda: matrix_plane.healthy("dest"))
    headers = {"Authorization": f"Bearer {MATRIX_KEY}", "X-Data-Class": case.data_class}
    if case.client:
        headers["X-Forwarded-For"] = ip_in(case.client)
    if case.subject:
        headers["X-Data-Subject-Country"] = case.subject
    response = matrix_plane.post({"model": "gpt-4o-mini", "messages": HI}, headers)
    expected = 200 if case.allowed else 451
    assert response.status_code == expected, response.text
    if case.allowed:
        assert response.headers["x-residency-region"] == "dest"
