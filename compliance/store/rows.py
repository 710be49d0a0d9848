"""Conversions between the pure policy values and table rows (plain dicts, JSON-ready lists)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from compliance.model import Destination, Regime, Rule, Tenant, TransferOptIn
from regions.catalog import Region, RegionStatus

Row = dict[str, Any]
RowMapping = Mapping[Any, Any]
"""A row as read (SQLAlchemy's RowMapping also accepts Column keys)."""


def _sorted(values: Iterable[str]) -> list[str]:
    return sorted(values)


def _optional_set(values: Iterable[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(values)


def region_row(region: Region, updated_at: datetime) -> Row:
    """The `regions` row for a Region."""
    return {
        "id": region.id,
        "name": region.name,
        "country": region.country,
        "latitude": region.latitude,
        "longitude": region.longitude,
        "base_url": region.base_url,
        "models": _sorted(region.models),
        "attestations": _sorted(region.attestations),
        "status": RegionStatus(region.status).value,
        "weight": region.weight,
        "updated_at": updated_at,
    }


def to_region(row: RowMapping) -> Region:
    """A Region from its `regions` row."""
    return Region(
        id=row["id"],
        name=row["name"],
        country=row["country"],
        latitude=float(row["latitude"]),
        longitude=float(row["longitude"]),
        base_url=row["base_url"],
        models=frozenset(row["models"]),
        attestations=frozenset(row["attestations"]),
        status=RegionStatus(row["status"]),
        weight=int(row["weight"]),
    )


def tenant_row(tenant: Tenant) -> Row:
    """The `tenants` row for a Tenant (API keys live in `tenant_api_keys`)."""
    return {
        "id": tenant.id,
        "name": tenant.name,
        "home_jurisdiction": tenant.home_jurisdiction,
        "flags": _sorted(tenant.flags),
        "opt_ins": _sorted(tenant.opt_ins),
        "transfer_opt_ins": [
            {"regime_id": t.regime_id, "country": t.country, "basis": t.basis}
            for t in tenant.transfer_opt_ins
        ],
        "allowed_regions": None
        if tenant.allowed_regions is None
        else _sorted(tenant.allowed_regions),
        "allowed_countries": None
        if tenant.allowed_countries is None
        else _sorted(tenant.allowed_countries),
        "denied_regions": _sorted(tenant.denied_regions),
    }


def to_tenant(row: RowMapping, key_hashes: Iterable[str]) -> Tenant:
    """A Tenant from its `tenants` row and the hashes of its API keys."""
    return Tenant(
        id=row["id"],
        name=row["name"],
        home_jurisdiction=row["home_jurisdiction"],
        flags=frozenset(row["flags"]),
        opt_ins=frozenset(row["opt_ins"]),
        transfer_opt_ins=tuple(
            TransferOptIn(regime_id=t["regime_id"], country=t["country"], basis=t["basis"])
            for t in row["transfer_opt_ins"]
        ),
        allowed_regions=_optional_set(row["allowed_regions"]),
        allowed_countries=_optional_set(row["allowed_countries"]),
        denied_regions=frozenset(row["denied_regions"]),
        api_key_hashes=frozenset(key_hashes),
    )


def regime_row(regime: Regime, position: int) -> Row:
    """The `regimes` row for a Regime (rules live in `regime_rules`)."""
    return {
        "id": regime.id,
        "name": regime.name,
        "countries": _sorted(regime.countries),
        "source": regime.source,
        "enabled": regime.enabled,
        "position": position,
    }


def rule_row(rule: Rule, position: int) -> Row:
    """The `regime_rules` row for a Rule; `position` keeps the pack's order."""
    return {
        "id": rule.id,
        "regime_id": rule.regime_id,
        "description": rule.description,
        "data_classes": _sorted(rule.data_classes),
        "destinations": [
            {"country": d.country, "attestation": d.attestation, "note": d.note}
            for d in rule.destinations
        ],
        "excluded_countries": _sorted(rule.excluded_countries),
        "tenant_flags": _sorted(rule.tenant_flags),
        "waived_by": rule.waived_by,
        "contractual_extension": rule.contractual_extension,
        "source": rule.source,
        "effective_from": rule.effective_from,
        "effective_to": rule.effective_to,
        "position": position,
    }


def to_rule(row: RowMapping) -> Rule:
    """A Rule from its `regime_rules` row."""
    return Rule(
        id=row["id"],
        regime_id=row["regime_id"],
        description=row["description"],
        data_classes=frozenset(row["data_classes"]),
        destinations=tuple(
            Destination(
                country=d["country"], attestation=d.get("attestation"), note=d.get("note", "")
            )
            for d in row["destinations"]
        ),
        source=row["source"],
        excluded_countries=frozenset(row["excluded_countries"]),
        tenant_flags=frozenset(row["tenant_flags"]),
        waived_by=row["waived_by"],
        contractual_extension=bool(row["contractual_extension"]),
        effective_from=row["effective_from"],
        effective_to=row["effective_to"],
    )


def to_regime(row: RowMapping, rules: Sequence[Rule]) -> Regime:
    """A Regime from its `regimes` row and its rules (already in order)."""
    return Regime(
        id=row["id"],
        name=row["name"],
        countries=frozenset(row["countries"]),
        rules=tuple(rules),
        source=row["source"],
        enabled=bool(row["enabled"]),
    )
