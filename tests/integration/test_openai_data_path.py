"""The data path end to end through the official `openai` client: routing, headers, refusals."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from gateway.routing.locate import UNKNOWN_ORIGIN
from regions.simulator.fleet import SimulatorFleet
from tests.integration.conftest import (
    ACME_KEY,
    BROKER_KEY,
    CHAT,
    COMMON_MODELS,
    DEMO_KEY,
    GDPR_ALLOWED,
    HTTP,
    INDIA_ONLY_MODEL,
    IP_CN,
    IP_DE,
    IP_IN,
    IP_US,
    GatewayProcess,
    openai_client,
    set_faults,
    trace_id_of,
)

pytestmark = pytest.mark.integration

US_REGIONS = frozenset({"us-virginia", "us-oregon"})


def _check_headers(headers: httpx.Headers, region: str) -> None:
    assert headers["x-residency-region"] == region
    assert len(headers["x-residency-decision"]) == 24
    trace_id_of(headers["traceparent"])
    # The region saw the same decision id and a traceparent in the same trace.
    assert headers["x-received-decision"] == headers["x-residency-decision"]
    assert trace_id_of(headers["x-received-traceparent"]) == trace_id_of(headers["traceparent"])


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        pytest.param(IP_DE, {"eu-frankfurt"}, id="DE"),
        pytest.param(IP_IN, {"in-mumbai"}, id="IN"),
        pytest.param(IP_US, US_REGIONS, id="US"),
    ],
)
def test_chat_non_streaming_routes_by_client_country(
    gateway: GatewayProcess, ip: str, expected: set[str]
) -> None:
    with openai_client(gateway, ip) as client:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=CHAT)
    region = raw.headers["x-residency-region"]
    assert region in expected
    _check_headers(raw.headers, region)
    completion = raw.parse()
    content = completion.choices[0].message.content
    assert content is not None
    assert region in content
    assert completion.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        pytest.param(IP_DE, {"eu-frankfurt"}, id="DE"),
        pytest.param(IP_IN, {"in-mumbai"}, id="IN"),
        pytest.param(IP_US, US_REGIONS, id="US"),
    ],
)
def test_chat_streaming_routes_by_client_country(
    gateway: GatewayProcess, ip: str, expected: set[str]
) -> None:
    with openai_client(gateway, ip) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=CHAT,
            stream=True,
            stream_options={"include_usage": True},
        )
        region = raw.headers["x-residency-region"]
        assert region in expected
        _check_headers(raw.headers, region)
        assert raw.headers["content-type"].startswith("text/event-stream")
        chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert region in text
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 16


def test_completions_non_streaming_and_streaming(gateway: GatewayProcess) -> None:
    with openai_client(gateway, IP_DE) as client:
        raw = client.completions.with_raw_response.create(
            model="gpt-4o-mini", prompt="Say hello", max_tokens=3
        )
        assert raw.headers["x-residency-region"] == "eu-frankfurt"
        assert raw.parse().choices[0].text == "Hello from eu-frankfurt."
        raw_stream = client.completions.with_raw_response.create(
            model="gpt-4o-mini", prompt="Say hello", stream=True
        )
        assert raw_stream.headers["x-residency-region"] == "eu-frankfurt"
        text = "".join(c.choices[0].text for c in raw_stream.parse())
    assert text.startswith("Hello from eu-frankfurt.")
    assert len(text.split()) == 16


def test_embeddings(gateway: GatewayProcess) -> None:
    with openai_client(gateway, IP_IN) as client:
        raw = client.embeddings.with_raw_response.create(
            model="text-embedding-3-small", input=["alpha", "beta"]
        )
        floats = client.embeddings.create(
            model="text-embedding-3-small", input=["alpha", "beta"], encoding_format="float"
        )
    assert raw.headers["x-residency-region"] == "in-mumbai"
    result = raw.parse()
    assert [len(d.embedding) for d in result.data] == [16, 16]
    assert [d.embedding for d in result.data] == [d.embedding for d in floats.data]


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        pytest.param(IP_DE, sorted(COMMON_MODELS), id="DE-no-india-only-model"),
        pytest.param(IP_IN, sorted([*COMMON_MODELS, INDIA_ONLY_MODEL]), id="IN"),
        pytest.param(IP_CN, [], id="CN-nothing"),
    ],
)
def test_models_list_shows_models_of_allowed_regions(
    gateway: GatewayProcess, ip: str, expected: list[str]
) -> None:
    with openai_client(gateway, ip) as client:
        models = list(client.models.list())
    assert sorted(m.id for m in models) == expected


def test_an_empty_models_list_says_why(gateway: GatewayProcess) -> None:
    """No country (loopback, no X-Forwarded-For): the 451's hint, in a list SDKs still parse."""
    with openai_client(gateway) as client:
        raw = client.models.with_raw_response.list()
    assert list(raw.parse()) == []
    body = raw.http_response.json()
    assert (body["object"], body["data"]) == ("list", [])
    assert body["hint"] == raw.headers["x-residency-hint"] == UNKNOWN_ORIGIN
    assert "X-Data-Subject-Country" in body["hint"]

    with openai_client(gateway, IP_CN) as client:
        refused = client.models.with_raw_response.list()
    assert refused.http_response.json()["hint"].startswith("no region may process")

    declared = {"X-Data-Subject-Country": "DE"}
    with openai_client(gateway, headers=declared) as client:
        listed = client.models.with_raw_response.list()
    assert sorted(m.id for m in listed.parse()) == sorted(COMMON_MODELS)
    assert "hint" not in listed.http_response.json()
    assert "x-residency-hint" not in listed.headers


