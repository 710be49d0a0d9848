"""Span helpers for the data path: stage spans from a decision, and the traceparent header."""

from __future__ import annotations

from opentelemetry.trace import Span, Tracer
from opentelemetry.util.types import Attributes

from gateway.routing.decision import Decision

_STAGES = ("routing.locate", "routing.policy", "routing.select")


def record_stage_spans(tracer: Tracer, decision: Decision, started_ns: int) -> None:
    """One span per routing stage, timed by the pure core itself (decide() does no tracing)."""
    start = started_ns
    attributes: dict[str, Attributes] = {
        "routing.locate": {
            "residency.jurisdictions": [j.country for j in decision.jurisdictions],
            "residency.client_country": decision.facts.client_country or "",
        },
        "routing.policy": {
            "residency.regimes": [r.regime_id for r in decision.regimes],
            "residency.data_class": decision.facts.data_class.value,
            "residency.policy_version": decision.policy_version,
            "residency.allowed_regions": list(decision.allowed_regions),
        },
        "routing.select": {
            "residency.chosen_region": decision.chosen or "",
            "residency.fallbacks": list(decision.fallbacks),
        },
    }
    for name, duration in zip(_STAGES, decision.stage_ns, strict=True):
        span = tracer.start_span(name, start_time=start, attributes=attributes[name])
        start += duration
        span.end(end_time=start)


def traceparent_of(span: Span) -> str:
    """The W3C traceparent value identifying `span`."""
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
