"""The policy snapshot -> Envoy resources translation, against golden files.

Regenerate the golden files after an intended change with `RG_UPDATE_GOLDEN=1 pytest <this file>`
and review the diff like code. `resources-decision.yaml` is what `gateway envoy translate
--catalog catalog.yaml --on 2026-06-01 --geoip-database country.mmdb` prints with default
settings (tests/integration/test_envoy_cli.py checks that)."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import yaml

from compliance.pack import load_pack
from compliance.snapshot import PolicySnapshot
from compliance.store.catalog_file import load_catalog
from gateway.envoy.options import options_from_settings
from gateway.envoy.translate import (
    CLUSTER_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    EnvoyOptions,
    EnvoyResources,
    translate,
)
from gateway.settings import Settings
from regions.catalog import RegionStatus

GOLDEN = Path(__file__).parent / "golden" / "envoy"
OPTIONS = EnvoyOptions(listener_port=10000, trusted_hops=1)
GOLDEN_DATE = date(2026, 6, 1)
GOLDEN_GEOIP = "country.mmdb"


def _snapshot(version: int = 42) -> PolicySnapshot:
    regions, tenants = load_catalog(GOLDEN / "catalog.yaml")
    return PolicySnapshot(version, (), regions, tenants, label="golden")


class _GoldenDumper(yaml.SafeDumper):
    """Multi-line strings (the Lua code) as literal blocks, so golden diffs read like code."""


def _block_if_multiline(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar(
        "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None
    )


_GoldenDumper.add_representer(str, _block_if_multiline)


def _check_golden(name: str, resources: EnvoyResources) -> None:
    path = GOLDEN / name
    rendered = yaml.dump(resources.to_dict(), Dumper=_GoldenDumper, sort_keys=False)
    if os.environ.get("RG_UPDATE_GOLDEN"):
        path.write_text(rendered, "utf-8")
    assert rendered == path.read_text("utf-8"), f"translation differs from {path}"


def test_translation_matches_golden_file() -> None:
    _check_golden("resources.yaml", translate(_snapshot(), OPTIONS))


def golden_decision_resources() -> EnvoyResources:
    """The default pack over the golden catalog, deciding as on GOLDEN_DATE, default settings."""
    regions, tenants = load_catalog(GOLDEN / "catalog.yaml")
    _, regimes = load_pack()
    policy = PolicySnapshot(0, regimes, regions, tenants)
    settings = Settings.model_construct(geoip_database=Path(GOLDEN_GEOIP))
    return translate(policy, options_from_settings(settings, on=GOLDEN_DATE))


def test_translation_with_the_decision_matches_golden_file() -> None:
    _check_golden("resources-decision.yaml", golden_decision_resources())


def test_translation_is_deterministic_and_versioned_by_policy() -> None:
    first, again = translate(_snapshot(), OPTIONS), translate(_snapshot(), OPTIONS)
    assert first.to_dict() == again.to_dict()
    assert first.version.startswith("42-")
    assert translate(_snapshot(43), OPTIONS).version.startswith("43-")
    moved = translate(_snapshot(), EnvoyOptions(listener_port=10001))
    assert moved.version.startswith("42-") and moved.version != first.version


def test_only_active_regions_are_routed_and_disabled_ones_have_no_cluster() -> None:
    resources = translate(_snapshot(), OPTIONS)
    statuses = {r.id: r.status for r in _snapshot().regions}
    routed = {r.name for r in resources.routes[0].virtual_hosts[0].routes} - {"no_region"}
    clusters = {c.name.removeprefix("region_") for c in resources.clusters}
    assert routed == {rid for rid, s in statuses.items() if s is RegionStatus.ACTIVE}
    assert clusters == {rid for rid, s in statuses.items() if s is not RegionStatus.DISABLED}


def test_every_routed_cluster_is_in_the_same_snapshot() -> None:
    resources = translate(_snapshot(), OPTIONS)
    clusters = {c.name for c in resources.clusters}
    for route in resources.routes[0].virtual_hosts[0].routes:
        if route.route is not None:
            assert route.route.cluster in clusters


def test_resources_pack_under_their_type_urls() -> None:
    packed = translate(_snapshot(), OPTIONS).by_type()
    assert set(packed) == {LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE}
    for type_url, resources in packed.items():
        assert all(any_.type_url == type_url for _, any_ in resources)
