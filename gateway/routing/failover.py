"""Failover re-check: may a later hop of a decision's route still be tried?"""

from __future__ import annotations

from gateway.routing.decision import Decision
from gateway.routing.snapshot import RoutingSnapshot
from regions.catalog import RegionStatus


def still_allowed(decision: Decision, region_id: str, latest: RoutingSnapshot) -> bool:
    """True if `region_id` is active and allowed for `decision`'s facts under `latest`.

    A fallback is tried only after earlier hops failed, possibly long after the decision: a
    policy reload in between may have drained the region or narrowed the allowed set. The
    jurisdictions found at decision time are re-evaluated; health is not re-checked (a region
    that went down fails its attempt fast).
    """
    region = latest.policy.region_by_id.get(region_id)
    if region is None or region.status is not RegionStatus.ACTIVE:
        return False
    facts = decision.facts
    tenant = latest.policy.tenants.get(facts.tenant_id) if facts.tenant_id else None
    evaluation = latest.policy.evaluate(
        frozenset(j.country for j in decision.jurisdictions),
        facts.data_class.value,
        tenant,
        facts.at.date(),
    )
    return region_id in evaluation.allowed
