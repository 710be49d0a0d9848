"""Admin API documents: round trips, ETags, If-Match, and validation messages naming the field."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from compliance.pack import load_pack
from compliance.snapshot import hash_api_key
from compliance.store.admin_documents import (
    InvalidDocument,
    etag_of,
    if_match_satisfied,
    patched,
    regime_document,
    regime_from_body,
    region_document,
    region_from_body,
    tenant_document,
    tenant_from_body,
)
from compliance.store.catalog_file import load_catalog
from regions.catalog import RegionStatus

REGIONS, TENANTS = load_catalog()
_, REGIMES = load_pack()


def region_body(**changes: Any) -> dict[str, Any]:
    return {**region_document(REGIONS[0]), **changes}


@pytest.mark.parametrize("region", REGIONS, ids=lambda r: r.id)
def test_region_document_round_trips(region: Any) -> None:
    assert region_from_body(region_document(region), region.id) == region


@pytest.mark.parametrize("regime", REGIMES, ids=lambda r: r.id)
def test_regime_document_round_trips(regime: Any) -> None:
    assert regime_from_body(regime_document(regime), regime.id) == regime


def test_tenant_document_hides_keys_and_round_trips_without_them() -> None:
    tenant = TENANTS[0]
    document = tenant_document(tenant)
    assert document["api_key_count"] == len(tenant.api_key_hashes) > 0
    assert not any(h in str(document) for h in tenant.api_key_hashes)
    parsed, keys_given = tenant_from_body(document, tenant.id)
    assert not keys_given
    assert dataclasses.replace(parsed, api_key_hashes=tenant.api_key_hashes) == tenant


def test_tenant_keys_are_hashed() -> None:
    parsed, keys_given = tenant_from_body(
        {"name": "T", "api_keys": ["secret-1-0123456789abcdef0123456789abcdef"]}, "t"
    )
    assert keys_given
    assert parsed.api_key_hashes == frozenset(
        {hash_api_key("secret-1-0123456789abcdef0123456789abcdef")}
    )


def test_etag_follows_content() -> None:
    region = REGIONS[0]
    assert etag_of(region) == etag_of(dataclasses.replace(region))
    assert etag_of(region) != etag_of(dataclasses.replace(region, weight=5))
    tenant = TENANTS[0]
    rotated = dataclasses.replace(tenant, api_key_hashes=frozenset({hash_api_key("new")}))
    assert etag_of(tenant) != etag_of(rotated)


@pytest.mark.parametrize(
    ("header", "current", "expected"),
    [
        (None, None, True),
        (None, "abc", True),
        ('"abc"', "abc", True),
        ("abc", "abc", True),
        ('"x", "abc"', "abc", True),
        ('"x"', "abc", False),
        ("*", "abc", True),
        ("*", None, False),
        ('"abc"', None, False),
    ],
)
def test_if_match(header: str | None, current: str | None, expected: bool) -> None:
    assert if_match_satisfied(header, current) is expected


@pytest.mark.parametrize(
    ("changes", "field", "problem"),
    [
        ({"country": "XX"}, "country", "'XX' is not an ISO 3166-1 alpha-2 country code"),
        ({"latitude": 91}, "latitude", "must be between -90 and 90"),
        ({"longitude": -181}, "longitude", "must be between -180 and 180"),
        ({"latitude": "north"}, "latitude", "must be a number"),
        ({"base_url": "ftp://x"}, "base_url", "'ftp://x' is not an http(s) URL with a host"),
        ({"attestations": ["iso"]}, "attestations[0]", "'iso' is not a known attestation"),
        ({"status": "paused"}, "status", "'paused' is not a known region status"),
        ({"weight": 101}, "weight", "must be between 0 and 100"),
        ({"weight": -1}, "weight", "must be between 0 and 100"),
        ({"weight": 2.5}, "weight", "must be an integer"),
        ({"id": "other"}, "id", "'other' does not match the region id in the path"),
        ({"colour": "red"}, "colour", "unknown field"),
    ],
)
def test_region_validation_names_field(changes: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(InvalidDocument) as caught:
        region_from_body(region_body(**changes), REGIONS[0].id)
    assert caught.value.message.startswith(f"{field}: {problem}")
    assert caught.value.field == field


def test_region_body_must_be_an_object() -> None:
    with pytest.raises(InvalidDocument) as caught:
        region_from_body([1, 2], "r")
    assert caught.value.message == "request body must be a JSON object describing the region"


def test_region_read_only_fields_are_ignored() -> None:
    body = region_body(etag="x", in_flight=3, serving_status="active", serving_policy_version=1)
    assert region_from_body(body, REGIONS[0].id) == REGIONS[0]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "T", "home_jurisdiction": "ZZ"}, "home_jurisdiction: 'ZZ' is not an ISO"),
        ({"name": "T", "flags": ["vip"]}, "flags[0]: 'vip' is not a known tenant flag"),
        ({"name": "T", "denied_regions": ["Bad"]}, "denied_regions[0]: 'Bad' is not a region id"),
        ({"name": "T", "api_keys": [""]}, "api_keys[0]: must be a non-empty string"),
    ],
)
def test_tenant_validation_names_field(body: Any, message: str) -> None:
    with pytest.raises(InvalidDocument) as caught:
        tenant_from_body(body, "t")
    assert caught.value.message.startswith(message)


def test_regime_validation_names_field() -> None:
    document = regime_document(REGIMES[0])
    document["rules"][0]["destinations"][0]["attestation"] = "made_up"
    with pytest.raises(InvalidDocument) as caught:
        regime_from_body(document, REGIMES[0].id)
    assert caught.value.field == "rules.0.destinations.0.attestation"
    assert "'made_up' is not a known attestation" in caught.value.message


def test_patch_accepts_only_allowed_fields() -> None:
    current = region_document(REGIONS[0])
    merged = patched(current, {"status": "draining", "weight": 10}, frozenset({"status", "weight"}))
    region = region_from_body(merged, REGIONS[0].id)
    assert (region.status, region.weight) == (RegionStatus.DRAINING, 10)
    with pytest.raises(InvalidDocument) as caught:
        patched(current, {"name": "x"}, frozenset({"status", "weight"}))
    assert (
        caught.value.message == "name: cannot be changed with PATCH (only status, weight; use PUT)"
    )
    with pytest.raises(InvalidDocument) as caught:
        patched(current, {}, frozenset({"status"}))
    assert caught.value.message == "request body must be a JSON object setting some of: status"


def test_values_longer_than_their_columns_are_refused() -> None:
    with pytest.raises(InvalidDocument) as caught:
        tenant_from_body({"name": "T"}, "t" * 129)
    assert (caught.value.message, caught.value.field) == ("id: longer than 128 characters", "id")
    with pytest.raises(InvalidDocument) as caught:
        region_from_body(region_body(name="n" * 256), REGIONS[0].id)
    assert caught.value.message == "name: longer than 255 characters"
