"""Country groups in a catalog: `EEA` and `EU` stand for their member countries where a list of
countries is given (a tenant's allowed_countries), and are refused where one country is meant."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from compliance.jurisdictions import COUNTRY_GROUPS, EEA, EU27
from compliance.store.catalog_file import CatalogError, parse_catalog, parse_tenant
from gateway.routing.decide import decide
from tests.factories import facts, region, routing_snapshot

ROOT = Path(__file__).parents[2]
REGIONS = [
    region("eu-frankfurt", "DE"),
    region("eu-oslo", "NO"),
    region("ch-zurich", "CH"),
    region("uk-london", "GB"),
    region("us-virginia", "US"),
]


def _tenant(**fields: object) -> dict[str, object]:
    return {"id": "t1", "name": "T1", **fields}


@pytest.mark.parametrize(
    ("allowed", "expected"),
    [
        (["EEA"], EEA),
        (["EU"], EU27),
        (["EU", "CH", "NO"], EU27 | {"CH", "NO"}),
        (["DE"], {"DE"}),
    ],
)
def test_groups_expand_to_their_member_countries(allowed: list[str], expected: set[str]) -> None:
    _, (tenant,) = parse_catalog({"tenants": [_tenant(allowed_countries=allowed)]})
    assert tenant.allowed_countries == expected


@pytest.mark.parametrize(
    ("allowed", "routes_to"),
    [
        (["EEA"], {"eu-frankfurt", "eu-oslo"}),
        (["EU"], {"eu-frankfurt"}),
        (["EEA", "GB"], {"eu-frankfurt", "eu-oslo", "uk-london"}),
    ],
)
def test_a_tenant_allowed_a_group_routes_only_to_its_countries(
    allowed: list[str], routes_to: set[str]
) -> None:
    """A US client (no residency regime of its own): only the tenant's policy narrows."""
    _, (tenant,) = parse_catalog({"tenants": [_tenant(allowed_countries=allowed)]})
    snapshot = routing_snapshot(REGIONS, [tenant])
    decision = decide(facts(client="US", tenant_id="t1"), snapshot)
    assert set(decision.allowed_regions) == routes_to
    assert decision.chosen in routes_to


def test_the_admin_api_tenant_body_takes_groups() -> None:
    assert parse_tenant(_tenant(allowed_countries=["EEA"])).allowed_countries == EEA


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"allowed_countries": ["eea"]},
            "tenants[0].allowed_countries[0]: 'eea' is not a country group (upper case: 'EEA')",
        ),
        (
            {"home_jurisdiction": "EU"},
            "tenants[0].home_jurisdiction: 'EU' is a country group; this field takes one country "
            "code (groups are for allowed_countries)",
        ),
        (
            {"transfer_opt_ins": [{"regime_id": "gdpr", "country": "EEA", "basis": "scc"}]},
            "tenants[0].transfer_opt_ins[0].country: 'EEA' is a country group",
        ),
    ],
)
def test_a_group_where_one_country_is_meant_is_refused(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(CatalogError, match=re.escape(message)):
        parse_catalog({"tenants": [_tenant(**fields)]})


def test_the_groups_are_the_ones_the_rules_and_the_pack_list() -> None:
    """compliance/packs/RULES.md names EU27 and 'EEA adds IS LI NO'; the pack repeats them."""
    rules = (ROOT / "compliance" / "packs" / "RULES.md").read_text("utf-8")
    listed = re.search(r"- EU27: ([A-Z ]+)\.\n\s+EEA adds ([A-Z ]+)\.", rules)
    assert listed is not None
    assert set(listed[1].split()) == COUNTRY_GROUPS["EU"]
    assert set(listed[1].split()) | set(listed[2].split()) == COUNTRY_GROUPS["EEA"]
    pack = yaml.safe_load((ROOT / "compliance" / "packs" / "default.yaml").read_text("utf-8"))
    assert set(pack["eu27"]) == COUNTRY_GROUPS["EU"]
    assert set(pack["eea"]) == COUNTRY_GROUPS["EEA"]
