"""Hostile upstream conditions against a real gateway process, with each upstream client.

A hung region gets a request once, and both attempts are logged (issue 13, item 6); a client
that leaves before a slow answer cancels it and is logged as 499 (item 11); connections to a
region are bounded (item 17). Every test runs with the h1 client and with aiohttp.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from regions.simulator.fleet import SimulatorFleet
from tests.integration.conftest import (
    CHAT,
    DEMO_KEY,
    HTTP,
    IP_DE,
    GatewayProcess,
    openai_client,
    set_faults,
    sim_post,
    sim_requests,
)

pytestmark = pytest.mark.integration

CLIENTS = ("h1", "aiohttp")
TIMEOUTS = {
    "GATEWAY_UPSTREAM_FIRST_BYTE_TIMEOUT": "1",
    "GATEWAY_UPSTREAM_CONNECT_TIMEOUT": "0.5",
}


@pytest.fixture(scope="module", params=CLIENTS)
def gw(
    request: pytest.FixtureRequest, catalog: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway using one upstream client (h1 or aiohttp), on the session fleet."""
    overrides = {"GATEWAY_UPSTREAM_CLIENT": request.param, **TIMEOUTS}
    with GatewayProcess(catalog, tmp_path_factory.mktemp(request.param), overrides) as running:
        yield running


def sim_stats(fleet: SimulatorFleet, region_id: str) -> dict[str, Any]:
    """A simulator's counters (requests, in_flight, aborted)."""
    result: dict[str, Any] = HTTP.get(f"{fleet.spec(region_id).base_url}/_sim/stats").json()
    return result


def wait_for(condition: Any, what: str, timeout: float = 5.0) -> None:
    """Poll `condition()` until true; fail after `timeout` seconds (a bound on a hang)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_plain_streamed_and_failed_over_requests(gw: GatewayProcess, fleet: SimulatorFleet) -> None:
    with openai_client(gw, IP_DE) as client:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=CHAT)
        assert raw.headers["x-residency-region"] == "eu-frankfurt"
        assert "eu-frankfurt" in (raw.parse().choices[0].message.content or "")
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=CHAT, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert "eu-frankfurt" in text
        set_faults(fleet, "eu-frankfurt", error_rate=1.0, error_status=500)
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=CHAT)
    assert raw.headers["x-residency-region"] == "uk-london"
    record = gw.record(raw.headers["x-residency-decision"])
    assert [(a["region"], a["result"]) for a in record["attempts"]] == [
        ("eu-frankfurt", "http_5xx"),
        ("uk-london", "ok"),
    ]


def test_a_hung_region_gets_the_request_once_and_both_attempts_are_logged(
    gw: GatewayProcess, fleet: SimulatorFleet
) -> None:
    with openai_client(gw, IP_DE) as client:
        # A kept-alive connection to Frankfurt is in the pool now.
        client.chat.completions.create(model="gpt-4o-mini", messages=CHAT)
        sim_post(fleet.spec("eu-frankfurt"), "/_sim/reset")  # zero its counters
        set_faults(fleet, "eu-frankfurt", hang=True)
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=CHAT)
    assert raw.headers["x-residency-region"] == "uk-london"
    record = gw.record(raw.headers["x-residency-decision"])
    assert [(a["region"], a["result"]) for a in record["attempts"]] == [
        ("eu-frankfurt", "timeout"),
        ("uk-london", "ok"),
    ]
    # The hung region saw the prompt once, and the gateway let go of that connection.
    wait_for(
        lambda: sim_stats(fleet, "eu-frankfurt")["aborted"] == 1,
        "the timed-out exchange with the hung region was never closed",
    )
    assert sim_requests(fleet, "eu-frankfurt") == 1


def _post_and_leave(gw: GatewayProcess, fleet: SimulatorFleet, trace_id: str) -> None:
    """Send a chat request, wait until Frankfurt works on it, then close the socket."""
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": CHAT})
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        f"authorization: Bearer {DEMO_KEY}\r\nx-forwarded-for: {IP_DE}\r\n"
        f"traceparent: 00-{trace_id}-{secrets.token_hex(8)}-01\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5.0) as sock:
        sock.sendall(head.encode() + body)
        wait_for(
            lambda: sim_stats(fleet, "eu-frankfurt")["in_flight"] == 1,
            "the request never reached the region",
        )


def _record_by_trace(gw: GatewayProcess, trace_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def logged() -> bool:
        found[:] = [r for r in gw.routing_log.recent(50) if r["trace_id"] == trace_id]
        return bool(found)

    wait_for(logged, f"no routing record for trace {trace_id}")
    return found[0]


def test_a_client_leaving_before_a_slow_answer_cancels_it_and_is_logged_499(
    gw: GatewayProcess, fleet: SimulatorFleet
) -> None:
    set_faults(fleet, "eu-frankfurt", ttft_ms=8000)  # a slow, non-streamed answer
    trace_id = secrets.token_hex(16)
    _post_and_leave(gw, fleet, trace_id)
    # The region notices the gateway hang up long before its answer would be ready.
    wait_for(
        lambda: sim_stats(fleet, "eu-frankfurt")["aborted"] == 1,
        "the region is still working for a client that left",
    )
    assert sim_stats(fleet, "eu-frankfurt")["in_flight"] == 0
    record = _record_by_trace(gw, trace_id)
    assert (record["outcome"], record["status_code"]) == ("routed", 499)
    assert record["served_region"] == "eu-frankfurt"
    assert [(a["region"], a["result"], a["status"]) for a in record["attempts"]] == [
        ("eu-frankfurt", "client_disconnected", None)
    ]
    assert sim_requests(fleet, "uk-london") == 0
    assert "Traceback" not in gw.output()


@pytest.mark.parametrize("client", CLIENTS)
def test_connections_to_a_region_are_bounded(
    client: str, catalog: Path, fleet: SimulatorFleet, temp_dir: Path
) -> None:
    overrides = {
        "GATEWAY_UPSTREAM_CLIENT": client,
        "GATEWAY_UPSTREAM_FIRST_BYTE_TIMEOUT": "10",
        "GATEWAY_UPSTREAM_CONNECT_TIMEOUT": "0.5",
        "GATEWAY_UPSTREAM_MAX_CONNECTIONS": "4",
        "GATEWAY_UPSTREAM_MAX_CONNECTIONS_PER_REGION": "1",
    }
    with GatewayProcess(catalog, temp_dir / "gw", overrides) as gateway:
        set_faults(fleet, "eu-frankfurt", ttft_ms=3000)
        first: list[str] = []

        def slow() -> None:
            with openai_client(gateway, IP_DE) as slow_client:
                raw = slow_client.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", messages=CHAT
                )
                first.append(raw.headers["x-residency-region"])

        worker = threading.Thread(target=slow, daemon=True)
        worker.start()
        wait_for(
            lambda: sim_stats(fleet, "eu-frankfurt")["in_flight"] == 1,
            "the first request never reached the region",
        )
        # Frankfurt's one connection is busy: the second request waits for it no longer
        # than the connect timeout, is never sent there, and goes to the next region.
        with openai_client(gateway, IP_DE) as second_client:
            raw = second_client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=CHAT
            )
        assert raw.headers["x-residency-region"] == "uk-london"
        record = gateway.record(raw.headers["x-residency-decision"])
        assert [(a["region"], a["result"]) for a in record["attempts"]] == [
            ("eu-frankfurt", "connect_error"),
            ("uk-london", "ok"),
        ]
        worker.join(10)
        assert first == ["eu-frankfurt"]
        assert sim_requests(fleet, "eu-frankfurt") == 1