def test_model_served_only_outside_the_allowed_set_is_refused(gateway: GatewayProcess) -> None:
    with (
        openai_client(gateway, IP_DE) as client,
        pytest.raises(openai.APIStatusError) as excinfo,
    ):
        client.chat.completions.create(model=INDIA_ONLY_MODEL, messages=CHAT)
    assert excinfo.value.status_code == 451
    assert INDIA_ONLY_MODEL in excinfo.value.message


def test_payment_data_of_indian_subject_from_german_client_is_refused(
    gateway: GatewayProcess,
) -> None:
    headers = {"X-Data-Subject-Country": "IN", "X-Data-Class": "payment"}
    with (
        openai_client(gateway, IP_DE, headers=headers) as client,
        pytest.raises(openai.APIStatusError) as excinfo,
    ):
        client.chat.completions.create(model="gpt-4o-mini", messages=CHAT)
    error = excinfo.value
    assert error.status_code == 451
    body = error.body
    assert isinstance(body, dict)
    assert body["type"] == "residency_violation"
    assert body["code"] == "no_allowed_region"
    assert "payment" in body["message"]
    regimes = {r["id"] for r in body["residency"]["regimes"]}
    assert {"gdpr", "in_rbi"} <= regimes
    assert error.response.headers["x-residency-decision"] == body["decision_id"]
    assert "x-residency-region" not in error.response.headers


def test_chinese_client_is_refused_with_reasons(gateway: GatewayProcess) -> None:
    with (
        openai_client(gateway, IP_CN) as client,
        pytest.raises(openai.APIStatusError) as excinfo,
    ):
        client.chat.completions.create(model="gpt-4o-mini", messages=CHAT)
    assert excinfo.value.status_code == 451
    body = excinfo.value.body
    assert isinstance(body, dict)
    assert body["type"] == "residency_violation"
    assert body["reasons"]
    assert "China PIPL" in body["reasons"][0]
    candidates = body["residency"]["candidates"]
    assert candidates
    assert not any(c["allowed"] for c in candidates)


def test_unlocated_client_without_declaration_is_refused_with_a_hint(
    gateway: GatewayProcess,
) -> None:
    with openai_client(gateway) as client, pytest.raises(openai.APIStatusError) as excinfo:
        client.chat.completions.create(model="gpt-4o-mini", messages=CHAT)
    assert excinfo.value.status_code == 451
    assert "X-Data-Subject-Country" in excinfo.value.message


def test_unlocated_client_with_declared_subject_country_is_routed(
    gateway: GatewayProcess,
) -> None:
    with openai_client(gateway, headers={"X-Data-Subject-Country": "DE"}) as client:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=CHAT)
    assert raw.headers["x-residency-region"] == "eu-frankfurt"
    assert "eu-frankfurt" in (raw.parse().choices[0].message.content or "")


def test_eu_tenant_from_us_address_never_goes_to_a_region_without_dpf(
    gateway: GatewayProcess,
) -> None:
    seen = set()
    with openai_client(gateway, IP_US, api_key=ACME_KEY) as client:
        for _ in range(8):
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=CHAT
            )
            seen.add(raw.headers["x-residency-region"])
    assert seen <= GDPR_ALLOWED
    assert "us-virginia" not in seen


def test_sebi_tenant_with_indian_subject_from_us_client_stays_in_india(
    gateway: GatewayProcess,
) -> None:
    headers = {"X-Data-Subject-Country": "IN"}
    with openai_client(gateway, IP_US, api_key=BROKER_KEY, headers=headers) as client:
        for _ in range(4):
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=CHAT
            )
            assert raw.headers["x-residency-region"] == "in-mumbai"


