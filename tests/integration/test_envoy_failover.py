"""Failover inside the allowed set, through a real Envoy (the simulators' own counters)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from regions.simulator.fleet import SimulatorFleet
from tests.integration.conftest import (
    DEMO_KEY,
    IP_DE,
    IP_IN,
    REGIONS,
    reset_fleet,
    set_faults,
    sim_requests,
)
from tests.integration.envoy_decision_support import (
    DecidingEnvoy,
    catalog_policy,
    deciding_envoy,
)

pytestmark = pytest.mark.integration
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
GERMAN = {"Authorization": f"Bearer {DEMO_KEY}", "X-Forwarded-For": IP_DE}
# nearest first from Germany's centroid, all allowed for German personal data
GERMAN_ORDER = ("eu-frankfurt", "uk-london", "us-oregon")


@pytest.fixture(scope="module")
def plane(
    fleet: SimulatorFleet, catalog: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DecidingEnvoy]:
    directory = tmp_path_factory.mktemp("envoy-failover")
    with deciding_envoy(catalog_policy(catalog), directory, "failover-envoy", tuple(REGIONS)) as p:
        yield p


@pytest.fixture(autouse=True)
def _healthy_fleet(fleet: SimulatorFleet) -> Iterator[None]:
    reset_fleet(fleet)
    yield
    reset_fleet(fleet)


def _delta(fleet: SimulatorFleet, before: dict[str, int]) -> dict[str, int]:
    return {r: sim_requests(fleet, r) - n for r, n in before.items() if sim_requests(fleet, r) != n}


def test_a_failing_region_fails_over_to_the_next_allowed_one(
    plane: DecidingEnvoy, fleet: SimulatorFleet
) -> None:
    set_faults(fleet, "eu-frankfurt", error_rate=1.0, error_status=500)
    before = {r: sim_requests(fleet, r) for r in REGIONS}
    response = plane.post(CHAT, GERMAN)
    assert response.status_code == 200, response.text
    assert response.headers["x-residency-region"] == "uk-london"
    assert _delta(fleet, before) == {"eu-frankfurt": 1, "uk-london": 1}


def test_when_every_allowed_region_fails_nothing_leaves_the_allowed_set(
    plane: DecidingEnvoy, fleet: SimulatorFleet
) -> None:
    for region in GERMAN_ORDER:
        set_faults(fleet, region, error_rate=1.0, error_status=500)
    before = {r: sim_requests(fleet, r) for r in REGIONS}
    response = plane.post(CHAT, GERMAN)
    assert response.status_code >= 500
    assert _delta(fleet, before) == dict.fromkeys(GERMAN_ORDER, 1)


def test_a_request_allowed_in_one_region_only_is_not_sent_elsewhere(
    plane: DecidingEnvoy, fleet: SimulatorFleet
) -> None:
    set_faults(fleet, "in-mumbai", error_rate=1.0, error_status=500)
    before = {r: sim_requests(fleet, r) for r in REGIONS}
    headers = {
        "Authorization": f"Bearer {DEMO_KEY}",
        "X-Forwarded-For": IP_IN,
        "X-Data-Class": "financial_securities",
    }
    response = plane.post(CHAT, headers)
    assert response.status_code >= 500
    assert _delta(fleet, before) == {"in-mumbai": 1}
