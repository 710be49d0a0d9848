"""Read a catalog file (regions and tenants, YAML) with precise, located validation errors.

Format: docs/CATALOG.md (its reference tables are generated from the specs below by
`scripts/catalog_table.py`). API keys appear in plaintext in the file and are hashed
(`hash_api_key`) on the way in; only hashes reach the Tenant values. Every key must be strong
(`compliance.api_keys.key_problem`) unless the catalog says `demo: true` (the shipped demo
catalog, whose keys are public).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from compliance.api_keys import key_problem
from compliance.jurisdictions import COUNTRY_GROUPS
from compliance.model import TENANT_FLAGS, TENANT_OPT_INS, Tenant, TransferOptIn
from compliance.snapshot import hash_api_key
from regions.catalog import KNOWN_ATTESTATIONS, Region, RegionStatus
from regions.geo import is_country_code
from regions.selection import NEAR_TIER_KM

REGION_ID = re.compile(r"[a-z0-9-]{1,63}")
logger = logging.getLogger(__name__)


class CatalogError(ValueError):
    """A catalog that cannot be read; the message names the item, the field and the problem.

    `field` is where the first problem is (e.g. `regions[0].latitude`), if known.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _problem(message: str, **context: Any) -> PydanticCustomError:
    return PydanticCustomError("catalog", message, context)


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _problem("must be a non-empty string")
    return value


def _country(value: Any) -> str:
    if isinstance(value, bool):
        raise _problem(
            "expected a country code, got {value} (YAML reads NO as false: quote it)",
            value=str(value).lower(),
        )
    code = _string(value)
    if code.upper() in COUNTRY_GROUPS:
        raise _problem(
            "{code} is a country group; this field takes one country code "
            "(groups are for allowed_countries)",
            code=repr(code),
        )
    if not is_country_code(code):
        hint = f" (upper case: {code.upper()!r})" if is_country_code(code.upper()) else ""
        raise _problem("{code} is not an ISO 3166-1 alpha-2 country code" + hint, code=repr(code))
    return code


def _country_or_group(value: Any) -> str:
    """A country code, or a group name (`EEA`, `EU`) that `_countries` expands."""
    if isinstance(value, str) and value.upper() in COUNTRY_GROUPS:
        if value not in COUNTRY_GROUPS:
            raise _problem(
                "{value} is not a country group (upper case: {upper})",
                value=repr(value),
                upper=repr(value.upper()),
            )
        return value
    return _country(value)


def _countries(values: Iterable[str]) -> frozenset[str]:
    """Country codes with each group name replaced by its member countries."""
    found: set[str] = set()
    for value in values:
        found |= COUNTRY_GROUPS.get(value, {value})
    return frozenset(found)


def _number(low: float, high: float) -> Any:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _problem("must be a number")
        if not low <= value <= high:  # also rejects NaN
            raise _problem(f"must be between {low:g} and {high:g}")
        return float(value)

    return check


