"""The policy stage: which regions may lawfully process a request, and why. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from typing import Any

from compliance.model import Regime, Rule, Tenant
from regions.catalog import Region


@dataclass(frozen=True, slots=True)
class RegimeApplication:
    """A regime that applied to a request: what triggered it and which rules it brought."""

    regime_id: str
    regime_name: str
    triggered_by: tuple[str, ...]
    rules: tuple[str, ...]
    waived: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RegionVerdict:
    """Whether one region may process the request: the bases it has, or why it is excluded."""

    region_id: str
    allowed: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class PolicyEvaluation:
    """The outcome of the policy stage for one set of request facts.

    Evaluations are memoised per policy snapshot (PolicySnapshot.evaluate), so the JSON forms
    every routing explanation carries are built once per evaluation and then shared: callers
    must not mutate them.
    """

    regimes: tuple[RegimeApplication, ...]
    verdicts: tuple[RegionVerdict, ...]
    allowed: frozenset[str]

    @cached_property
    def regimes_json(self) -> list[dict[str, Any]]:
        """The applied regimes, JSON-ready."""
        return [
            {
                "id": r.regime_id,
                "name": r.regime_name,
                "triggered_by": list(r.triggered_by),
                "rules": list(r.rules),
                "waived_rules": list(r.waived),
            }
            for r in self.regimes
        ]

    @cached_property
    def candidates_json(self) -> list[dict[str, Any]]:
        """Every region's verdict, JSON-ready, as candidates no selection skipped."""
        return candidates_json(self.verdicts, {})


def candidates_json(
    verdicts: Iterable[RegionVerdict], skipped: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Region verdicts, JSON-ready, with why selection skipped an allowed region (or None)."""
    return [
        {
            "region": v.region_id,
            "allowed": v.allowed,
            "policy": list(v.reasons),
            "skipped": skipped.get(v.region_id),
        }
        for v in verdicts
    ]


def applicable_rules(
    regime: Regime, data_class: str, tenant: Tenant | None, on: date
) -> tuple[list[Rule], list[Rule]]:
    """Split a regime's rules into (applied, waived by a tenant opt-in) for this request."""
    flags = tenant.flags if tenant else frozenset()
    opt_ins = tenant.opt_ins if tenant else frozenset()
    applied: list[Rule] = []
    waived: list[Rule] = []
    for rule in regime.rules:
        if data_class not in rule.data_classes or not rule.in_force(on):
            continue
        if not rule.tenant_flags <= flags:
            continue
        (waived if rule.waived_by and rule.waived_by in opt_ins else applied).append(rule)
    return applied, waived


def _judge(rule: Rule, region: Region, tenant: Tenant | None) -> tuple[bool, str]:
    """(permitted, reason) for one rule and one region."""
    if region.country in rule.excluded_countries:
        return False, f"{rule.id}: {region.country} is a notified (blocked) destination"
    for destination in rule.destinations:
        if destination.admits(region.country, region.attestations):
            basis = destination.note or f"{destination.country} permitted"
            return True, f"{rule.id}: {basis}"
    if rule.contractual_extension and tenant is not None:
        opt_in = tenant.has_transfer_opt_in(rule.regime_id, region.country)
        if opt_in is not None:
            return True, f"{rule.id}: tenant {opt_in.basis.upper()} for {region.country}"
    needed = sorted(
        d.attestation for d in rule.destinations if d.country == region.country and d.attestation
    )
    if needed:
        return False, (
            f"{rule.id}: {region.country} allowed only with attestation "
            f"{' or '.join(needed)}, which {region.id} lacks"
        )
    return False, f"{rule.id}: {region.country} is not a permitted destination"


def _tenant_exclusion(tenant: Tenant | None, region: Region) -> str | None:
    if tenant is None:
        return None
    if region.id in tenant.denied_regions:
        return f"tenant {tenant.id}: region {region.id} denied by tenant policy"
    if tenant.allowed_regions is not None and region.id not in tenant.allowed_regions:
        return f"tenant {tenant.id}: region {region.id} not in the tenant's allowed regions"
    if tenant.allowed_countries is not None and region.country not in tenant.allowed_countries:
        return f"tenant {tenant.id}: {region.country} not in the tenant's allowed countries"
    return None


def _triggers(
    regime: Regime, jurisdictions: frozenset[str], tenant: Tenant | None
) -> tuple[str, ...]:
    """What makes a regime apply: a governed jurisdiction, or a tenant flag the regime keys on.

    A tenant flagged as regulated (e.g. `sebi_regulated`) is under that regulator wherever its
    clients are, so the flag alone brings the regime in.
    """
    countries = tuple(sorted(regime.countries & jurisdictions))
    if tenant is None or not tenant.flags:
        return countries
    flags = sorted(
        {
            f"tenant flag {flag}"
            for rule in regime.rules
            if rule.tenant_flags and rule.tenant_flags <= tenant.flags
            for flag in rule.tenant_flags
        }
    )
    return countries + tuple(flags)


def evaluate(
    regimes: Iterable[Regime],
    regions: Sequence[Region],
    jurisdictions: frozenset[str],
    data_class: str,
    tenant: Tenant | None,
    on: date,
) -> PolicyEvaluation:
    """Allowed regions = intersection of what every applicable rule permits, narrowed by tenant.

    A regime applies when it is enabled and governs one of `jurisdictions` (or the tenant carries
    a flag one of its rules keys on). A region is allowed
    only if every applied rule of every applicable regime permits it and tenant policy keeps it.
    """
    applications: list[RegimeApplication] = []
    rules: list[Rule] = []
    for regime in regimes:
        triggered = _triggers(regime, jurisdictions, tenant)
        if not regime.enabled or not triggered:
            continue
        applied, waived = applicable_rules(regime, data_class, tenant, on)
        rules.extend(applied)
        applications.append(
            RegimeApplication(
                regime_id=regime.id,
                regime_name=regime.name,
                triggered_by=triggered,
                rules=tuple(r.id for r in applied),
                waived=tuple(r.id for r in waived),
            )
        )
    verdicts: list[RegionVerdict] = []
    for region in regions:
        bases: list[str] = []
        exclusions: list[str] = []
        for rule in rules:
            permitted, reason = _judge(rule, region, tenant)
            (bases if permitted else exclusions).append(reason)
        tenant_reason = _tenant_exclusion(tenant, region)
        if tenant_reason:
            exclusions.append(tenant_reason)
        if exclusions:
            verdicts.append(RegionVerdict(region.id, False, tuple(exclusions)))
        else:
            verdicts.append(RegionVerdict(region.id, True, tuple(bases) or ("no rule restricts",)))
    return PolicyEvaluation(
        regimes=tuple(applications),
        verdicts=tuple(verdicts),
        allowed=frozenset(v.region_id for v in verdicts if v.allowed),
    )
