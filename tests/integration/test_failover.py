"""Failover across allowed regions only: errors, hangs, broken streams, dying regions."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from regions.simulator.fleet import SimulatorFleet
from tests.integration.conftest import (
    CHAT,
    DEMO_KEY,
    GDPR_ALLOWED,
    IP_DE,
    GatewayProcess,
    fleet_specs,
    openai_client,
    set_faults,
    sim_requests,
    write_catalog,
)

pytestmark = pytest.mark.integration

FORBIDDEN_FOR_DE = frozenset({"us-virginia", "in-mumbai"})


def test_server_error_fails_over_to_next_allowed_region(
    gateway: GatewayProcess, fleet: SimulatorFleet
) -> None:
    set_faults(fleet, "eu-frankfurt", error_rate=1.0, error_status=500)
    with openai_client(gateway, IP_DE) as client:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=CHAT)
    assert raw.headers["x-residency-region"] == "uk-london"
    assert "uk-london" in (raw.parse().choices[0].message.content or "")
    record = gateway.record(raw.headers["x-residency-decision"])
    assert record["outcome"] == "routed"
    assert record["status_code"] == 200
    assert record["chosen_region"] == "eu-frankfurt"
    assert record["served_region"] == "uk-london"
    attempts = [(a["region"], a["result"], a["status"]) for a in record["attempts"]]
    assert attempts == [("eu-frankfurt", "http_5xx", 500), ("uk-london", "ok", 200)]
    assert sim_requests(fleet, "eu-frankfurt") == 1
    assert sim_requests(fleet, "uk-london") == 1


def test_client_errors_are_not_failed_over(gateway: GatewayProcess, fleet: SimulatorFleet) -> None:
    set_faults(fleet, "eu-frankfurt", error_rate=1.0, error_status=429)
    with (
        openai_client(gateway, IP_DE) as client,
        pytest.raises(openai.RateLimitError) as excinfo,
    ):
        client.chat.completions.create(model="gpt-4o-mini", messages=CHAT)
    assert excinfo.value.response.headers["x-residency-region"] == "eu-frankfurt"
    assert sim_requests(fleet, "uk-london") == 0


def test_hanging_region_fails_over_after_first_byte_timeout(
    gateway: GatewayProcess, fleet: SimulatorFleet
) -> None:
    set_faults(fleet, "eu-frankfurt", hang=True)
    with openai_client(gateway, IP_DE) as client:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=CHAT)
    assert raw.headers["x-residency-region"] == "uk-london"
    assert sim_requests(fleet, "eu-frankfurt") == 1  # waited out once, not resent
    record = gateway.record(raw.headers["x-residency-decision"])
    assert [(a["region"], a["result"]) for a in record["attempts"]] == [
        ("eu-frankfurt", "timeout"),
        ("uk-london", "ok"),
    ]


def test_connection_closed_before_headers_fails_over(
    gateway: GatewayProcess, fleet: SimulatorFleet
) -> None:
    set_faults(fleet, "eu-frankfurt", drop_after_chunks=0)
    with openai_client(gateway, IP_DE) as client:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=CHAT)
    assert raw.headers["x-residency-region"] == "uk-london"
    record = gateway.record(raw.headers["x-residency-decision"])
    assert [a["region"] for a in record["attempts"]] == ["eu-frankfurt", "uk-london"]
    assert record["attempts"][0]["result"] == "protocol_error"


def test_stream_dropped_midway_is_not_failed_over(
    gateway: GatewayProcess, fleet: SimulatorFleet
) -> None:
    set_faults(fleet, "eu-frankfurt", drop_after_chunks=3)
    received: list[str] = []
    with openai_client(gateway, IP_DE) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=CHAT, stream=True
        )
        decision_id = raw.headers["x-residency-decision"]
        assert raw.headers["x-residency-region"] == "eu-frankfurt"
        finish_reasons: list[str] = []
        broke = False
        try:
            for chunk in raw.parse():
                received.extend(c.delta.content or "" for c in chunk.choices)
                finish_reasons.extend(c.finish_reason for c in chunk.choices if c.finish_reason)
        except (httpx.HTTPError, openai.APIError):
            broke = True
    # The client sees the break: an error, or at least a stream that never finished.
    assert broke or not finish_reasons
    # Bytes already reached the client: the gateway must not splice in another region.
    assert len(received) <= 3
    assert "".join(received).startswith("Hello")
    assert sim_requests(fleet, "uk-london") == 0
    assert sim_requests(fleet, "us-oregon") == 0
    record = gateway.record(decision_id)
    assert record["outcome"] == "upstream_error"
    assert record["served_region"] == "eu-frankfurt"
    assert len(record["attempts"]) == 1
    assert record["attempts"][0]["result"].startswith("broken_stream:")
    assert "Traceback" not in gateway.output()


def test_every_allowed_region_down_is_503(gateway: GatewayProcess, fleet: SimulatorFleet) -> None:
    for region in GDPR_ALLOWED:
        set_faults(fleet, region, down=True)
    deadline = time.monotonic() + 5.0
    with openai_client(gateway, IP_DE) as client:
        while True:
            with pytest.raises(openai.APIStatusError) as excinfo:
                client.chat.completions.create(model="gpt-4o-mini", messages=CHAT)
            error = excinfo.value
            served = error.response.headers.get("x-residency-region")
            assert served not in FORBIDDEN_FOR_DE
            if error.status_code == 503 and served is None:
                break
            assert time.monotonic() < deadline, "the prober never marked the regions down"
            time.sleep(0.1)
    body = error.body
    assert isinstance(body, dict)
    assert body["type"] == "region_unavailable"
    assert body["code"] == "no_healthy_region"
    for region in GDPR_ALLOWED:
        assert region in body["message"]
    record = gateway.record(error.response.headers["x-residency-decision"])
    assert record["outcome"] == "unavailable"
    assert record["status_code"] == 503
    assert record["served_region"] is None
    assert sim_requests(fleet, "us-virginia") == 0
    assert sim_requests(fleet, "in-mumbai") == 0


# -- a region dies mid-test ---------------------------------------------------------------


@dataclass
class _Dying:
    fleet: SimulatorFleet
    gateway: GatewayProcess


@pytest.fixture(scope="module")
def dying(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Dying]:
    """Its own fleet and gateway: this test kills simulators for good."""
    directory: Path = tmp_path_factory.mktemp("dying")
    with SimulatorFleet(fleet_specs()) as own_fleet:
        catalog = write_catalog(directory / "catalog.yaml", own_fleet)
        with GatewayProcess(catalog, directory / "gw") as own_gateway:
            yield _Dying(own_fleet, own_gateway)


@dataclass
class _Result:
    at: float
    status: int | None
    region: str | None
    code: str | None


def _hammer(gateway: GatewayProcess, stop: threading.Event, results: list[_Result]) -> None:
    headers = {
        "Authorization": f"Bearer {DEMO_KEY}",
        "X-Forwarded-For": IP_DE,
        "Content-Type": "application/json",
    }
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": CHAT})
    with httpx.Client(timeout=10.0) as client:
        while not stop.is_set():
            at = time.monotonic()
            try:
                response = client.post(
                    f"{gateway.base_url}/v1/chat/completions", content=body, headers=headers
                )
            except httpx.HTTPError:
                results.append(_Result(at, None, None, None))
                continue
            code = None
            if response.status_code != 200:
                code = response.json()["error"]["code"]
            results.append(
                _Result(at, response.status_code, response.headers.get("x-residency-region"), code)
            )
            time.sleep(0.01)


def test_region_killed_mid_traffic_never_routes_outside_the_allowed_set(dying: _Dying) -> None:
    results: list[_Result] = []
    stop = threading.Event()
    worker = threading.Thread(target=_hammer, args=(dying.gateway, stop, results), daemon=True)
    worker.start()
    try:
        time.sleep(0.5)
        killed_frankfurt = time.monotonic()
        dying.fleet.process("eu-frankfurt").kill()
        time.sleep(1.5)
        killed_all = time.monotonic()
        dying.fleet.process("uk-london").kill()
        dying.fleet.process("us-oregon").kill()
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            tail = results[-5:]
            if len(tail) == 5 and all(r.status == 503 for r in tail):
                break
            time.sleep(0.1)
    finally:
        stop.set()
        worker.join(15)
    assert not worker.is_alive()

    # A request sent just before a kill may meet the dead region: a margin keeps phases clean.
    before = [r for r in results if r.at < killed_frankfurt - 0.05]
    middle = [r for r in results if killed_frankfurt <= r.at < killed_all]
    after = [r for r in results if r.at >= killed_all]
    assert before
    assert middle
    assert after
    assert {r.region for r in before} == {"eu-frankfurt"}
    assert all(r.status == 200 for r in before)
    served = {r.region for r in results if r.region is not None}
    assert served <= GDPR_ALLOWED, served
    assert not served & FORBIDDEN_FOR_DE
    # Frankfurt's death is absorbed by failover: clients still get answers, from allowed regions.
    middle_ok = [r for r in middle if r.status == 200]
    assert len(middle_ok) >= len(middle) - 1
    after_kill = {r.region for r in middle_ok if r.at > killed_frankfurt + 0.05}
    assert after_kill
    assert after_kill <= {"uk-london", "us-oregon"}
    # With every allowed region dead: refusals, never a detour to a forbidden region.
    for r in after:
        assert r.status in {200, 502, 503, None}, r
        assert r.region not in FORBIDDEN_FOR_DE
        if r.status == 503:
            assert r.code == "no_healthy_region"
        if r.status == 502:
            assert r.code == "all_attempts_failed"
    assert [r.status for r in after[-5:]] == [503] * 5
    transport_errors = [r for r in results if r.status is None]
    assert len(transport_errors) <= 2, transport_errors
    assert sim_requests(dying.fleet, "us-virginia") == 0
    assert sim_requests(dying.fleet, "in-mumbai") == 0
    assert "Traceback" not in dying.gateway.output()