def _weight(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _problem("must be an integer")
    if not 0 <= value <= 100:
        raise _problem("must be between 0 and 100")
    return value


def _region_id(value: Any) -> str:
    if not isinstance(value, str) or not REGION_ID.fullmatch(value):
        raise _problem(
            "{value} is not a region id (lowercase letters, digits and '-', 1-63 characters)",
            value=repr(value),
        )
    return value


def _base_url(value: Any) -> str:
    url = _string(value)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _problem("{url} is not an http(s) URL with a host", url=repr(url))
    return url


@dataclass(frozen=True)
class FieldKind:
    """What the catalog reference (docs/CATALOG.md) calls a field's type, and its values."""

    name: str
    plural: str = ""
    values: frozenset[str] = frozenset()

    @property
    def names(self) -> str:
        """The plural, for a list of these."""
        return self.plural or f"{self.name}s"


@dataclass(frozen=True)
class OneOf:
    """A validator admitting only `known` strings; its kind lists them in the reference."""

    known: frozenset[str]
    what: str

    def __call__(self, value: Any) -> str:
        if not isinstance(value, str) or value not in self.known:
            raise _problem(
                "{value} is not a known "
                + self.what
                + " (known: "
                + ", ".join(sorted(self.known))
                + ")",
                value=repr(value),
            )
        return value

    @property
    def kind(self) -> FieldKind:
        """The field kind: the name of the thing, with the known values."""
        return FieldKind(self.what, values=self.known)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _problem("must be true or false")
    return value


Country = Annotated[str, BeforeValidator(_country), FieldKind("country code")]
CountryOrGroup = Annotated[
    str,
    BeforeValidator(_country_or_group),
    FieldKind("country code or group", "country codes or groups"),
]
NonEmpty = Annotated[str, BeforeValidator(_string), FieldKind("string")]
RegionId = Annotated[str, BeforeValidator(_region_id), FieldKind("region id")]
REGION_STATUSES = frozenset(s.value for s in RegionStatus)


class _RegionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", title="region")
    id: RegionId = Field(
        description="Unique id: lowercase letters, digits and `-`, 1-63 characters."
    )
    name: NonEmpty = Field(description="Display name.")
    country: Country = Field(
        description="Where the region processes data (ISO 3166-1 alpha-2, upper case); the "
        "policy pack judges this country."
    )
    latitude: Annotated[
        float, BeforeValidator(_number(-90, 90)), FieldKind("number, -90 to 90")
    ] = Field(description="Location, for choosing the nearest allowed region.")
    longitude: Annotated[
        float, BeforeValidator(_number(-180, 180)), FieldKind("number, -180 to 180")
    ] = Field(description="Location, for choosing the nearest allowed region.")
    base_url: Annotated[str, BeforeValidator(_base_url), FieldKind("http(s) URL")] = Field(
        description="Where requests are forwarded (the OpenAI-compatible server, no `/v1`). A "
        "loopback URL with a port is a simulated region under `gateway demo`."
    )
    models: list[NonEmpty] = Field(
        default_factory=list, description="Model names the region serves."
    )
    attestations: list[
        Annotated[str, BeforeValidator(OneOf(KNOWN_ATTESTATIONS, "attestation"))]
    ] = Field(
        default_factory=list,
        description="Certifications of the region's operator that some transfer rules "
        "require (e.g. `eu_us_dpf` for EU personal data in the US).",
    )
    status: Annotated[str, BeforeValidator(OneOf(REGION_STATUSES, "region status"))] = Field(
        default=RegionStatus.ACTIVE.value,
        description="Only `active` regions receive new requests.",
    )
    weight: Annotated[int, BeforeValidator(_weight), FieldKind("integer, 0 to 100")] = Field(
        default=100,
        description="Share of new requests among the allowed regions equally near the client "
        f"(within {NEAR_TIER_KM:g} km of the nearest); 0: only as a fallback.",
    )


class _TransferOptInSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", title="transfer opt-in")
    regime_id: NonEmpty = Field(
        description="The regime whose transfer rule this extends (e.g. `gdpr`); the rule must "
        "allow contractual extension."
    )
    country: Country = Field(
        description="The one destination country the contract covers (no groups: a contract "
        "names its destination)."
    )
    basis: NonEmpty = Field(
        description="The contractual basis, shown in decisions (e.g. `scc`, `bcr`)."
    )


class _TenantSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", title="tenant")
    id: NonEmpty = Field(description="Unique tenant id.")
    name: NonEmpty = Field(description="Display name.")
    home_jurisdiction: Country | None = Field(
        default=None,
        description="The tenant's own country, whose regimes apply to all its requests, "
        "wherever the client is.",
    )
    flags: list[Annotated[str, BeforeValidator(OneOf(TENANT_FLAGS, "tenant flag"))]] = Field(
        default_factory=list,
        description="Regulatory status that brings in the rules keyed on it, wherever the "
        "clients are.",
    )
    opt_ins: list[Annotated[str, BeforeValidator(OneOf(TENANT_OPT_INS, "opt-in"))]] = Field(
        default_factory=list,
        description="Rules the tenant has met the conditions to waive (each rule names its "
        "opt-in).",
    )
    transfer_opt_ins: list[_TransferOptInSpec] = Field(
        default_factory=list,
        description="Contracts (e.g. SCCs) that permit transfers to a country a regime's rule "
        "does not list (see the transfer opt-in table).",
    )
    allowed_regions: list[RegionId] | None = Field(
        default=None,
        description="Only these regions (ids in this catalog); unset: any region.",
    )
    allowed_countries: list[CountryOrGroup] | None = Field(
        default=None,
        description="Only regions in these countries; `EEA` and `EU` stand for their member "
        "countries. Unset: any country.",
    )
    denied_regions: list[RegionId] = Field(
        default_factory=list, description="Never these regions (ids in this catalog)."
    )
    api_keys: list[NonEmpty] = Field(
        default_factory=list,
        description="Plaintext API keys, stored hashed; each at least 32 characters unless the "
        "catalog says `demo: true`.",
    )


class _CatalogSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", title="catalog")
    demo: Annotated[bool, BeforeValidator(_flag), FieldKind("boolean")] = Field(
        default=False,
        description="A demonstration catalog: tenant API keys are not checked for strength.",
    )
    regions: list[_RegionSpec] = Field(default_factory=list, description="The regions.")
    tenants: list[_TenantSpec] = Field(default_factory=list, description="The tenants.")


CATALOG_SCHEMA: tuple[type[BaseModel], ...] = (
    _CatalogSpec,
    _RegionSpec,
    _TenantSpec,
    _TransferOptInSpec,
)
"""The catalog's mappings, outermost first (for the reference tables)."""


_Spec = TypeVar("_Spec", bound=BaseModel)

_PYDANTIC_MESSAGES = {
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
    "list_type": "must be a list",
    "model_type": "must be a mapping",
}


def _where(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "catalog"


def _validate(model: type[_Spec], document: Any, prefix: str = "") -> _Spec:
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        located = [
            (_where(e["loc"]), _PYDANTIC_MESSAGES.get(e["type"], e["msg"])) for e in exc.errors()
        ]
        message = prefix + "; ".join(f"{where}: {problem}" for where, problem in located)
        raise CatalogError(message, located[0][0]) from None


def _duplicates(spec: _CatalogSpec) -> list[str]:
    problems: list[str] = []
    region_ids = {r.id for r in spec.regions}
    seen: set[str] = set()
    for i, region in enumerate(spec.regions):
        if region.id in seen:
            problems.append(f"regions[{i}].id: duplicate region id {region.id!r}")
        seen.add(region.id)
    tenant_ids: set[str] = set()
    key_owner: dict[str, str] = {}
    for i, tenant in enumerate(spec.tenants):
        if tenant.id in tenant_ids:
            problems.append(f"tenants[{i}].id: duplicate tenant id {tenant.id!r}")
        tenant_ids.add(tenant.id)
        for field in ("allowed_regions", "denied_regions"):
            for j, region_id in enumerate(getattr(tenant, field) or ()):
                if region_id not in region_ids:
                    problems.append(f"tenants[{i}].{field}[{j}]: unknown region {region_id!r}")
        for j, key in enumerate(tenant.api_keys):
            owner = key_owner.setdefault(key, tenant.id)
            if owner != tenant.id or tenant.api_keys.index(key) != j:
                problems.append(f"tenants[{i}].api_keys[{j}]: API key already used by {owner!r}")
    return problems


def _weak_keys(tenant: _TenantSpec, where: str) -> list[str]:
    """One problem per key that is too weak to be stored as an unsalted hash."""
    problems = []
    for j, key in enumerate(tenant.api_keys):
        problem = key_problem(key)
        if problem is not None:
            problems.append(f"{where}api_keys[{j}]: {problem}")
    return problems


def _to_region(spec: _RegionSpec) -> Region:
    return Region(
        id=spec.id,
        name=spec.name,
        country=spec.country,
        latitude=spec.latitude,
        longitude=spec.longitude,
        base_url=spec.base_url,
        models=frozenset(spec.models),
        attestations=frozenset(spec.attestations),
        status=RegionStatus(spec.status),
        weight=spec.weight,
    )


def _to_tenant(spec: _TenantSpec) -> Tenant:
    def optional(values: list[str] | None) -> frozenset[str] | None:
        return None if values is None else frozenset(values)

    return Tenant(
        id=spec.id,
        name=spec.name,
        home_jurisdiction=spec.home_jurisdiction,
        flags=frozenset(spec.flags),
        opt_ins=frozenset(spec.opt_ins),
        transfer_opt_ins=tuple(
            TransferOptIn(regime_id=t.regime_id, country=t.country, basis=t.basis)
            for t in spec.transfer_opt_ins
        ),
        allowed_regions=optional(spec.allowed_regions),
        allowed_countries=(
            None if spec.allowed_countries is None else _countries(spec.allowed_countries)
        ),
        denied_regions=frozenset(spec.denied_regions),
        api_key_hashes=frozenset(hash_api_key(k) for k in spec.api_keys),
    )


def parse_catalog(
    document: Any, origin: str | None = None
) -> tuple[tuple[Region, ...], tuple[Tenant, ...]]:
    """Turn a parsed YAML document into (regions, tenants); CatalogError lists every problem."""
    prefix = f"{origin}: " if origin else ""
    spec = _validate(_CatalogSpec, document, prefix)
    problems = _duplicates(spec)
    if spec.demo:
        if any(t.api_keys for t in spec.tenants):
            logger.warning(
                "%sdemo catalog: tenant API keys are not checked for strength; "
                "do not use it beyond a demonstration",
                prefix,
            )
    else:
        for i, tenant in enumerate(spec.tenants):
            problems += _weak_keys(tenant, f"tenants[{i}].")
    if problems:
        raise CatalogError(prefix + "; ".join(problems))
    return tuple(_to_region(r) for r in spec.regions), tuple(_to_tenant(t) for t in spec.tenants)


def parse_region(document: Any) -> Region:
    """One region mapping (a catalog `regions` item, or an admin API body)."""
    return _to_region(_validate(_RegionSpec, document))


def parse_tenant(document: Any) -> Tenant:
    """One tenant mapping; its plaintext `api_keys` come back hashed in `api_key_hashes`.

    Region ids are checked for form only: whether they exist is the caller's concern. API keys
    must be strong (there is no demo allowance here).
    """
    spec = _validate(_TenantSpec, document)
    problems = _weak_keys(spec, "")
    if problems:
        raise CatalogError("; ".join(problems), problems[0].partition(":")[0])
    return _to_tenant(spec)


def load_catalog(path: Path | None = None) -> tuple[tuple[Region, ...], tuple[Tenant, ...]]:
    """Load a catalog file; without a path, the demo catalog shipped in `regions/data`."""
    if path is None:
        resource = resources.files("regions").joinpath("data", "demo-catalog.yaml")
        text, origin = resource.read_text("utf-8"), "demo-catalog.yaml"
    else:
        origin = str(path)
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise CatalogError(f"{origin}: cannot read the catalog file: {reason}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{origin}: not valid YAML: {exc}") from None
    return parse_catalog(document, origin)
