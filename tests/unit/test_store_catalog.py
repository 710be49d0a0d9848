"""Catalog files: defaults, hashing of API keys, and one precise message per bad field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from compliance.model import TENANT_FLAGS
from compliance.snapshot import hash_api_key
from compliance.store.catalog_file import CatalogError, load_catalog, parse_catalog
from regions.catalog import KNOWN_ATTESTATIONS, RegionStatus

DEMO_CATALOG = Path(__file__).resolve().parents[2] / "regions" / "data" / "demo-catalog.yaml"


def _region(id: str, country: str = "DE") -> dict[str, Any]:
    return {
        "id": id,
        "name": id.title(),
        "country": country,
        "latitude": 50.0,
        "longitude": 8.0,
        "base_url": "http://127.0.0.1:9101",
        "models": ["gpt-4o-mini"],
    }


VALID: dict[str, Any] = {
    "regions": [_region("eu-frankfurt"), _region("uk-london", "GB"), _region("us-oregon", "US")],
    "tenants": [
        {"id": "demo", "name": "Demo", "api_keys": ["k-demo-0123456789abcdef0123456789abcdef"]},
        {
            "id": "acme",
            "name": "ACME",
            "home_jurisdiction": "DE",
            "api_keys": ["k-acme-0123456789abcdef0123456789abcdef"],
        },
    ],
}


DELETE = object()


def _with(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """VALID with the item at `path` set to `value` (or removed, for the DELETE sentinel)."""
    document = copy.deepcopy(VALID)
    target: Any = document
    for part in path[:-1]:
        target = target[part]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


ATTESTATIONS = ", ".join(sorted(KNOWN_ATTESTATIONS))
FLAGS = ", ".join(sorted(TENANT_FLAGS))
BAD_ID = "is not a region id (lowercase letters, digits and '-', 1-63 characters)"

CASES: list[tuple[tuple[str | int, ...], Any, str]] = [
    (("regions", 2, "latitude"), 91, "regions[2].latitude: must be between -90 and 90"),
    (("regions", 0, "latitude"), "north", "regions[0].latitude: must be a number"),
    (("regions", 1, "longitude"), -180.5, "regions[1].longitude: must be between -180 and 180"),
    (
        ("regions", 0, "country"),
        "XX",
        "regions[0].country: 'XX' is not an ISO 3166-1 alpha-2 country code",
    ),
    (
        ("regions", 0, "country"),
        "de",
        "regions[0].country: 'de' is not an ISO 3166-1 alpha-2 country code (upper case: 'DE')",
    ),
    (
        ("regions", 0, "country"),
        False,
        "regions[0].country: expected a country code, got false (YAML reads NO as false: quote it)",
    ),
    (
        ("regions", 0, "base_url"),
        "ftp://host",
        "regions[0].base_url: 'ftp://host' is not an http(s) URL with a host",
    ),
    (
        ("regions", 0, "base_url"),
        "http://",
        "regions[0].base_url: 'http://' is not an http(s) URL with a host",
    ),
    (("regions", 0, "base_url"), DELETE, "regions[0].base_url: required field is missing"),
    (
        ("regions", 0, "attestations"),
        ["eu_us_dpf", "iso27001"],
        "regions[0].attestations[1]: "
        f"'iso27001' is not a known attestation (known: {ATTESTATIONS})",
    ),
    (("regions", 0, "attestations"), "eu_us_dpf", "regions[0].attestations: must be a list"),
    (
        ("regions", 0, "status"),
        "paused",
        "regions[0].status: 'paused' is not a known region "
        "status (known: active, disabled, draining)",
    ),
    (("regions", 0, "weight"), 101, "regions[0].weight: must be between 0 and 100"),
    (("regions", 0, "weight"), -1, "regions[0].weight: must be between 0 and 100"),
    (("regions", 0, "weight"), 1.5, "regions[0].weight: must be an integer"),
    (("regions", 0, "weight"), True, "regions[0].weight: must be an integer"),
    (("regions", 0, "id"), "EU-Frankfurt", f"regions[0].id: 'EU-Frankfurt' {BAD_ID}"),
    (("regions", 0, "id"), "a" * 64, f"regions[0].id: '{'a' * 64}' {BAD_ID}"),
    (("regions", 0, "name"), "", "regions[0].name: must be a non-empty string"),
    (("regions", 0, "colour"), "blue", "regions[0].colour: unknown field"),
    (("regions", 1, "id"), "eu-frankfurt", "regions[1].id: duplicate region id 'eu-frankfurt'"),
    (
        ("tenants", 1, "home_jurisdiction"),
        False,
        "tenants[1].home_jurisdiction: expected a "
        "country code, got false (YAML reads NO as false: quote it)",
    ),
    (
        ("tenants", 0, "allowed_countries"),
        ["DE", "QQ"],
        "tenants[0].allowed_countries[1]: 'QQ' is not an ISO 3166-1 alpha-2 country code",
    ),
    (
        ("tenants", 0, "transfer_opt_ins"),
        [{"regime_id": "gdpr", "country": "XX", "basis": "scc"}],
        "tenants[0].transfer_opt_ins[0].country: 'XX' is not an ISO 3166-1 alpha-2 country code",
    ),
    (
        ("tenants", 0, "transfer_opt_ins"),
        [{"regime_id": "gdpr", "country": "US"}],
        "tenants[0].transfer_opt_ins[0].basis: required field is missing",
    ),
    (
        ("tenants", 0, "flags"),
        ["vip"],
        f"tenants[0].flags[0]: 'vip' is not a known tenant flag (known: {FLAGS})",
    ),
    (
        ("tenants", 0, "allowed_regions"),
        ["us-oregon", "mars-1"],
        "tenants[0].allowed_regions[1]: unknown region 'mars-1'",
    ),
    (
        ("tenants", 0, "denied_regions"),
        ["Bad_Id"],
        f"tenants[0].denied_regions[0]: 'Bad_Id' {BAD_ID}",
    ),
    (
        ("tenants", 1, "api_keys"),
        ["k-demo-0123456789abcdef0123456789abcdef"],
        "tenants[1].api_keys[0]: API key already used by 'demo'",
    ),
    (("tenants", 1, "id"), "demo", "tenants[1].id: duplicate tenant id 'demo'"),
    (("version",), 2, "version: unknown field"),
    (("regions",), {"id": "x"}, "regions: must be a list"),
]


@pytest.mark.parametrize(("path", "value", "message"), CASES)
def test_each_bad_field_gets_its_precise_message(
    path: tuple[str | int, ...], value: Any, message: str
) -> None:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(_with(path, value))
    assert str(caught.value) == message


@pytest.mark.parametrize("document", [None, [], "regions"])
def test_document_must_be_a_mapping(document: Any) -> None:
    with pytest.raises(CatalogError, match=r"^catalog: must be a mapping$"):
        parse_catalog(document)


def test_unquoted_norway_in_yaml_gets_the_hint() -> None:
    document = yaml.safe_load(
        "regions:\n  - {id: no-oslo, name: Oslo, country: NO, latitude: 59.9, longitude: 10.7,"
        " base_url: 'https://oslo.example'}\n"
    )
    with pytest.raises(CatalogError, match=r"regions\[0\]\.country: .*quote it\)$"):
        parse_catalog(document)


def test_every_problem_is_reported() -> None:
    document = _with(("regions", 0, "weight"), 500)
    document["regions"][2]["latitude"] = -100
    with pytest.raises(CatalogError) as caught:
        parse_catalog(document)
    assert str(caught.value) == (
        "regions[0].weight: must be between 0 and 100; "
        "regions[2].latitude: must be between -90 and 90"
    )


def test_defaults_and_hashed_keys() -> None:
    regions, tenants = parse_catalog(VALID)
    assert [r.id for r in regions] == ["eu-frankfurt", "uk-london", "us-oregon"]
    assert regions[0].attestations == frozenset()
    assert regions[0].status is RegionStatus.ACTIVE
    assert regions[0].weight == 100
    assert tenants[0].api_key_hashes == frozenset(
        {hash_api_key("k-demo-0123456789abcdef0123456789abcdef")}
    )
    assert tenants[0].allowed_regions is None and tenants[0].allowed_countries is None
    assert tenants[1].home_jurisdiction == "DE"


def test_demo_catalog_parses() -> None:
    regions, tenants = load_catalog(DEMO_CATALOG)
    assert load_catalog() == (regions, tenants)
    oregon = next(r for r in regions if r.id == "us-oregon")
    assert oregon.attestations == frozenset({"eu_us_dpf", "uk_extension_dpf", "swiss_us_dpf"})
    assert {t.id for t in tenants} == {"demo", "acme-eu"}


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text("regions: [\n", "utf-8")
    with pytest.raises(CatalogError, match=r"catalog\.yaml: not valid YAML"):
        load_catalog(path)
    path.write_text("tenants:\n  - {id: t, name: T, flags: [vip]}\n", "utf-8")
    with pytest.raises(CatalogError, match=r"catalog\.yaml: tenants\[0\]\.flags\[0\]: 'vip'"):
        load_catalog(path)


def test_a_missing_or_binary_catalog_file_is_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"nope\.yaml: cannot read the catalog file: No such"):
        load_catalog(tmp_path / "nope.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(CatalogError, match="not UTF-8 text"):
        load_catalog(binary)
