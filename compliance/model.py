"""The policy model: regimes, their rules, and tenants. Plain immutable values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

ANYWHERE = "*"


@dataclass(frozen=True, slots=True)
class Destination:
    """A country a rule lets data go to, optionally only to regions carrying an attestation."""

    country: str
    attestation: str | None = None
    note: str = ""

    def admits(self, country: str, attestations: frozenset[str]) -> bool:
        """True if a region in `country` with `attestations` is covered by this destination."""
        if self.country != ANYWHERE and self.country != country:
            return False
        return self.attestation is None or self.attestation in attestations


@dataclass(frozen=True, slots=True)
class Rule:
    """One legal rule: for these data classes, processing may happen only at `destinations`.

    A rule applies when the request's data class is in `data_classes`, the date is within
    [`effective_from`, `effective_to`), the tenant carries every flag in `tenant_flags`, and the
    tenant has not opted in to `waived_by`. Tenant transfer opt-ins (SCCs, BCRs, IDTA) add
    destinations only to rules with `contractual_extension`.
    """

    id: str
    regime_id: str
    description: str
    data_classes: frozenset[str]
    destinations: tuple[Destination, ...]
    source: str
    excluded_countries: frozenset[str] = frozenset()
    tenant_flags: frozenset[str] = frozenset()
    waived_by: str | None = None
    contractual_extension: bool = False
    effective_from: date | None = None
    effective_to: date | None = None

    def in_force(self, on: date) -> bool:
        """True if the rule is in force on `on`."""
        if self.effective_from is not None and on < self.effective_from:
            return False
        return self.effective_to is None or on < self.effective_to


@dataclass(frozen=True, slots=True)
class Regime:
    """A data-protection regime and the countries whose data it governs."""

    id: str
    name: str
    countries: frozenset[str]
    rules: tuple[Rule, ...]
    source: str
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class TransferOptIn:
    """A tenant's contractual basis (SCC, BCR, IDTA) for sending a regime's data to a country."""

    regime_id: str
    country: str
    basis: str


@dataclass(frozen=True, slots=True)
class Tenant:
    """A customer of the gateway and the policy it adds on top of the law (narrowing only)."""

    id: str
    name: str
    home_jurisdiction: str | None = None
    flags: frozenset[str] = frozenset()
    opt_ins: frozenset[str] = frozenset()
    transfer_opt_ins: tuple[TransferOptIn, ...] = ()
    allowed_regions: frozenset[str] | None = None
    allowed_countries: frozenset[str] | None = None
    denied_regions: frozenset[str] = frozenset()
    api_key_hashes: frozenset[str] = field(default_factory=frozenset)

    def has_transfer_opt_in(self, regime_id: str, country: str) -> TransferOptIn | None:
        """The opt-in covering `regime_id` data going to `country`, if any."""
        for opt_in in self.transfer_opt_ins:
            if opt_in.regime_id == regime_id and opt_in.country == country:
                return opt_in
        return None


TENANT_FLAGS: frozenset[str] = frozenset(
    {"significant_data_fiduciary", "sebi_regulated", "irdai_regulated", "rbi_regulated"}
)
TENANT_OPT_INS: frozenset[str] = frozenset(
    {"rbi_offshore_processing_with_purge", "pipl_cac_mechanism", "ru_localisation_exempt"}
)
