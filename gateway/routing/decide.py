"""decide(): locate -> policy -> select over one immutable snapshot. No I/O."""

from __future__ import annotations

import zlib
from time import perf_counter_ns

from compliance.evaluation import PolicyEvaluation
from gateway.routing.decision import Decision, Outcome
from gateway.routing.facts import RequestFacts
from gateway.routing.locate import UNKNOWN_ORIGIN, Location, locate
from gateway.routing.snapshot import RoutingSnapshot
from regions.catalog import Region
from regions.selection import Selection, select

_NO_EVALUATION = PolicyEvaluation(regimes=(), verdicts=(), allowed=frozenset())
_NO_SELECTION = Selection(None, (), ())


def decide(facts: RequestFacts, snapshot: RoutingSnapshot) -> Decision:
    """Decide where a request may and will be processed, with every reason."""
    policy = snapshot.policy
    tenant = policy.tenants.get(facts.tenant_id) if facts.tenant_id else None
    t0 = perf_counter_ns()
    location = locate(facts, tenant)
    t1 = perf_counter_ns()
    if not location.jurisdictions:
        return _decision(
            facts,
            snapshot,
            location,
            _NO_EVALUATION,
            _NO_SELECTION,
            Outcome.REFUSED,
            (UNKNOWN_ORIGIN,),
            (t1 - t0, 0, 0),
        )
    countries, data_class, on = location.countries, facts.data_class.value, facts.at.date()
    evaluation = policy.evaluate(countries, data_class, tenant, on)
    key = (countries, data_class, tenant.id if tenant else None, on)
    t2 = perf_counter_ns()
    ranked = policy.ranked_allowed(evaluation, key, location.origin)
    selection = select(
        ranked, facts.model, snapshot.unavailable, zlib.crc32(facts.request_id.encode())
    )
    t3 = perf_counter_ns()
    allowed = [region for region, _ in ranked]
    outcome, reasons = _judge(facts, snapshot, location, evaluation, allowed, selection)
    return _decision(
        facts,
        snapshot,
        location,
        evaluation,
        selection,
        outcome,
        reasons,
        (t1 - t0, t2 - t1, t3 - t2),
    )


def _judge(
    facts: RequestFacts,
    snapshot: RoutingSnapshot,
    location: Location,
    evaluation: PolicyEvaluation,
    allowed: list[Region],
    selection: Selection,
) -> tuple[Outcome, tuple[str, ...]]:
    where = ", ".join(f"{j.country} ({j.source.value})" for j in location.jurisdictions)
    regimes = (
        ", ".join(r.regime_name for r in evaluation.regimes if r.rules) or "no residency regime"
    )
    if not allowed:
        return Outcome.REFUSED, (
            f"no region may process {facts.data_class.value} data governed by {regimes} "
            f"(jurisdictions: {where})",
        )
    if selection.chosen is not None:
        return Outcome.ROUTED, (
            f"{facts.data_class.value} data governed by {regimes} (jurisdictions: {where}); "
            f"{selection.chosen} is {_why_chosen(selection, snapshot.health_known)}",
        )
    model = facts.model
    if model is not None and not any(model in r.models for r in allowed):
        if model not in snapshot.policy.served_models():
            return Outcome.MODEL_NOT_FOUND, (f"no region serves model {model!r}",)
        return Outcome.REFUSED, (
            f"model {model!r} is served only in regions that may not process "
            f"{facts.data_class.value} data governed by {regimes} (jurisdictions: {where})",
        )
    skipped = "; ".join(f"{rid}: {why}" for rid, why in selection.skipped)
    return Outcome.UNAVAILABLE, (f"every allowed region is unavailable ({skipped})",)


def _why_chosen(selection: Selection, health_known: bool) -> str:
    state = "healthy" if health_known else "active (health unknown offline)"
    if not selection.weighted:
        return f"the nearest allowed {state} region"
    weights = ", ".join(f"{region} {weight}" for region, weight in selection.weighted)
    return f"a weighted choice among equally near allowed {state} regions (weights: {weights})"


def _decision(
    facts: RequestFacts,
    snapshot: RoutingSnapshot,
    location: Location,
    evaluation: PolicyEvaluation,
    selection: Selection,
    outcome: Outcome,
    reasons: tuple[str, ...],
    stage_ns: tuple[int, int, int],
) -> Decision:
    return Decision(
        id=facts.request_id,
        outcome=outcome,
        facts=facts,
        jurisdictions=location.jurisdictions,
        evaluation=evaluation,
        skipped=selection.skipped,
        chosen=selection.chosen,
        fallbacks=selection.fallbacks,
        policy_version=snapshot.policy.version,
        reasons=reasons,
        stage_ns=stage_ns,
    )
