"""OpenTelemetry set-up: a tracer provider whose exporter the standard OTEL_* variables choose."""

from __future__ import annotations

import os

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from gateway.settings import Settings

TRACER_NAME = "residency_gateway"
SPAN_QUEUE_SIZE = 16384
"""Finished spans the batch processor holds for export before it drops new ones (the SDK's
default, 2048, filled during export bursts at a one-core peak of ~4,000 req/s with two spans
each and dropped 2% of them); OTEL_BSP_MAX_QUEUE_SIZE overrides it."""


def _exporter(kind: str) -> SpanExporter | None:
    if kind == "console":
        return ConsoleSpanExporter()
    if kind == "otlp":
        # The SDK's OTLP/HTTP exporter reads OTEL_EXPORTER_OTLP_* (endpoint, headers) itself.
        from gateway.telemetry.span_export import DataPathSpanExporter
        from gateway.telemetry.tracing import UNIQUE_ATTRIBUTES

        return DataPathSpanExporter(UNIQUE_ATTRIBUTES)
    return None


def build_tracer_provider(
    settings: Settings, exporter: SpanExporter | None = None
) -> tuple[TracerProvider, SpanProcessor | None]:
    """A provider with the SDK's default sampler and a batching exporter, and that processor.

    `exporter` overrides OTEL_TRACES_EXPORTER (tests pass an in-memory exporter). Without an
    exporter there is no processor: spans have ids (for propagation) but are not built.
    """
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.otel_service_name}))
    chosen = exporter or _exporter(settings.otel_traces_exporter)
    if chosen is None:
        return provider, None
    queue_size = None if "OTEL_BSP_MAX_QUEUE_SIZE" in os.environ else SPAN_QUEUE_SIZE
    processor = BatchSpanProcessor(chosen, schedule_delay_millis=500, max_queue_size=queue_size)
    provider.add_span_processor(processor)
    return provider, processor
