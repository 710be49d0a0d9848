"""Routing records: what the routing log keeps about each decision (never prompt content)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.routing.decision import Decision, Outcome


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at one region."""

    region: str
    result: str
    status: int | None = None
    ms: float = 0.0
    ttfb_ms: float | None = None
    """Time to the first body byte (the attempt that answered)."""
    bytes: int | None = None
    """Body bytes relayed to the client (the attempt that answered)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (dataclasses.asdict is several times slower on this hot path)."""
        out = {"region": self.region, "result": self.result, "status": self.status, "ms": self.ms}
        if self.bytes is not None:
            out["ttfb_ms"] = self.ttfb_ms
            out["bytes"] = self.bytes
        return out


def routing_record(
    decision: Decision,
    *,
    outcome: Outcome,
    status_code: int,
    served_region: str | None,
    attempts: list[Attempt],
    latency_ms: float,
    trace_id: str | None,
    client_ip_hmac: str | None,
) -> dict[str, Any]:
    """A row for the `routing_decisions` table."""
    facts = decision.facts
    explanation = decision.to_dict()
    return {
        "decision_id": decision.id,
        "decided_at": facts.at,
        "tenant_id": facts.tenant_id,
        "client_ip_hmac": client_ip_hmac,
        "client_country": facts.client_country,
        "subject_country": facts.subject_country,
        "data_class": facts.data_class.value,
        "model": facts.model,
        "outcome": outcome.value,
        "status_code": status_code,
        "chosen_region": decision.chosen,
        "served_region": served_region,
        "policy_version": decision.policy_version,
        "trace_id": trace_id,
        "latency_ms": round(latency_ms, 3),
        "attempts": [a.to_dict() for a in attempts],
        "jurisdictions": explanation["jurisdictions"],
        "regimes": explanation["regimes"],
        "reasons": list(decision.reasons),
        "explanation": explanation,
    }


def intent_record(
    decision: Decision, *, latency_ms: float, trace_id: str | None, client_ip_hmac: str | None
) -> dict[str, Any]:
    """The write-ahead form of a forwarding decision, made durable before the request leaves
    (compliance.audit.intents): the decision with no response yet (status 0, no region served,
    no attempts); the routing record written at the end is its outcome."""
    return routing_record(
        decision,
        outcome=decision.outcome,
        status_code=0,
        served_region=None,
        attempts=[],
        latency_ms=latency_ms,
        trace_id=trace_id,
        client_ip_hmac=client_ip_hmac,
    )
