"""Envoy's OpenTelemetry spans, exported to a real OTLP/gRPC receiver, with residency tags."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from regions.simulator.fleet import SimulatorFleet
from tests.integration.conftest import DEMO_KEY, GDPR_ALLOWED, IP_DE, REGIONS, set_faults
from tests.integration.envoy_decision_support import (
    DecidingEnvoy,
    catalog_policy,
    deciding_envoy,
    decision_options,
)
from tests.integration.otlp_receiver import OtlpReceiver, otlp_receiver, tags

pytestmark = pytest.mark.integration
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
SERVICE = "rg-test-envoy"


@pytest.fixture(scope="module")
def traced(
    fleet: SimulatorFleet, catalog: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[DecidingEnvoy, OtlpReceiver]]:
    directory = tmp_path_factory.mktemp("envoy-tracing")
    with otlp_receiver() as (receiver, endpoint):
        options = dataclasses.replace(
            decision_options(), otlp_endpoint=endpoint, otlp_service_name=SERVICE
        )
        policy = catalog_policy(catalog)
        with deciding_envoy(policy, directory, "tracing-envoy", tuple(REGIONS), options) as plane:
            yield plane, receiver


def _in_trace(spans: list[tuple[str, Span]], trace_id: bytes) -> list[tuple[str, Span]]:
    return [(service, span) for service, span in spans if span.trace_id == trace_id]


def test_a_request_exports_a_server_span_and_an_upstream_span_with_the_decision(
    traced: tuple[DecidingEnvoy, OtlpReceiver],
) -> None:
    plane, receiver = traced
    headers = {"Authorization": f"Bearer {DEMO_KEY}", "X-Forwarded-For": IP_DE}
    response = plane.post(CHAT, headers)
    assert response.status_code == 200, response.text
    region = response.headers["x-residency-region"]
    decision = response.headers["x-residency-decision"]
    # What the simulated region received (it echoes the header back).
    _, trace_hex, parent_hex, _ = response.headers["x-received-traceparent"].split("-")
    trace_id = bytes.fromhex(trace_hex)

    spans = receiver.wait_for(
        "server and upstream span", lambda s: len(_in_trace(s, trace_id)) >= 2
    )
    traced_spans = _in_trace(spans, trace_id)
    assert {service for service, _ in traced_spans} == {SERVICE}
    (server,) = [span for _, span in traced_spans if span.kind == Span.SPAN_KIND_SERVER]
    (upstream,) = [span for _, span in traced_spans if span.kind == Span.SPAN_KIND_CLIENT]
    # The region's parent is the attempt's span, itself a child of the request's.
    assert upstream.span_id.hex() == parent_hex
    assert upstream.parent_span_id == server.span_id
    # The client is told the trace and Envoy's span for its request.
    assert response.headers["traceparent"] == f"00-{trace_hex}-{server.span_id.hex()}-01"
    for span in (server, upstream):
        attributes = tags(span)
        assert attributes["residency.decision_id"] == decision
        assert attributes["residency.region"] == region
        assert set(attributes["residency.allowed"].split(",")) == GDPR_ALLOWED
        assert attributes["residency.policy_version"] == "1"


def test_a_client_traceparent_is_continued_to_the_region(
    traced: tuple[DecidingEnvoy, OtlpReceiver],
) -> None:
    plane, receiver = traced
    trace_hex, parent_hex = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    headers = {
        "Authorization": f"Bearer {DEMO_KEY}",
        "X-Forwarded-For": IP_DE,
        "traceparent": f"00-{trace_hex}-{parent_hex}-01",
    }
    response = plane.post(CHAT, headers)
    assert response.status_code == 200, response.text
    assert response.headers["x-received-traceparent"].split("-")[1] == trace_hex
    spans = receiver.wait_for(
        "the client's trace", lambda s: bool(_in_trace(s, bytes.fromhex(trace_hex)))
    )
    servers = [
        span
        for _, span in _in_trace(spans, bytes.fromhex(trace_hex))
        if span.kind == Span.SPAN_KIND_SERVER
    ]
    assert [span.parent_span_id.hex() for span in servers] == [parent_hex]


def test_envoy_s_own_refusal_returns_the_traceparent_of_its_exported_span(
    traced: tuple[DecidingEnvoy, OtlpReceiver],
) -> None:
    plane, receiver = traced
    response = plane.post(CHAT, {"X-Forwarded-For": IP_DE})
    assert response.status_code == 401, response.text
    _, trace_hex, span_hex, _ = response.headers["traceparent"].split("-")
    spans = receiver.wait_for(
        "the refused request's span", lambda s: bool(_in_trace(s, bytes.fromhex(trace_hex)))
    )
    (span,) = [span for _, span in _in_trace(spans, bytes.fromhex(trace_hex))]
    assert (span.kind, span.span_id.hex()) == (Span.SPAN_KIND_SERVER, span_hex)


def test_a_failover_exports_one_upstream_span_per_attempt(
    traced: tuple[DecidingEnvoy, OtlpReceiver], fleet: SimulatorFleet
) -> None:
    plane, receiver = traced
    set_faults(fleet, "eu-frankfurt", error_rate=1.0, error_status=500)
    headers = {"Authorization": f"Bearer {DEMO_KEY}", "X-Forwarded-For": IP_DE}
    response = plane.post(CHAT, headers)
    assert response.status_code == 200, response.text
    assert response.headers["x-residency-region"] == "uk-london"
    trace_id = bytes.fromhex(response.headers["traceparent"].split("-")[1])
    spans = receiver.wait_for(
        "two attempts",
        lambda s: sum(sp.kind == Span.SPAN_KIND_CLIENT for _, sp in _in_trace(s, trace_id)) >= 2,
    )
    attempts = [
        span for _, span in _in_trace(spans, trace_id) if span.kind == Span.SPAN_KIND_CLIENT
    ]
    # Both attempts carry the decision; each names the region it was sent to.
    assert [tags(a)["residency.upstream_region"] for a in attempts] == ["eu-frankfurt", "uk-london"]
    assert [tags(a)["http.status_code"] for a in attempts] == ["500", "200"]
    assert {tags(a)["residency.decision_id"] for a in attempts} == {
        response.headers["x-residency-decision"]
    }
