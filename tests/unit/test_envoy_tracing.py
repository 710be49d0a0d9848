"""The listener's OpenTelemetry tracing and the collector cluster in the translated resources."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from gateway.envoy.options import options_from_settings
from gateway.envoy.tracing import (
    COLLECTOR_CLUSTER,
    DECISION_NAMESPACE,
    RECORD_NAMESPACE,
    SPAN_TAGS,
    collector_address,
)
from gateway.envoy.translate import EnvoyOptions, plain, translate
from gateway.settings import Settings
from tests.unit.test_envoy_translate import GOLDEN_DATE, GOLDEN_GEOIP, _snapshot

DECISION_LUA = Path(__file__).parents[2] / "gateway" / "envoy" / "decision.lua"
TRACED = EnvoyOptions(
    decision_on=GOLDEN_DATE,
    geoip_database=GOLDEN_GEOIP,
    otlp_endpoint="http://collector.example:4317",
    otlp_service_name="rg-envoy",
)


def _manager(options: EnvoyOptions) -> dict[str, Any]:
    listener = plain(translate(_snapshot(), options).listeners[0])
    (manager,) = [
        f["typed_config"]
        for f in listener["filter_chains"][0]["filters"]
        if f["name"] == "envoy.filters.network.http_connection_manager"
    ]
    return dict(manager)


def test_tracing_is_off_without_an_otlp_endpoint() -> None:
    resources = translate(_snapshot(), EnvoyOptions(decision_on=GOLDEN_DATE))
    manager = _manager(EnvoyOptions(decision_on=GOLDEN_DATE))
    assert "tracing" not in manager
    assert "residency.trace_response" not in {f["name"] for f in manager["http_filters"]}
    assert COLLECTOR_CLUSTER not in {c.name for c in resources.clusters}


def test_the_listener_exports_request_and_attempt_spans_to_the_collector_cluster() -> None:
    tracing = _manager(TRACED)["tracing"]
    assert tracing["spawn_upstream_span"] is True
    provider = tracing["provider"]
    assert provider["name"] == "envoy.tracers.opentelemetry"
    tracer = provider["typed_config"]
    assert tracer["service_name"] == "rg-envoy"
    assert tracer["grpc_service"]["envoy_grpc"]["cluster_name"] == COLLECTOR_CLUSTER
    (cluster,) = [
        plain(c) for c in translate(_snapshot(), TRACED).clusters if c.name == COLLECTOR_CLUSTER
    ]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {
        "address": "collector.example",
        "port_value": 4317,
    }
    options = cluster["typed_extension_protocol_options"]
    assert "http2_protocol_options" in next(iter(options.values()))["explicit_http_config"]


def test_span_tags_read_the_request_metadata_the_decision_writes() -> None:
    tags = _manager(TRACED)["tracing"]["custom_tags"]
    read = {
        t["tag"]: (t["metadata"]["metadata_key"]["key"], t["metadata"]["metadata_key"]["path"])
        for t in tags
        if "request" in t["metadata"]["kind"]
    }
    assert {"residency.decision_id", "residency.region", "residency.allowed"} <= set(read)
    assert "residency.policy_version" in read
    lua = DECISION_LUA.read_text("utf-8")
    written = {
        (DECISION_NAMESPACE, key) for key in re.findall(r'metadata:set\(NAMESPACE, "(\w+)"', lua)
    } | {(RECORD_NAMESPACE, key) for key in re.findall(r'note\(h, "(\w+)"', lua)}
    for namespace, path in read.values():
        assert (namespace, path[0]["key"]) in written
    assert len(read) == len(SPAN_TAGS)
    # The attempt's region: the endpoint's metadata (translate._region_metadata), not the request's.
    (attempt,) = [t for t in tags if "host" in t["metadata"]["kind"]]
    assert attempt["tag"] == "residency.upstream_region"
    assert attempt["metadata"]["metadata_key"] == {"key": "residency", "path": [{"key": "region"}]}


@pytest.mark.parametrize(
    ("endpoint", "address"),
    [
        ("http://127.0.0.1:4317", ("127.0.0.1", 4317)),
        ("collector:5555", ("collector", 5555)),
        ("http://collector", ("collector", 4317)),
    ],
)
def test_collector_address(endpoint: str, address: tuple[str, int]) -> None:
    assert collector_address(endpoint) == address


@pytest.mark.parametrize("endpoint", ["https://collector:4317", "http://:4317"])
def test_collector_address_refuses_what_envoy_would_not_reach(endpoint: str) -> None:
    with pytest.raises(ValueError, match="OTLP endpoint"):
        collector_address(endpoint)


def test_settings_choose_the_collector_and_name_envoy_after_the_gateway() -> None:
    settings = Settings(envoy_otlp_endpoint="http://127.0.0.1:4317", otel_service_name="rg")
    options = options_from_settings(settings, on=GOLDEN_DATE)
    assert options.otlp_endpoint == "http://127.0.0.1:4317"
    assert options.otlp_service_name == "rg-envoy"


def test_the_first_filter_returns_the_traceparent_so_local_replies_carry_it_too() -> None:
    first = _manager(TRACED)["http_filters"][0]
    assert first["name"] == "residency.trace_response"
    (mutation,) = first["typed_config"]["mutations"]["response_mutations"]
    assert mutation["append"]["header"] == {
        "key": "traceparent",
        "value": "00-%TRACE_ID%-%SPAN_ID%-01",
    }
