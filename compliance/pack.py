"""Read a policy pack (YAML) into regimes, with precise errors for malformed packs."""

from __future__ import annotations

from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from compliance.jurisdictions import DataClass
from compliance.model import ANYWHERE, Destination, Regime, Rule
from regions.catalog import KNOWN_ATTESTATIONS

DEFAULT_PACK = "default.yaml"


class PolicyPackError(ValueError):
    """A policy pack that cannot be read; the message names the place and the problem.

    `field` is where the problem is (e.g. `rules.0.destinations`), if known.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


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

    @field_validator("attestation")
    @classmethod
    def _attestation(cls, value: str | None) -> str | None:
        if value is not None and value not in KNOWN_ATTESTATIONS:
            known = ", ".join(sorted(KNOWN_ATTESTATIONS))
            raise ValueError(f"{value!r} is not a known attestation (known: {known})")
        return value


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
    enabled: StrictBool = True  # "yes" must not switch a law on
    rules: list[_RuleSpec]

    @field_validator("countries")
    @classmethod
    def _countries(cls, value: list[str]) -> list[str]:
        return [_check_country(c) for c in value]


_Spec = TypeVar("_Spec", bound=BaseModel)


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


def _to_regime(spec: _RegimeSpec) -> Regime:
    return Regime(
        id=spec.id,
        name=spec.name,
        countries=frozenset(spec.countries),
        rules=tuple(_to_rule(spec.id, rule) for rule in spec.rules),
        source=spec.source,
        enabled=spec.enabled,
    )


def _validate(model: type[_Spec], document: Any, prefix: str) -> _Spec:
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        error = first.get("ctx", {}).get("error")
        problem = str(error) if isinstance(error, ValueError) else first["msg"]
        raise PolicyPackError(f"{prefix}{where}: {problem}", where or None) from None


def _check_unique_rules(regimes: tuple[Regime, ...], prefix: str) -> None:
    ids = [rule.id for regime in regimes for rule in regime.rules]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise PolicyPackError(f"{prefix}duplicate rule ids: {', '.join(duplicates)}", "rules")


def parse_pack(document: Any, origin: str = "<pack>") -> tuple[str, tuple[Regime, ...]]:
    """Turn a parsed YAML document into (version label, regimes)."""
    pack = _validate(_PackSpec, document, f"{origin}: ")
    regimes = tuple(_to_regime(r) for r in pack.regimes)
    _check_unique_rules(regimes, f"{origin}: ")
    return pack.version_label, regimes


def parse_regime(document: Any) -> Regime:
    """One regime mapping (a pack `regimes` item, or an admin API body)."""
    regime = _to_regime(_validate(_RegimeSpec, document, ""))
    _check_unique_rules((regime,), "")
    return regime


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
