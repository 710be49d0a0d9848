"""A fallback is re-checked against the newest policy before it is tried: a region drained
while an earlier region was being tried gets nothing (the simulators' counters say so)."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest

from compliance.store.policy_store import PolicyStore
from regions.catalog import RegionStatus
from regions.simulator.fleet import SimulatorFleet
from tests.integration.conftest import (
    IP_DE,
    GatewayProcess,
    readiness,
    set_faults,
    sim_requests,
    wait_all_healthy,
)
from tests.integration.replicas_support import chat, wait_for

pytestmark = pytest.mark.integration

PATIENT = {
    # The parked first attempt must outlive the reload: nothing times it out but the test.
    "GATEWAY_UPSTREAM_FIRST_BYTE_TIMEOUT": "60",
    "GATEWAY_SNAPSHOT_REFRESH_INTERVAL": "0.2",
}


def test_a_fallback_drained_during_an_attempt_is_skipped(
    catalog: Path, fleet: SimulatorFleet, temp_dir: Path
) -> None:
    with GatewayProcess(catalog, temp_dir, PATIENT) as gateway:
        wait_all_healthy(gateway)
        store = PolicyStore(gateway.database_url)
        set_faults(fleet, "eu-frankfurt", hang=True)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            answer = pool.submit(chat, gateway, IP_DE)
            wait_for(lambda: sim_requests(fleet, "eu-frankfurt"), bool, 20, "no first attempt")
            version = store.set_region_status("uk-london", RegionStatus.DRAINING)
            wait_for(
                lambda: readiness(gateway)["policy_version"],
                lambda seen: seen == version,
                20,
                "drain not loaded",
            )
            # The parked attempt now fails: the next hop of the old decision is uk-london.
            set_faults(fleet, "eu-frankfurt", hang=False, error_rate=1.0, error_status=500)
            region, decision_id = answer.result(timeout=30)
        store.close()
        record = gateway.record(decision_id)
    assert region == "us-oregon"
    assert [(a["region"], a["result"]) for a in record["attempts"]] == [
        ("eu-frankfurt", "http_5xx"),
        ("uk-london", "no_longer_allowed"),
        ("us-oregon", "ok"),
    ]
    assert sim_requests(fleet, "uk-london") == 0
