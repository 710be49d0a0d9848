"""A real OTLP/gRPC trace receiver: keeps every span exported to it, for tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from regions.simulator.fleet import free_port


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Collects the spans (and their resources' service names) of every export request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[tuple[str, Span]] = []

    def Export(
        self, request: ExportTraceServiceRequest, context: Any
    ) -> ExportTraceServiceResponse:
        with self._lock:
            for resource_spans in request.resource_spans:
                service = next(
                    (
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    ),
                    "",
                )
                for scope_spans in resource_spans.scope_spans:
                    self._spans.extend((service, span) for span in scope_spans.spans)
        return ExportTraceServiceResponse()

    def spans(self) -> list[tuple[str, Span]]:
        """(service name, span) of every span received so far."""
        with self._lock:
            return list(self._spans)

    def wait_for(
        self, what: str, probe: Callable[[list[tuple[str, Span]]], bool], timeout: float = 30.0
    ) -> list[tuple[str, Span]]:
        """The spans received once `probe` accepts them (Envoy exports in batches)."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if probe(spans):
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout} s; got {spans}")
            time.sleep(0.1)


def tags(span: Span) -> dict[str, str]:
    """A span's string attributes."""
    return {a.key: a.value.string_value for a in span.attributes}


@contextmanager
def otlp_receiver() -> Iterator[tuple[OtlpReceiver, str]]:
    """A running receiver and its endpoint (`http://127.0.0.1:<port>`)."""
    receiver = OtlpReceiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        yield receiver, f"http://127.0.0.1:{port}"
    finally:
        server.stop(grace=None)
