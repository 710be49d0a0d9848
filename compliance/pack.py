"""Read a policy pack (YAML) into regimes, with precise errors for malformed packs."""

from __future__ import annotations

from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from compliance.jurisdictions import DataClass
from compliance.model import ANYWHERE, Destination, Regime, Rule

DEFAULT_PACK = "default.yaml"


class PolicyPackError(ValueError):
    """A policy pack that cannot be read; the message names the place and the problem."""


def _check_country(code: str) -> str:
    if code != ANYWHERE and not (len(code) == 2 and code.isalpha() and code.isupper()):
        raise ValueError(f"{code!r} is not an ISO 3166-1 alpha-2 country code or '*'")
    return code


class _DestinationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    countries: list[str]
    attestation: str | None = None
    note: str = ""

    @field_validator("countries")
    @classmethod
    def _countries(cls, value: list[str]) -> list[str]:
        return [_check_country(c) for c in value]


class _RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    description: str
    data_classes: list[DataClass]
    destinations: list[_DestinationSpec]
    source: str
    excluded_countries: list[str] = Field(default_factory=list)
    tenant_flags: list[str] = Field(default_factory=list)
    waived_by: str | None = None
    contractual_extension: bool = False
    effective_from: date | None = None
    effective_to: date | None = None

    @field_validator("excluded_countries")
    @classmethod
    def _excluded(cls, value: list[str]) -> list[str]:
        return [_check_country(c) for c in value]


class _RegimeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    name: str
    countries: list[str]
    source: str
    enabled: bool = True
    rules: list[_RuleSpec]

    @field_validator("countries")
    @classmethod
    def _countries(cls, value: list[str]) -> list[str]:
        return [_check_country(c) for c in value]


class _PackSpec(BaseModel):
    model_config = ConfigDict(extra="ignore")
    version_label: str
    regimes: list[_RegimeSpec]


def _to_rule(regime_id: str, spec: _RuleSpec) -> Rule:
    destinations = tuple(
        Destination(country=country, attestation=d.attestation, note=d.note)
        for d in spec.destinations
        for country in d.countries
    )
    return Rule(
        id=spec.id,
        regime_id=regime_id,
        description=spec.description,
        data_classes=frozenset(c.value for c in spec.data_classes),
        destinations=destinations,
        source=spec.source,
        excluded_countries=frozenset(spec.excluded_countries),
        tenant_flags=frozenset(spec.tenant_flags),
        waived_by=spec.waived_by,
        contractual_extension=spec.contractual_extension,
        effective_from=spec.effective_from,
        effective_to=spec.effective_to,
    )


def parse_pack(document: Any, origin: str = "<pack>") -> tuple[str, tuple[Regime, ...]]:
    """Turn a parsed YAML document into (version label, regimes)."""
    try:
        pack = _PackSpec.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PolicyPackError(f"{origin}: {where}: {first['msg']}") from None
    regimes = tuple(
        Regime(
            id=r.id,
            name=r.name,
            countries=frozenset(r.countries),
            rules=tuple(_to_rule(r.id, rule) for rule in r.rules),
            source=r.source,
            enabled=r.enabled,
        )
        for r in pack.regimes
    )
    ids = [rule.id for regime in regimes for rule in regime.rules]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise PolicyPackError(f"{origin}: duplicate rule ids: {', '.join(duplicates)}")
    return pack.version_label, regimes


def load_pack(path: Path | None = None) -> tuple[str, tuple[Regime, ...]]:
    """Load a pack file; without a path, the default pack shipped with the gateway."""
    if path is None:
        text = resources.files("compliance.packs").joinpath(DEFAULT_PACK).read_text("utf-8")
        origin = DEFAULT_PACK
    else:
        text, origin = path.read_text("utf-8"), str(path)
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyPackError(f"{origin}: not valid YAML: {exc}") from None
    return parse_pack(document, origin)
