"""Traffic through a real Envoy on routes our control plane pushed, to simulated regions."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from compliance.snapshot import PolicySnapshot
from compliance.store.catalog_file import load_catalog
from gateway.envoy.translate import REGION_HEADER, EnvoyOptions
from gateway.envoy.xds_server import XdsServer
from regions.catalog import RegionStatus
from regions.simulator.fleet import SimulatorFleet, free_port
from tests.integration.conftest import sim_requests
from tests.integration.envoy_support import (
    RunningEnvoy,
    accepted,
    publish,
    require_envoy,
    running_envoy,
    wait_for,
)

pytestmark = pytest.mark.integration
NODE = "forwarding-envoy"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def policy(catalog: Path) -> PolicySnapshot:
    regions, tenants = load_catalog(catalog)
    return PolicySnapshot(1, (), regions, tenants)


@pytest.fixture
def plane(
    policy: PolicySnapshot, temp_dir: Path
) -> Iterator[tuple[XdsServer, RunningEnvoy, EnvoyOptions]]:
    require_envoy()
    server = XdsServer()
    server.start()
    options = EnvoyOptions(listener_port=free_port())
    resources = publish(server, policy, options)
    try:
        with running_envoy(temp_dir, server.port, NODE) as envoy:
            wait_for("the ACK of every type", lambda: accepted(server, NODE, resources.version))
            yield server, envoy, options
    finally:
        server.stop()


def _chat(options: EnvoyOptions, region: str | None) -> httpx.Response:
    headers = {REGION_HEADER: region} if region else {}
    return httpx.post(
        f"http://127.0.0.1:{options.listener_port}/v1/chat/completions",
        json=CHAT,
        headers=headers,
        timeout=10.0,
        trust_env=False,
    )


def _healthy(envoy: RunningEnvoy, region: str) -> bool:
    # Envoy health-checks each region itself before sending it traffic.
    lines = envoy.admin("/clusters").text.splitlines()
    prefix = f"region_{region}::127.0.0.1:"
    return any(
        line.startswith(prefix) and line.endswith("::health_flags::healthy") for line in lines
    )


def test_a_request_reaches_the_region_on_the_pushed_route(
    plane: tuple[XdsServer, RunningEnvoy, EnvoyOptions], fleet: SimulatorFleet
) -> None:
    _, envoy, options = plane
    wait_for("uk-london to pass Envoy's health check", lambda: _healthy(envoy, "uk-london"))
    before = sim_requests(fleet, "uk-london")
    others = {rid: sim_requests(fleet, rid) for rid in ("eu-frankfurt", "us-oregon")}
    response = _chat(options, "uk-london")
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]
    # The simulators' own counters, not Envoy's word.
    assert sim_requests(fleet, "uk-london") == before + 1
    assert {rid: sim_requests(fleet, rid) for rid in others} == others


def test_no_chosen_region_is_refused_in_envoy_and_a_drained_region_gets_nothing(
    plane: tuple[XdsServer, RunningEnvoy, EnvoyOptions],
    fleet: SimulatorFleet,
    policy: PolicySnapshot,
) -> None:
    server, _, options = plane
    refused = _chat(options, None)
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/json"
    assert refused.json()["error"]["code"] == "no_healthy_region"
    regions = [
        dataclasses.replace(r, status=RegionStatus.DRAINING) if r.id == "eu-frankfurt" else r
        for r in policy.regions
    ]
    drained = publish(server, PolicySnapshot(2, (), regions, ()), options)
    wait_for("the drained policy's ACK", lambda: accepted(server, NODE, drained.version))
    before = sim_requests(fleet, "eu-frankfurt")
    response = _chat(options, "eu-frankfurt")
    assert response.status_code == 503
    assert sim_requests(fleet, "eu-frankfurt") == before
