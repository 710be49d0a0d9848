"""The data path's OTLP span encoder: equal to the SDK's encoding, and sent like the SDK sends."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from gateway.telemetry import span_export
from gateway.telemetry.span_export import DataPathSpanExporter, SpanEncoder, encode_value

RESOURCE = Resource.create({"service.name": "residency-gateway", "deployment": "test"})
OTHER_RESOURCE = Resource.create({"service.name": "other"})
SCOPE = InstrumentationScope("residency_gateway")
OTHER_SCOPE = InstrumentationScope("other", "1.2", attributes={"scope.flag": True})


def _span(
    number: int,
    *,
    attributes: dict[str, Any] | None = None,
    parent: SpanContext | None = None,
    kind: SpanKind = SpanKind.SERVER,
    status: Status | None = None,
    resource: Resource = RESOURCE,
    scope: InstrumentationScope | None = SCOPE,
    events: tuple[Event, ...] = (),
    trace_state: TraceState | None = None,
) -> ReadableSpan:
    context = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C + number,
        0xB7AD6B7169203331 + number,
        False,
        TraceFlags(TraceFlags.SAMPLED),
        trace_state=trace_state,
    )
    return ReadableSpan(
        name=f"span-{number}",
        context=context,
        parent=parent,
        resource=resource,
        attributes=attributes or {},
        kind=kind,
        instrumentation_scope=scope,
        status=status or Status(StatusCode.UNSET),
        start_time=1_700_000_000_000_000_000 + number,
        end_time=1_700_000_000_000_500_000 + number,
        events=events,
    )


VARIED_ATTRIBUTES: dict[str, Any] = {
    "http.request.method": "POST",
    "http.response.status_code": 200,
    "residency.jurisdictions": ["DE", "FR"],
    "residency.policy_version": 7,
    "residency.allowed": True,
    "residency.ratio": 0.25,
    "residency.empty": "",
    "residency.fallbacks": [],
    "residency.decision_id": "d-1",
    "residency.locate_ns": 1234,
    "residency.flags": (True, False),
    "residency.numbers": [1, 2, 3],
}


def _batch() -> list[ReadableSpan]:
    remote = SpanContext(0x1, 0x2, True, TraceFlags(TraceFlags.SAMPLED))
    local = SpanContext(0x3, 0x4, False, TraceFlags(TraceFlags.SAMPLED))
    return [
        _span(1, attributes=VARIED_ATTRIBUTES, parent=remote),
        _span(2, attributes={**VARIED_ATTRIBUTES, "residency.decision_id": "d-2"}, parent=None),
        _span(3, kind=SpanKind.CLIENT, parent=local, status=Status(StatusCode.ERROR, "reset")),
        _span(4, kind=SpanKind.INTERNAL, status=Status(StatusCode.OK), resource=OTHER_RESOURCE),
        _span(5, scope=OTHER_SCOPE, attributes={"residency.outcome": "refused"}),
        _span(6, scope=None, attributes={"http.response.status_code": 451}),
        _span(7, attributes=BoundedAttributes(2, {"a": 1, "b": 2, "c": 3})),  # one dropped
    ]


def test_encoding_equals_the_sdk_encoding() -> None:
    batch = _batch()
    encoder = SpanEncoder({"residency.decision_id", "residency.locate_ns"})
    assert ExportTraceServiceRequest.FromString(encoder.request(batch)) == encode_spans(batch)
    # and again, now from the caches of repeated pairs and fields
    assert ExportTraceServiceRequest.FromString(encoder.request(batch)) == encode_spans(batch)


@pytest.mark.parametrize(
    "value",
    ["", "d-1", "ü" * 200, 0, 1, 127, 128, 2**62, -1, -(2**63), 2**63 - 1, True, 1.5, None, [1]],
)
def test_unique_values_framed_by_hand_equal_protobuf_encoding(value: Any) -> None:
    encoder = SpanEncoder({"residency.decision_id"})
    encoded = encoder.attributes({"residency.decision_id": value})
    expected = Span(attributes=[KeyValue(key="residency.decision_id", value=encode_value(value))])
    assert encoded == [expected.SerializeToString()]


def _decoded(encoded: list[bytes]) -> list[KeyValue]:
    return list(Span.FromString(b"".join(encoded)).attributes)


def test_repeated_pairs_are_cached_and_unique_keys_are_not() -> None:
    encoder = SpanEncoder({"residency.decision_id"})
    first = encoder.attributes({"region": "eu-frankfurt", "residency.decision_id": "a"})
    second = encoder.attributes({"region": "eu-frankfurt", "residency.decision_id": "b"})
    assert first[0] is second[0]  # the same encoded pair, reused
    assert _decoded(first)[1].value.string_value == "a"
    assert _decoded(second)[1].value.string_value == "b"
    assert len(encoder._pairs) == 1
    # equal-looking values of other types stay apart (True == 1 == 1.0 in Python)
    values = [_decoded(encoder.attributes({"v": value}))[0].value for value in (1, True, 1.0, "1")]
    assert [v.WhichOneof("value") for v in values] == [
        "int_value",
        "bool_value",
        "double_value",
        "string_value",
    ]


def test_cache_is_bounded() -> None:
    encoder = SpanEncoder()
    for number in range(5000):
        encoder.attributes({"tenant": f"t-{number}"})
    assert len(encoder._pairs) <= 4096
    for number in range(5000):
        encoder.span(_span(number))  # a name of its own each time
    assert len(encoder._fields) <= 4096


def test_spans_with_events_or_trace_state_are_left_to_the_sdk() -> None:
    assert SpanEncoder.covers(_span(1))
    assert not SpanEncoder.covers(_span(2, events=(Event("retry", {"n": 1}),)))
    assert not SpanEncoder.covers(_span(3, trace_state=TraceState([("vendor", "x")])))


def test_unsupported_value_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="object cannot be exported"):
        encode_value(object())


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture()
def collector() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    _Collector.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", _Collector.received
    finally:
        server.shutdown()
        server.server_close()


def test_exporter_posts_otlp_protobuf_a_collector_decodes(
    collector: tuple[str, list[tuple[str, str, bytes]]],
) -> None:
    endpoint, received = collector
    exporter = DataPathSpanExporter({"residency.decision_id"}, endpoint=endpoint)
    with_event = _span(7, events=(Event("retry", {"n": 1}),))
    try:
        assert exporter.export(_batch()) is SpanExportResult.SUCCESS
        assert exporter.export([with_event]) is SpanExportResult.SUCCESS  # the SDK's path
    finally:
        exporter.shutdown()
    assert [(path, kind) for path, kind, _ in received] == [
        ("/v1/traces", "application/x-protobuf"),
        ("/v1/traces", "application/x-protobuf"),
    ]
    assert ExportTraceServiceRequest.FromString(received[0][2]) == encode_spans(_batch())
    assert ExportTraceServiceRequest.FromString(received[1][2]) == encode_spans([with_event])


def test_exporter_reports_a_failing_collector() -> None:
    exporter = DataPathSpanExporter(endpoint="http://127.0.0.1:9/v1/traces", timeout=1)
    try:
        assert exporter.export(_batch()) is SpanExportResult.FAILURE
    finally:
        exporter.shutdown()


def test_encoding_a_large_batch_offers_the_gil_every_few_spans(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The encoder offers the GIL (`time.sleep(0)`) every YIELD_EVERY spans, so a waiting event
    loop runs between them instead of after the interpreter's switch interval. Counted, not
    timed: how long the loop waits is the benchmark's business."""
    batch = [_span(n, attributes={"residency.decision_id": f"d-{n}"}) for n in range(6000)]
    offers: list[float] = []
    monkeypatch.setattr("gateway.telemetry.span_export.time.sleep", offers.append)

    request = SpanEncoder({"residency.decision_id"}).request(batch)

    assert offers == [0] * (len(batch) // span_export.YIELD_EVERY)
    assert span_export.YIELD_EVERY <= 32  # a few spans' work between offers, not a batch
    assert len(ExportTraceServiceRequest.FromString(request).resource_spans) == 1