def test_sebi_tenant_personal_data_from_us_client_stays_in_india(
    gateway: GatewayProcess,
) -> None:
    with openai_client(gateway, IP_US, api_key=BROKER_KEY) as client:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=CHAT)
    assert raw.headers["x-residency-region"] == "in-mumbai"


def test_streaming_is_not_buffered(gateway: GatewayProcess, fleet: SimulatorFleet) -> None:
    """Each chunk reaches the client while the region is still streaming the rest: causal, not
    timed (the region's own in-flight counter says it has not finished)."""
    set_faults(fleet, "eu-frankfurt", ttft_ms=0, tokens_per_second=4, completion_tokens=16)
    stats_url = f"{fleet.spec('eu-frankfurt').base_url}/_sim/stats"
    still_streaming: list[bool] = []
    with openai_client(gateway, IP_DE) as client:
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=CHAT, stream=True)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                still_streaming.append(HTTP.get(stats_url).json()["in_flight"] > 0)
    assert len(still_streaming) == 16
    # 16 tokens at 4 tokens/s: the region streams for ~4 s; all but the last chunks arrived
    # while it was still sending (the last may overlap the region's end of stream).
    assert all(still_streaming[:-2]), still_streaming


def test_client_disconnect_mid_stream_stops_the_upstream(
    gateway: GatewayProcess, fleet: SimulatorFleet
) -> None:
    # 48 tokens at 8 tokens/s: the region would stream for ~6 s.
    set_faults(fleet, "eu-frankfurt", tokens_per_second=8, completion_tokens=48)
    body = {"model": "gpt-4o-mini", "stream": True, "messages": CHAT}
    headers = {"Authorization": f"Bearer {DEMO_KEY}", "X-Forwarded-For": IP_DE}
    with (
        httpx.Client(timeout=10.0) as client,
        client.stream(
            "POST", f"{gateway.base_url}/v1/chat/completions", json=body, headers=headers
        ) as response,
    ):
        assert response.headers["x-residency-region"] == "eu-frankfurt"
        decision_id = response.headers["x-residency-decision"]
        chunks = response.iter_raw()
        next(chunks)
        next(chunks)
    left_at = time.monotonic()
    stats_url = f"{fleet.spec('eu-frankfurt').base_url}/_sim/stats"
    while HTTP.get(stats_url).json()["in_flight"] > 0:
        assert time.monotonic() - left_at < 2.5, "the region is still streaming to nobody"
        time.sleep(0.05)
    record = gateway.record(decision_id)
    assert (record["outcome"], record["status_code"]) == ("routed", 499)
    assert record["served_region"] == "eu-frankfurt"
    assert record["attempts"][-1]["result"] == "client_disconnected"


# -- X-Forwarded-For is believed only from trusted proxies ---------------------------------

PROXY_ADDRESS = "127.0.0.2"


@pytest.fixture(scope="module")
def proxied_gateway(
    catalog: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway trusting X-Forwarded-For only from 127.0.0.2 (a stand-in reverse proxy)."""
    overrides = {"GATEWAY_TRUSTED_PROXIES": f"{PROXY_ADDRESS}/32"}
    directory = tmp_path_factory.mktemp("proxied-gw")
    with GatewayProcess(catalog, directory, overrides) as running:
        yield running


@pytest.mark.parametrize(
    ("source", "forwarded_for", "status", "region"),
    [
        pytest.param(PROXY_ADDRESS, IP_DE, 200, "eu-frankfurt", id="trusted-proxy-DE"),
        pytest.param(PROXY_ADDRESS, IP_IN, 200, "in-mumbai", id="trusted-proxy-IN"),
        pytest.param(PROXY_ADDRESS, f"{IP_DE}, {IP_CN}", 451, None, id="rightmost-hop-wins"),
        pytest.param("127.0.0.1", IP_DE, 451, None, id="untrusted-peer-spoofing-DE"),
        pytest.param("127.0.0.1", IP_IN, 451, None, id="untrusted-peer-spoofing-IN"),
    ],
)
def test_forwarded_for_only_from_trusted_proxies(
    proxied_gateway: GatewayProcess,
    source: str,
    forwarded_for: str,
    status: int,
    region: str | None,
) -> None:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10.0) as client:
        response = client.post(
            f"{proxied_gateway.base_url}/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": CHAT},
            headers={"Authorization": f"Bearer {DEMO_KEY}", "X-Forwarded-For": forwarded_for},
        )
    assert response.status_code == status, response.text
    assert response.headers.get("x-residency-region") == region
    if status == 451:
        assert response.json()["error"]["type"] == "residency_violation"
