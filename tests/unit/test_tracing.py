"""Data-path tracing: W3C trace context in and out, sampling, spans as finished values."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, Status, StatusCode

from gateway.telemetry.tracing import DataPathTracer, parse_traceparent

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def tracer(
    sampler: object = None,
) -> tuple[DataPathTracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler) if sampler else TracerProvider()  # type: ignore[arg-type]
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    return DataPathTracer(provider, processor), exporter


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        f"00-{CLIENT_TRACE}-{CLIENT_SPAN}",
        f"00-{'0' * 32}-{CLIENT_SPAN}-01",
        f"00-{CLIENT_TRACE}-{'0' * 16}-01",
        f"00-{CLIENT_TRACE[:-1]}x-{CLIENT_SPAN}-01",
        f"ff-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
    ],
)
def test_malformed_traceparent_starts_a_new_trace(value: str | None) -> None:
    assert parse_traceparent(value) is None


def test_request_continues_the_callers_trace_and_records_children() -> None:
    data_path, exporter = tracer()
    request = data_path.start(f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", {"url.path": "/v1/x"})
    with request.span("upstream.attempt", SpanKind.CLIENT, {"upstream.attempt": 1}) as attempt:
        upstream_header = request.traceparent(attempt.span_id)
        attempt.set_status(Status(StatusCode.ERROR, "timeout"))
    request.set_attribute("residency.outcome", "routed")
    request.end()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    server, child = spans["gateway.request"], spans["upstream.attempt"]
    assert f"{server.context.trace_id:032x}" == CLIENT_TRACE
    assert server.parent is not None and f"{server.parent.span_id:016x}" == CLIENT_SPAN
    assert server.kind is SpanKind.SERVER and child.kind is SpanKind.CLIENT
    assert child.parent is not None and child.parent.span_id == server.context.span_id
    assert child.status.status_code is StatusCode.ERROR
    assert upstream_header == f"00-{CLIENT_TRACE}-{child.context.span_id:016x}-01"
    assert server.attributes is not None and server.attributes["residency.outcome"] == "routed"
    assert server.start_time is not None and server.end_time is not None
    assert server.start_time <= child.start_time <= child.end_time <= server.end_time  # type: ignore[operator]


def test_unsampled_caller_is_propagated_unsampled_and_not_recorded() -> None:
    data_path, exporter = tracer()
    request = data_path.start(f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00", {})
    assert request.traceparent().endswith("-00") and not request.recording
    request.end()
    assert exporter.get_finished_spans() == ()


def test_provider_sampler_is_respected() -> None:
    data_path, exporter = tracer(ALWAYS_OFF)
    request = data_path.start(None, {})
    request.end()
    assert request.traceparent().endswith("-00")
    assert exporter.get_finished_spans() == ()


def test_without_a_processor_ids_still_propagate() -> None:
    request = DataPathTracer(TracerProvider(), None).start(None, {})
    version, trace_id, span_id, flags = request.traceparent().split("-")
    assert (version, flags) == ("00", "01")
    assert int(trace_id, 16) and int(span_id, 16)
    request.end()
