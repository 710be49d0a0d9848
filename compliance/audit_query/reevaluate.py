"""Re-evaluation: was every region a record went to allowed by the policy it was decided under?

Pure: works on groups of identical records (aggregated in SQL) and historical snapshots. The
jurisdictions are recomputed from each record's facts under its policy version, as the router
computes them: client country, declared subject country, and the tenant's home jurisdiction
in that version (so what is stored in the record's explanation need not be trusted).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from compliance.snapshot import PolicySnapshot

NOT_SENT = "no_longer_allowed"
"""Attempt result of a region skipped before anything was sent to it."""


@dataclass(frozen=True, slots=True)
class Group:
    """Records identical in everything the policy stage and the check depend on."""

    policy_version: int | None
    tenant_id: str | None
    client_country: str | None
    subject_country: str | None
    data_class: str | None
    regions: tuple[str, ...]
    bucket: int
    count: int
    samples: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Violation:
    """Records that went to a region their policy version did not allow."""

    group: Group
    region: str
    why: str
    jurisdictions: tuple[str, ...]
    samples: tuple[str, ...] = ()


@dataclass(slots=True)
class Reevaluation:
    """Totals of a re-evaluation run."""

    checked: int = 0
    not_routed: int = 0
    groups: int = 0
    violations: list[Violation] = field(default_factory=list)
    unverifiable: dict[str, int] = field(default_factory=dict)
    flagged: int = 0
    """Records with at least one region not allowed (each counted once)."""


def rule_boundaries(snapshots: Iterable[PolicySnapshot]) -> tuple[date, ...]:
    """Dates on which some rule comes into or goes out of force (sorted, distinct)."""
    found: set[date] = set()
    for snapshot in snapshots:
        for regime in snapshot.regimes:
            for rule in regime.rules:
                found.update(d for d in (rule.effective_from, rule.effective_to) if d)
    return tuple(sorted(found))


def bucket_date(boundaries: Sequence[date], bucket: int) -> date:
    """A date inside bucket `bucket` (bucket i spans [boundaries[i-1], boundaries[i]))."""
    if bucket > 0:
        return boundaries[bucket - 1]
    return boundaries[0] - timedelta(days=1) if boundaries else date(2000, 1, 1)


def attempted_regions(attempts: Any) -> tuple[str, ...]:
    """Regions a request was sent to, from a stored `attempts` list."""
    out = []
    for attempt in attempts if isinstance(attempts, list) else []:
        if isinstance(attempt, Mapping) and attempt.get("result") != NOT_SENT:
            region = attempt.get("region")
            if isinstance(region, str):
                out.append(region)
    return tuple(out)


def _judge(group: Group, snapshot: PolicySnapshot, on: date) -> tuple[list[Violation], str | None]:
    """The group's regions the policy did not allow, or a reason it cannot be judged."""
    tenant = snapshot.tenants.get(group.tenant_id) if group.tenant_id else None
    if group.tenant_id and tenant is None:
        return [], f"tenant {group.tenant_id} absent from policy version {group.policy_version}"
    found = {c for c in (group.client_country, group.subject_country) if c}
    if tenant is not None and tenant.home_jurisdiction:
        found.add(tenant.home_jurisdiction)
    countries = tuple(sorted(found))
    if not countries:
        why = "routed although no jurisdiction was known (the router must refuse)"
        return [Violation(group, r, why, (), group.samples) for r in group.regions], None
    evaluation = snapshot.evaluate(frozenset(countries), group.data_class or "personal", tenant, on)
    verdicts = {v.region_id: v for v in evaluation.verdicts}
    bad = []
    for region in group.regions:
        if region in evaluation.allowed:
            continue
        verdict = verdicts.get(region)
        why = "; ".join(verdict.reasons) if verdict else "region absent from that policy version"
        bad.append(Violation(group, region, why, countries, group.samples))
    return bad, None


def reevaluate(
    groups: Iterable[Group],
    history: Mapping[int, PolicySnapshot],
    boundaries: Sequence[date],
) -> Reevaluation:
    """Judge each group once against its policy version; collect violations and gaps."""
    result = Reevaluation()
    for group in groups:
        if not group.regions:
            result.not_routed += group.count
            continue
        result.checked += group.count
        result.groups += 1
        snapshot = history.get(group.policy_version) if group.policy_version else None
        if snapshot is None:
            key = f"policy version {group.policy_version} not in the policy history"
            result.unverifiable[key] = result.unverifiable.get(key, 0) + group.count
            continue
        bad, gap = _judge(group, snapshot, bucket_date(boundaries, group.bucket))
        if gap is not None:
            result.unverifiable[gap] = result.unverifiable.get(gap, 0) + group.count
        if bad:
            result.flagged += group.count
        result.violations.extend(bad)
    return result
