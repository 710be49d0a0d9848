"""Refusals and upstream failures answered alike by both data planes: status, JSON, headers.

A real Python gateway and a real deciding Envoy stand in front of the same simulators; each
case sends the same request to both and compares the answers (`assert_same_answer`).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from regions.simulator.fleet import SimulatorFleet
from tests.integration.conftest import (
    ACME_KEY,
    BROKER_KEY,
    DEMO_KEY,
    IP_DE,
    IP_IN,
    REGIONS,
    readiness,
    reset_fleet,
    set_faults,
    sim_requests,
)
from tests.integration.envoy_edge_support import TwoPlanes, assert_same_answer, two_planes
from tests.integration.envoy_support import wait_for

pytestmark = pytest.mark.integration
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
GERMAN = {"Authorization": f"Bearer {DEMO_KEY}", "X-Forwarded-For": IP_DE}
GERMAN_ORDER = ("eu-frankfurt", "uk-london", "us-oregon")
INDIAN_SECURITIES = {
    "Authorization": f"Bearer {DEMO_KEY}",
    "X-Forwarded-For": IP_IN,
    "X-Data-Class": "financial_securities",
}
"""Allowed in in-mumbai only."""


@pytest.fixture(scope="module")
def planes(
    catalog: Path, fleet: SimulatorFleet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TwoPlanes]:
    with two_planes(catalog, fleet, tmp_path_factory.mktemp("edges"), "edges-envoy") as both:
        yield both


@pytest.fixture(autouse=True)
def _healthy_fleet(fleet: SimulatorFleet) -> Iterator[None]:
    reset_fleet(fleet)
    yield
    reset_fleet(fleet)


# -- refusals (the decision filter's own answers) -------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        pytest.param(
            {**GERMAN, "X-Data-Subject-Country": "IN", "X-Data-Class": "payment"},
            CHAT,
            451,
            id="451-no-allowed-region",
        ),
        pytest.param(
            {"Authorization": f"Bearer {DEMO_KEY}", "X-Forwarded-For": "10.0.0.1"},
            CHAT,
            451,
            id="451-unknown-origin",
        ),
        pytest.param({**GERMAN}, {**CHAT, "model": "no-such-model"}, 404, id="404-unknown-model"),
        pytest.param(
            {**GERMAN}, {**CHAT, "model": "indic-gpt"}, 451, id="451-model-only-elsewhere"
        ),
        pytest.param(
            {
                "Authorization": f"Bearer {ACME_KEY}",
                "X-Forwarded-For": IP_IN,
                "X-Data-Class": "payment",
            },
            CHAT,
            451,
            id="451-tenant-home",
        ),
        pytest.param(
            {"Authorization": f"Bearer {BROKER_KEY}", "X-Forwarded-For": IP_DE},
            CHAT,
            451,
            id="451-flag-triggered-regime",
        ),
        pytest.param({**GERMAN, "X-Data-Class": "bogus"}, CHAT, 400, id="400-data-class"),
        pytest.param({**GERMAN, "X-Data-Subject-Country": "XX"}, CHAT, 400, id="400-country"),
        pytest.param({"X-Forwarded-For": IP_DE}, CHAT, 401, id="401-no-key"),
    ],
)
def test_refusals_are_answered_alike(
    planes: TwoPlanes, headers: dict[str, str], body: object, status: int
) -> None:
    python, envoy = planes.post_both(body, headers)
    assert python.status_code == status, python.text
    assert_same_answer(python, envoy, same_text=True)


# -- upstream failures (Envoy's own answers, rewritten) -------------------------------------


def _reached(fleet: SimulatorFleet, before: dict[str, int]) -> dict[str, int]:
    return {r: sim_requests(fleet, r) - n for r, n in before.items() if sim_requests(fleet, r) != n}


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"drop_after_chunks": 0}, id="reset-before-headers"),
        pytest.param({"hang": True}, id="no-headers-within-the-first-byte-timeout"),
    ],
)
def test_every_allowed_region_failing_is_answered_alike(
    planes: TwoPlanes, fleet: SimulatorFleet, fault: dict[str, object]
) -> None:
    for region in GERMAN_ORDER:
        set_faults(fleet, region, **fault)
    before = {r: sim_requests(fleet, r) for r in REGIONS}
    python, envoy = planes.post_both(CHAT, GERMAN)
    assert python.status_code == 502, python.text
    assert_same_answer(python, envoy, same_text=False)
    assert "every allowed region failed" in envoy.json()["error"]["message"]
    # each plane tried each allowed region once, and nothing outside the set
    assert _reached(fleet, before) == dict.fromkeys(GERMAN_ORDER, 2)


def _unhealthy_in_envoy(planes: TwoPlanes, region: str) -> bool:
    return not planes.envoy.healthy(region)


def _unhealthy_in_python(planes: TwoPlanes) -> bool:
    report = readiness(planes.python)
    return bool(report["regions_healthy"] < report["regions_total"])


def test_no_healthy_region_is_answered_alike(planes: TwoPlanes, fleet: SimulatorFleet) -> None:
    set_faults(fleet, "in-mumbai", down=True)
    try:
        wait_for("in-mumbai unhealthy in Envoy", partial(_unhealthy_in_envoy, planes, "in-mumbai"))
        wait_for("in-mumbai unhealthy", partial(_unhealthy_in_python, planes))
        before = {r: sim_requests(fleet, r) for r in REGIONS}
        python, envoy = planes.post_both(CHAT, INDIAN_SECURITIES)
        assert python.status_code == 503, python.text
        assert_same_answer(python, envoy, same_text=False, decided_alike=False)
        # Envoy's filter routed to the one allowed region; its cluster knew it was down.
        assert envoy.json()["error"]["residency"]["chosen_region"] == "in-mumbai"
        assert _reached(fleet, before) == {}
    finally:
        reset_fleet(fleet)
        wait_for("in-mumbai healthy in Envoy", partial(planes.envoy.healthy, "in-mumbai"))
