"""OpenTelemetry traces of the data path, with an in-memory exporter on an in-process server."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import uvicorn
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.app import create_app
from gateway.bootstrap import prepare_database
from gateway.runtime import GatewayRuntime
from gateway.settings import Settings
from regions.simulator.fleet import SimulatorFleet, free_port
from tests.integration.conftest import IP_DE, openai_client, set_faults

pytestmark = pytest.mark.integration


@dataclass
class InProcessGateway:
    """Duck-types the parts of GatewayProcess that `openai_client` uses."""

    base_url: str
    runtime: GatewayRuntime
    exporter: InMemorySpanExporter

    def spans(self, trace_id: int) -> list[ReadableSpan]:
        """Finished spans of one trace, once its request span has ended (it ends just after
        the response is sent, so the client may be a moment ahead of it)."""
        deadline = time.monotonic() + 3.0
        while True:
            assert self.runtime.tracer_provider.force_flush(5000)
            spans = [
                s
                for s in self.exporter.get_finished_spans()
                if s.context is not None and s.context.trace_id == trace_id
            ]
            if any(s.name == "gateway.request" for s in spans) or time.monotonic() > deadline:
                return spans
            time.sleep(0.02)


@pytest.fixture(scope="module")
def traced(catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    directory = tmp_path_factory.mktemp("traced")
    settings = Settings(
        data_dir=directory,
        seed_catalog=catalog,
        seed_demo_catalog=False,
        trusted_proxies=["127.0.0.0/8", "::1/128"],
        health_interval=0.2,
        snapshot_refresh_interval=0.2,
        upstream_first_byte_timeout=2,
        otel_traces_exporter="none",
    )
    prepare_database(settings)
    exporter = InMemorySpanExporter()
    runtime = GatewayRuntime(settings, span_exporter=exporter)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(runtime),
            host="127.0.0.1",
            port=port,
            loop="asyncio",
            lifespan="on",
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive(), "uvicorn exited during start-up"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield InProcessGateway(f"http://127.0.0.1:{port}", runtime, exporter)
    finally:
        server.should_exit = True
        thread.join(15)


def _client_traceparent() -> tuple[str, int, int]:
    trace_id = int.from_bytes(os.urandom(16), "big") | 1
    span_id = int.from_bytes(os.urandom(8), "big") | 1
    return f"00-{trace_id:032x}-{span_id:016x}-01", trace_id, span_id


def _one(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def _no_marker(spans: Sequence[ReadableSpan], marker: str) -> None:
    for span in spans:
        texts = [span.name, *map(str, (span.attributes or {}).values())]
        for event in span.events:
            texts.extend(map(str, (event.attributes or {}).values()))
        assert not [t for t in texts if marker in t], span.name


def test_request_is_one_trace_continuing_the_clients(traced: InProcessGateway) -> None:
    marker = "TRACE-MARKER-7f3a9c"
    traceparent, trace_id, client_span_id = _client_traceparent()
    with openai_client(traced, IP_DE, headers={"traceparent": traceparent}) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"say {marker}"}]
        )
    assert raw.headers["x-residency-region"] == "eu-frankfurt"
    spans = traced.spans(trace_id)
    names = sorted(s.name for s in spans)
    assert names == ["gateway.request", "upstream.attempt"]  # few spans: one per hop
    request = _one(spans, "gateway.request")
    assert request.kind is SpanKind.SERVER
    assert request.parent is not None
    assert request.parent.span_id == client_span_id
    assert request.parent.is_remote
    for span in spans:
        assert span is request or (span.parent and span.parent.span_id == request.context.span_id)
    attributes = request.attributes or {}
    assert tuple(attributes["residency.jurisdictions"]) == ("DE",)
    assert attributes["residency.data_class"] == "personal"
    assert attributes["residency.chosen_region"] == "eu-frankfurt"
    assert attributes["residency.served_region"] == "eu-frankfurt"
    assert attributes["residency.outcome"] == "routed"
    assert attributes["residency.policy_version"] == traced.runtime.snapshot.policy.version
    assert attributes["residency.decision_id"] == raw.headers["x-residency-decision"]
    assert attributes["http.response.status_code"] == 200

    attempt = _one(spans, "upstream.attempt")
    assert attempt.kind is SpanKind.CLIENT
    assert (attempt.attributes or {})["residency.region"] == "eu-frankfurt"
    assert (attempt.attributes or {})["upstream.attempt"] == 1
    assert tuple(attributes["residency.allowed_regions"]) == (
        "eu-frankfurt",
        "uk-london",
        "us-oregon",
    )
    assert tuple(attributes["residency.regimes"]) == ("gdpr",)
    assert attributes["residency.client_country"] == "DE"
    for stage in ("locate", "policy", "select"):  # each routing stage's time, from decide()
        assert isinstance(attributes[f"residency.{stage}_ns"], int)
        assert 0 < attributes[f"residency.{stage}_ns"] < 50_000_000
    # The gateway answers with its own span; the region saw the attempt span as parent.
    assert raw.headers["traceparent"] == (f"00-{trace_id:032x}-{request.context.span_id:016x}-01")
    _, upstream_trace, upstream_parent, _ = raw.headers["x-received-traceparent"].split("-")
    assert int(upstream_trace, 16) == trace_id
    assert int(upstream_parent, 16) == attempt.context.span_id
    _no_marker(spans, marker)


def test_failover_has_one_attempt_span_per_region(
    traced: InProcessGateway, fleet: SimulatorFleet
) -> None:
    set_faults(fleet, "eu-frankfurt", error_rate=1.0, error_status=503)
    traceparent, trace_id, _ = _client_traceparent()
    with openai_client(traced, IP_DE, headers={"traceparent": traceparent}) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert raw.headers["x-residency-region"] == "uk-london"
    spans = traced.spans(trace_id)
    attempts = sorted(
        (s for s in spans if s.name == "upstream.attempt"),
        key=lambda s: (s.attributes or {})["upstream.attempt"],
    )
    assert [
        ((s.attributes or {})["upstream.attempt"], (s.attributes or {})["residency.region"])
        for s in attempts
    ] == [(1, "eu-frankfurt"), (2, "uk-london")]
    assert (attempts[0].attributes or {})["upstream.outcome"] == "http_5xx"
    assert (attempts[0].attributes or {})["http.response.status_code"] == 503
    assert (attempts[1].attributes or {})["upstream.outcome"] == "response"
    assert all(s.kind is SpanKind.CLIENT for s in attempts)
    _, _, upstream_parent, _ = raw.headers["x-received-traceparent"].split("-")
    assert int(upstream_parent, 16) == attempts[1].context.span_id


def test_refusal_is_traced_without_upstream_attempts(traced: InProcessGateway) -> None:
    traceparent, trace_id, _ = _client_traceparent()
    headers = {"traceparent": traceparent, "X-Data-Subject-Country": "CN"}
    with (
        openai_client(traced, IP_DE, headers=headers) as client,
        pytest.raises(openai.APIStatusError) as excinfo,
    ):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert excinfo.value.status_code == 451
    spans = traced.spans(trace_id)
    assert "upstream.attempt" not in {s.name for s in spans}
    request = _one(spans, "gateway.request")
    assert (request.attributes or {})["residency.outcome"] == "refused"
    assert (request.attributes or {})["http.response.status_code"] == 451
    assert tuple((request.attributes or {})["residency.jurisdictions"]) == ("DE", "CN")
