"""Regions, tenants and regimes as the admin API shows and accepts them (JSON documents). Pure.

Validation is the catalog file's (regions, tenants) and the policy pack's (regimes), so a file
and an API call are judged by the same rules and give the same messages. Each document has an
ETag, a hash of its content, that writers send back in `If-Match` to detect concurrent edits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from compliance.model import Regime, Rule, Tenant
from compliance.pack import PolicyPackError, parse_regime
from compliance.store.catalog_file import CatalogError, parse_region, parse_tenant
from regions.catalog import Region

ConfigValue = Region | Tenant | Regime
Document = dict[str, Any]

READ_ONLY_FIELDS = frozenset(
    {
        "etag",
        "in_flight",
        "serving_status",
        "serving_policy_version",
        "health",
        "api_key_count",
        "result",
        "policy_version",
    }
)
"""Fields the API adds to a document it returns; a body sent back with them is accepted."""


class InvalidDocument(ValueError):
    """A request body that is not a valid document; `field` says where the problem is."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def region_document(region: Region) -> Document:
    """A region as JSON (also a valid `PUT /admin/regions/{id}` body)."""
    return {
        "id": region.id,
        "name": region.name,
        "country": region.country,
        "latitude": region.latitude,
        "longitude": region.longitude,
        "base_url": region.base_url,
        "models": sorted(region.models),
        "attestations": sorted(region.attestations),
        "status": region.status.value,
        "weight": region.weight,
    }


def _optional(values: frozenset[str] | None) -> list[str] | None:
    return None if values is None else sorted(values)


def tenant_document(tenant: Tenant) -> Document:
    """A tenant as JSON; API keys appear only as a count, never as keys or hashes."""
    return {
        "id": tenant.id,
        "name": tenant.name,
        "home_jurisdiction": tenant.home_jurisdiction,
        "flags": sorted(tenant.flags),
        "opt_ins": sorted(tenant.opt_ins),
        "transfer_opt_ins": [
            {"regime_id": t.regime_id, "country": t.country, "basis": t.basis}
            for t in tenant.transfer_opt_ins
        ],
        "allowed_regions": _optional(tenant.allowed_regions),
        "allowed_countries": _optional(tenant.allowed_countries),
        "denied_regions": sorted(tenant.denied_regions),
        "api_key_count": len(tenant.api_key_hashes),
    }


def _rule_document(rule: Rule) -> Document:
    return {
        "id": rule.id,
        "description": rule.description,
        "data_classes": sorted(rule.data_classes),
        "destinations": [
            {"countries": [d.country], "attestation": d.attestation, "note": d.note}
            for d in rule.destinations
        ],
        "source": rule.source,
        "excluded_countries": sorted(rule.excluded_countries),
        "tenant_flags": sorted(rule.tenant_flags),
        "waived_by": rule.waived_by,
        "contractual_extension": rule.contractual_extension,
        "effective_from": rule.effective_from.isoformat() if rule.effective_from else None,
        "effective_to": rule.effective_to.isoformat() if rule.effective_to else None,
    }


def regime_document(regime: Regime) -> Document:
    """A regime and its rules as JSON, in the policy pack's format."""
    return {
        "id": regime.id,
        "name": regime.name,
        "countries": sorted(regime.countries),
        "source": regime.source,
        "enabled": regime.enabled,
        "rules": [_rule_document(r) for r in regime.rules],
    }


def document_of(value: ConfigValue) -> Document:
    """The JSON document of any configuration value."""
    if isinstance(value, Region):
        return region_document(value)
    if isinstance(value, Tenant):
        return tenant_document(value)
    return regime_document(value)


def etag_of(value: ConfigValue) -> str:
    """A content hash of the value (a tenant's includes its key hashes: rotating keys counts)."""
    payload = orjson.dumps(document_of(value), option=orjson.OPT_SORT_KEYS)
    if isinstance(value, Tenant):
        payload += "".join(sorted(value.api_key_hashes)).encode("ascii")
    return hashlib.sha256(payload).hexdigest()[:20]


def if_match_satisfied(header: str | None, current: str | None) -> bool:
    """RFC 9110 If-Match: absent matches; `*` needs a current value; else one tag must equal."""
    if header is None:
        return True
    tags = [t.strip() for t in header.split(",") if t.strip()]
    if current is None:
        return False
    return "*" in tags or any(t.strip('"') == current for t in tags)


_COLUMN_LIMITS = {"id": 128, "name": 255}
"""Lengths the database columns hold (regions' ids are shorter by their own rule)."""


def _body(body: Any, path_id: str, what: str) -> dict[str, Any]:
    if not isinstance(body, Mapping):
        raise InvalidDocument(f"request body must be a JSON object describing the {what}")
    document = {k: v for k, v in body.items() if k not in READ_ONLY_FIELDS}
    for field, limit in _COLUMN_LIMITS.items():
        value = path_id if field == "id" else document.get(field)
        if isinstance(value, str) and len(value) > limit:
            raise InvalidDocument(f"{field}: longer than {limit} characters", field)
    given = document.setdefault("id", path_id)
    if given != path_id:
        raise InvalidDocument(
            f"id: {given!r} does not match the {what} id in the path ({path_id!r})", "id"
        )
    return document


def region_from_body(body: Any, path_id: str) -> Region:
    """Validate a region document (id defaults to the path's)."""
    try:
        return parse_region(_body(body, path_id, "region"))
    except CatalogError as exc:
        raise InvalidDocument(str(exc), exc.field) from None


def tenant_from_body(body: Any, path_id: str) -> tuple[Tenant, bool]:
    """Validate a tenant document; also whether it sets the API keys (`api_keys` present)."""
    document = _body(body, path_id, "tenant")
    try:
        return parse_tenant(document), "api_keys" in document
    except CatalogError as exc:
        raise InvalidDocument(str(exc), exc.field) from None


def regime_from_body(body: Any, path_id: str) -> Regime:
    """Validate a regime document in the policy pack's format."""
    try:
        return parse_regime(_body(body, path_id, "regime"))
    except PolicyPackError as exc:
        raise InvalidDocument(str(exc), exc.field) from None


def patched(current: Document, changes: Any, allowed: frozenset[str]) -> Document:
    """`current` with `changes` applied; only `allowed` fields may change this way."""
    if not isinstance(changes, Mapping) or not changes:
        fields = ", ".join(sorted(allowed))
        raise InvalidDocument(f"request body must be a JSON object setting some of: {fields}")
    for field in changes:
        if field not in allowed:
            fields = ", ".join(sorted(allowed))
            raise InvalidDocument(
                f"{field}: cannot be changed with PATCH (only {fields}; use PUT)", str(field)
            )
    return {**current, **changes}
