"""Data-path tracing: spans recorded as finished values, handed straight to the span processor.

Spans are kept few: the server span (`gateway.request`, carrying the routing decision and the
time each routing stage took) and one `upstream.attempt` per region tried. The SDK's live `Span`
objects (locks, attribute cleaning, context switches) cost ~12 µs each on this hardware, and
every span here is known complete when it is recorded, so it is built once as a `ReadableSpan`
(the value exporters receive) and given to the processor. Sampling still goes through the
provider's sampler (ParentBased by default), and W3C trace context is read from and written to
headers. Export is batched; `gateway.telemetry.span_export` encodes OTLP batches cheaply.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import AttributeValue

from gateway.routing.decision import Decision

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)
_UNSET = Status(StatusCode.UNSET)
Attributes = dict[str, AttributeValue]
UNIQUE_ATTRIBUTES = frozenset(
    {"residency.decision_id", "residency.locate_ns", "residency.policy_ns", "residency.select_ns"}
)
"""Span attributes whose values rarely repeat between requests (see telemetry.span_export)."""


def parse_traceparent(value: str | None) -> SpanContext | None:
    """A remote parent from a W3C `traceparent` header, or None if absent or malformed."""
    if not value:
        return None
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or parts[0] == "ff":
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags & 0x01))


class RequestTrace:
    """One request's trace: the server span's identity and attributes, and its child spans."""

    __slots__ = (
        "_attributes",
        "_start",
        "_status",
        "_tracer",
        "context",
        "parent",
        "recording",
    )

    def __init__(
        self,
        tracer: DataPathTracer,
        trace_id: int,
        parent: SpanContext | None,
        sampled: bool,
        recording: bool,
    ) -> None:
        self._tracer = tracer
        self._start = time.time_ns()
        self._attributes: Attributes = {}
        self._status = _UNSET
        flags = _SAMPLED if sampled else _UNSAMPLED
        self.context = SpanContext(trace_id, random.getrandbits(64), False, flags)
        self.parent = parent
        self.recording = recording

    @property
    def trace_id_hex(self) -> str:
        """The trace id as 32 hex digits."""
        return f"{self.context.trace_id:032x}"

    def traceparent(self, span_id: int | None = None) -> str:
        """The W3C traceparent naming `span_id` (default: the server span) in this trace."""
        flags = "01" if self.context.trace_flags.sampled else "00"
        return f"00-{self.context.trace_id:032x}-{span_id or self.context.span_id:016x}-{flags}"

    def new_span_id(self) -> int:
        """A fresh span id for a child span."""
        return random.getrandbits(64)

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Set one attribute on the server span."""
        self._attributes[key] = value

    def unset_attribute(self, key: str) -> None:
        """Remove one attribute from the server span (if set)."""
        self._attributes.pop(key, None)

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        """Set several attributes on the server span."""
        self._attributes.update(attributes)

    def set_status(self, status: Status) -> None:
        """Set the server span's status."""
        self._status = status

    def child(
        self,
        name: str,
        span_id: int,
        kind: SpanKind,
        start_ns: int,
        end_ns: int,
        attributes: Attributes,
        status: Status = _UNSET,
    ) -> None:
        """Record a finished child span of the server span."""
        if self.recording:
            context = SpanContext(self.context.trace_id, span_id, False, self.context.trace_flags)
            self._tracer.emit(
                name, context, self.context, kind, start_ns, end_ns, attributes, status
            )

    def span(self, name: str, kind: SpanKind, attributes: Attributes) -> ChildSpan:
        """A child span to use as `with request.span(...) as span:`."""
        return ChildSpan(self, name, kind, attributes)

    def record_decision(self, decision: Decision) -> None:
        """Put the routing decision on the server span: what the three stages found and how
        long each took (timed by the pure core itself; decide() does no tracing)."""
        if not self.recording:
            return
        facts = decision.facts
        locate_ns, policy_ns, select_ns = decision.stage_ns
        self._attributes.update(
            {
                "residency.decision_id": decision.id,
                "residency.outcome": decision.outcome.value,
                "residency.tenant": facts.tenant_id or "",
                "residency.client_country": facts.client_country or "",
                "residency.jurisdictions": [j.country for j in decision.jurisdictions],
                "residency.data_class": facts.data_class.value,
                "residency.regimes": [r.regime_id for r in decision.regimes],
                "residency.policy_version": decision.policy_version,
                "residency.allowed_regions": list(decision.allowed_regions),
                "residency.chosen_region": decision.chosen or "",
                "residency.fallbacks": list(decision.fallbacks),
                "residency.locate_ns": locate_ns,
                "residency.policy_ns": policy_ns,
                "residency.select_ns": select_ns,
            }
        )

    def end(self) -> None:
        """Record the server span (call once, when the response is done)."""
        if self.recording:
            self._tracer.emit(
                "gateway.request",
                self.context,
                self.parent,
                SpanKind.SERVER,
                self._start,
                time.time_ns(),
                self._attributes,
                self._status,
            )


class ChildSpan:
    """A child span timed around a `with` block and recorded when the block ends."""

    __slots__ = ("_attributes", "_kind", "_name", "_start", "_status", "_trace", "span_id")

    def __init__(
        self, request: RequestTrace, name: str, kind: SpanKind, attributes: Attributes
    ) -> None:
        self._trace = request
        self._name = name
        self._kind = kind
        self._attributes = attributes
        self._status = _UNSET
        self._start = 0
        self.span_id = request.new_span_id()

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Set one attribute."""
        self._attributes[key] = value

    def set_status(self, status: Status) -> None:
        """Set the span's status."""
        self._status = status

    def __enter__(self) -> ChildSpan:
        self._start = time.time_ns()
        return self

    def __exit__(self, *_: object) -> None:
        self._trace.child(
            self._name,
            self.span_id,
            self._kind,
            self._start,
            time.time_ns(),
            self._attributes,
            self._status,
        )


class DataPathTracer:
    """Starts request traces and hands finished spans to the provider's span processor."""

    def __init__(self, provider: TracerProvider, processor: SpanProcessor | None) -> None:
        self._processor = processor
        self._sampler = provider.sampler
        self._resource = provider.resource
        self._scope = InstrumentationScope("residency_gateway")

    def start(self, traceparent: str | None, attributes: Attributes) -> RequestTrace:
        """Begin a request's trace, continuing the caller's trace context if it sent one."""
        parent = parse_traceparent(traceparent)
        context = trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent else None
        trace_id = parent.trace_id if parent else random.getrandbits(128)
        result = self._sampler.should_sample(
            context, trace_id, "gateway.request", SpanKind.SERVER, attributes
        )
        sampled = result.decision.is_sampled()  # type: ignore[no-untyped-call]
        recording = sampled and self._processor is not None
        request = RequestTrace(self, trace_id, parent, sampled, recording)
        request.set_attributes(attributes)
        return request

    def emit(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        start_ns: int,
        end_ns: int,
        attributes: Attributes,
        status: Status,
    ) -> None:
        """Give one finished span to the processor."""
        if self._processor is None:
            return
        span = ReadableSpan(
            name=name,
            context=context,
            parent=parent,
            resource=self._resource,
            attributes=attributes,
            kind=kind,
            instrumentation_scope=self._scope,
            status=status,
            start_time=start_ns,
            end_time=end_ns,
        )
        self._processor.on_end(span)
