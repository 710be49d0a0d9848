"""OpenTelemetry set-up: a tracer provider whose exporter the standard OTEL_* variables choose."""

from __future__ import annotations

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from gateway.settings import Settings

TRACER_NAME = "residency_gateway"


def _exporter(kind: str) -> SpanExporter | None:
    if kind == "console":
        return ConsoleSpanExporter()
    if kind == "otlp":
        # The OTLP exporter reads OTEL_EXPORTER_OTLP_* (endpoint, headers, protocol) itself.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    return None


def build_tracer_provider(
    settings: Settings, exporter: SpanExporter | None = None
) -> TracerProvider:
    """A provider with the SDK's default sampler and a batching exporter.

    `exporter` overrides OTEL_TRACES_EXPORTER (tests pass an in-memory exporter).
    """
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.otel_service_name}))
    chosen = exporter or _exporter(settings.otel_traces_exporter)
    if chosen is not None:
        provider.add_span_processor(BatchSpanProcessor(chosen, schedule_delay_millis=500))
    return provider
