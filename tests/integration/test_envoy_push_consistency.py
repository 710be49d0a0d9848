"""Policy pushes under load: draining and restoring a region loses no request (make-before-break).

A client sends requests back to back through a deciding Envoy while the test drains and restores
a region several times. Before the fix, each push removed the failover clusters of lists with
the drained region before the routes stopped naming them: Envoy answered 503 (no cluster).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from compliance.snapshot import PolicySnapshot
from gateway.envoy.translate import CLUSTER_TYPE, translate
from regions.catalog import RegionStatus
from regions.simulator.fleet import SimulatorFleet
from tests.integration.conftest import DEMO_KEY, IP_DE, REGIONS
from tests.integration.envoy_decision_support import (
    DecidingEnvoy,
    catalog_policy,
    deciding_envoy,
)
from tests.integration.envoy_support import accepted, publish, wait_for

pytestmark = pytest.mark.integration
NODE = "push-envoy"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
GERMAN = {"Authorization": f"Bearer {DEMO_KEY}", "X-Forwarded-For": IP_DE}
DRAINED = "eu-frankfurt"  # the nearest region for German requests: its lists start with it
PUSHES = 10
REQUESTS_BETWEEN_PUSHES = 10


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    region: str | None
    body: str
    drained_and_acked: bool
    """True if the request started while Envoy ran (had ACKed) the policy draining DRAINED."""


class BackToBackClient:
    """One client sending requests back to back in a thread until stopped."""

    def __init__(self, plane: DecidingEnvoy) -> None:
        self.answers: list[Answer] = []
        self.drained_and_acked = False
        self._plane = plane
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="back-to-back", daemon=True)
        self._client = httpx.Client(timeout=10.0, trust_env=False)

    def __enter__(self) -> BackToBackClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30.0)
        self._client.close()

    def _run(self) -> None:
        url = f"http://127.0.0.1:{self._plane.options.listener_port}/v1/chat/completions"
        while not self._stop.is_set():
            drained = self.drained_and_acked
            response = self._client.post(url, json=CHAT, headers=GERMAN)
            region = response.headers.get("x-residency-region")
            self.answers.append(Answer(response.status_code, region, response.text[:300], drained))

    def wait_for_more(self, count: int) -> None:
        """Return once `count` more answers arrived (a hang bound, not a timing)."""
        target = len(self.answers) + count
        wait_for(f"{count} more answers", lambda: len(self.answers) >= target, timeout=60.0)


def _with_status(policy: PolicySnapshot, version: int, status: RegionStatus) -> PolicySnapshot:
    regions = [
        dataclasses.replace(r, status=status) if r.id == DRAINED else r for r in policy.regions
    ]
    return PolicySnapshot(version, policy.regimes, regions, policy.tenants.values())


@pytest.fixture
def plane(fleet: SimulatorFleet, catalog: Path, temp_dir: Path) -> Iterator[DecidingEnvoy]:
    with deciding_envoy(catalog_policy(catalog), temp_dir, NODE, tuple(REGIONS)) as running:
        yield running


def test_draining_and_restoring_a_region_under_load_answers_every_request(
    plane: DecidingEnvoy, catalog: Path
) -> None:
    base = catalog_policy(catalog)
    with BackToBackClient(plane) as client:
        client.wait_for_more(REQUESTS_BETWEEN_PUSHES)
        for push in range(PUSHES):
            drain = push % 2 == 0
            status = RegionStatus.DRAINING if drain else RegionStatus.ACTIVE
            client.drained_and_acked = False
            resources = publish(plane.server, _with_status(base, push + 2, status), plane.options)
            wait_for(
                f"the ACK of push {push + 1}",
                lambda v=resources.version: accepted(plane.server, NODE, v),
            )
            client.drained_and_acked = drain
            if not drain:
                wait_for(f"{DRAINED} healthy again", lambda: plane.healthy(DRAINED))
            client.wait_for_more(REQUESTS_BETWEEN_PUSHES)
    answers = client.answers
    failed = [a for a in answers if a.status != 200]
    assert not failed, f"{len(failed)} of {len(answers)} answers not 200, e.g. {failed[:3]}"
    after_drain = [a for a in answers if a.drained_and_acked]
    assert len(after_drain) >= PUSHES // 2 * REQUESTS_BETWEEN_PUSHES
    assert [a for a in after_drain if a.region == DRAINED] == []
    # The restored region serves again: the pushes really changed Envoy's routing.
    assert any(a.region == DRAINED for a in answers if not a.drained_and_acked)
    # The failover routes' header format loads without Envoy's deprecation warning.
    assert "UPSTREAM_METADATA" not in plane.envoy.log()


def test_a_route_to_a_missing_cluster_gets_a_json_503(plane: DecidingEnvoy, catalog: Path) -> None:
    # Should the routes ever name a cluster Envoy does not run (flag NC), the client gets our
    # JSON error, not Envoy's empty 503. Built by hand: the clusters of DRAINED's lists removed.
    resources = dict(translate(catalog_policy(catalog, 2), plane.options).by_type())
    resources[CLUSTER_TYPE] = tuple(
        (name, packed) for name, packed in resources[CLUSTER_TYPE] if DRAINED not in name
    )
    plane.server.set_snapshot("2-no-cluster", resources)
    wait_for("the ACK of the broken snapshot", lambda: accepted(plane.server, NODE, "2-no-cluster"))
    response = plane.post(CHAT, GERMAN)
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("region_unavailable", "region_not_configured")
    assert DRAINED in error["message"]
