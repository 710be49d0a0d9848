"""/metrics: Prometheus exposition of requests, latencies, regions, snapshot age, spool depth."""

from __future__ import annotations

import re

import httpx
import openai
import pytest

from tests.integration.conftest import CHAT, IP_CN, IP_DE, GatewayProcess, openai_client

pytestmark = pytest.mark.integration


def scrape(gateway: GatewayProcess) -> str:
    response = httpx.get(f"{gateway.base_url}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the one sample of `name` whose labels include `labels` (0 if absent)."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_metrics_count_requests_by_region_tenant_and_outcome(gateway: GatewayProcess) -> None:
    before = scrape(gateway)
    routed_before = sample(
        before, "gateway_requests_total", region="eu-frankfurt", tenant="demo", outcome="routed"
    )
    refused_before = sample(before, "gateway_requests_total", outcome="refused", tenant="demo")
    decisions_before = sample(before, "gateway_decision_duration_seconds_count")

    german = openai_client(gateway, IP_DE)
    for _ in range(3):
        german.chat.completions.create(model="gpt-4o-mini", messages=CHAT)  # type: ignore[arg-type]
    with pytest.raises(openai.APIStatusError):
        openai_client(gateway, IP_CN).chat.completions.create(
            model="gpt-4o-mini",
            messages=CHAT,  # type: ignore[arg-type]
        )

    after = scrape(gateway)
    routed = sample(
        after, "gateway_requests_total", region="eu-frankfurt", tenant="demo", outcome="routed"
    )
    assert routed - routed_before == 3
    assert sample(after, "gateway_requests_total", outcome="refused", tenant="demo") == (
        refused_before + 1
    )
    assert sample(after, "gateway_decision_duration_seconds_count") - decisions_before == 4
    assert sample(after, "gateway_upstream_duration_seconds_count", region="eu-frankfurt") >= 3
    assert (
        sample(after, "gateway_upstream_time_to_first_token_seconds_count", region="eu-frankfurt")
        >= 3
    )


def test_metrics_report_regions_snapshot_age_spool_and_database(gateway: GatewayProcess) -> None:
    text = scrape(gateway)
    active = sample(text, "gateway_regions", status="active")
    assert active == 5
    assert 0 <= sample(text, "gateway_snapshot_age_seconds") < 30
    assert re.search(r"^gateway_audit_spool_depth(_\w+)?(\{[^}]*\})? \d", text, re.M)
    assert sample(text, "gateway_database_up") == 1
