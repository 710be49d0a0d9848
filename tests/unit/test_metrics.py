"""GatewayMetrics: what the data path records is what /metrics renders."""

from __future__ import annotations

import re

from gateway.telemetry.metrics import GatewayMetrics, RuntimeGauges


def _metrics() -> GatewayMetrics:
    gauges = RuntimeGauges(
        regions_by_status=lambda: {("active", True): 2},
        snapshot_age_seconds=lambda: 1.5,
        audit_spool_depth=lambda: 3,
        database_up=lambda: True,
    )
    return GatewayMetrics("test", gauges)


def _value(text: str, line_prefix: str) -> float:
    match = re.search(rf"^{re.escape(line_prefix)} (\S+)$", text, re.M)
    assert match, f"{line_prefix!r} not in:\n{text}"
    return float(match.group(1))


def test_upstream_observations_land_in_their_buckets_per_region() -> None:
    metrics = _metrics()
    metrics.observe_upstream("eu-frankfurt", duration=0.004, first_chunk=0.0012)
    metrics.observe_upstream("eu-frankfurt", duration=0.2, first_chunk=0.03)
    metrics.observe_upstream("in-mumbai", duration=7.0, first_chunk=6.0)
    text = metrics.render().decode()

    name = "gateway_upstream_duration_seconds"
    assert _value(text, f'{name}_bucket{{le="0.0025",region="eu-frankfurt"}}') == 0
    assert _value(text, f'{name}_bucket{{le="0.005",region="eu-frankfurt"}}') == 1
    assert _value(text, f'{name}_bucket{{le="0.25",region="eu-frankfurt"}}') == 2
    assert _value(text, f'{name}_count{{region="eu-frankfurt"}}') == 2
    assert abs(_value(text, f'{name}_sum{{region="eu-frankfurt"}}') - 0.204) < 1e-9
    assert _value(text, f'{name}_bucket{{le="5.0",region="in-mumbai"}}') == 0
    assert _value(text, f'{name}_bucket{{le="10.0",region="in-mumbai"}}') == 1

    ttfb = "gateway_upstream_time_to_first_token_seconds"
    assert _value(text, f'{ttfb}_bucket{{le="0.0025",region="eu-frankfurt"}}') == 1
    assert _value(text, f'{ttfb}_count{{region="in-mumbai"}}') == 1


def test_decision_durations_and_request_counts_render() -> None:
    metrics = _metrics()
    for seconds in (8e-6, 1.5e-5, 0.002):
        metrics.observe_decision(seconds)
    metrics.count_request("eu-frankfurt", "demo", "routed")
    metrics.count_request("eu-frankfurt", "demo", "routed")
    text = metrics.render().decode()

    name = "gateway_decision_duration_seconds"
    assert _value(text, f'{name}_bucket{{le="1e-05"}}') == 1
    assert _value(text, f'{name}_bucket{{le="2e-05"}}') == 2
    assert _value(text, f'{name}_bucket{{le="+Inf"}}') == 3
    assert _value(text, f"{name}_count") == 3
    routed = re.search(r"^gateway_requests_total\{(.*)\} (\S+)$", text, re.M)
    assert routed and 'region="eu-frankfurt"' in routed.group(1)
    assert float(routed.group(2)) == 2
    assert re.search(r"^gateway_audit_spool_depth(\{.*\})? 3\.0$", text, re.M)
