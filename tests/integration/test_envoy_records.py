"""Routing records from the Envoy data plane: Envoy's access log, shipped into the chain.

A real Envoy decides and logs; `gateway envoy ship-records` (a real process) ships the log into
a real SQLite database; `gateway audit verify` checks the chain.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from regions.simulator.fleet import SimulatorFleet
from tests.integration.conftest import DEMO_KEY, GDPR_ALLOWED, IP_DE, REGIONS, set_faults
from tests.integration.envoy_records_support import (
    RecordsPlane,
    gateway_cli,
    records_plane,
    rejected_lines,
    ship_once,
    stored_records,
)
from tests.integration.envoy_support import wait_for

pytestmark = pytest.mark.integration
GERMAN = {"Authorization": f"Bearer {DEMO_KEY}", "X-Forwarded-For": IP_DE}


@pytest.fixture(scope="module")
def plane(
    fleet: SimulatorFleet, catalog: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RecordsPlane]:
    directory = tmp_path_factory.mktemp("envoy-records")
    with records_plane(catalog, directory, "records-envoy", tuple(REGIONS)) as p:
        yield p


def _record_of(plane: RecordsPlane, decision_id: str) -> dict[str, Any]:
    """Ship until `decision_id` is in the chain (Envoy flushes its log on a timer)."""

    def shipped() -> dict[str, Any] | None:
        ship_once(plane.settings.data_dir)
        found = [r for r in stored_records(plane.settings) if r["decision_id"] == decision_id]
        assert len(found) <= 1, f"{decision_id} stored {len(found)} times"
        return found[0] if found else None

    return wait_for(f"the record of {decision_id}", shipped, timeout=30)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def test_an_allowed_request_has_one_record_that_explains_itself(plane: RecordsPlane) -> None:
    response = plane.post(GERMAN)
    assert response.status_code == 200, response.text
    decision_id = response.headers["x-residency-decision"]
    served = response.headers["x-residency-region"]
    record = _record_of(plane, decision_id)
    assert record["tenant_id"] == "demo"
    assert record["data_class"] == "personal"
    assert record["client_country"] == "DE"
    assert _json(record["jurisdictions"]) == [{"country": "DE", "source": "client_ip"}]
    assert record["policy_version"] >= 1
    assert record["outcome"] == "routed"
    assert record["status_code"] == 200
    assert record["chosen_region"] == served == record["served_region"]
    assert record["client_ip_hmac"] and IP_DE not in json.dumps(record, default=str)
    attempts = _json(record["attempts"])
    assert [(a["region"], a["result"], a["status"]) for a in attempts] == [(served, "ok", 200)]
    reasons = _json(record["reasons"])
    assert "EU GDPR" in reasons[0] and "Envoy's choice" in reasons[0]
    explanation = _json(record["explanation"])
    allowed = {c["region"] for c in explanation["candidates"] if c["allowed"]}
    assert allowed == GDPR_ALLOWED == set(explanation["envoy"]["allowed"])
    assert explanation["envoy"]["disagreement"] is None
    assert explanation["envoy"]["bytes_sent"] == len(response.content)
    assert explanation["envoy"]["first_byte_ms"] is not None


def test_a_refusal_has_one_record_with_the_policy_reasons(plane: RecordsPlane) -> None:
    headers = {**GERMAN, "X-Data-Subject-Country": "IN", "X-Data-Class": "payment"}
    response = plane.post(headers)
    assert response.status_code == 451, response.text
    record = _record_of(plane, response.headers["x-residency-decision"])
    assert (record["outcome"], record["status_code"]) == ("refused", 451)
    assert record["chosen_region"] is None and record["served_region"] is None
    assert _json(record["attempts"]) == []
    assert _json(record["jurisdictions"]) == [
        {"country": "DE", "source": "client_ip"},
        {"country": "IN", "source": "declared_subject"},
    ]
    (reason,) = _json(record["reasons"])
    assert reason.startswith("no region may process payment data governed by")
    assert "RBI" in reason


def test_a_failover_records_both_attempts_and_the_region_that_served(
    plane: RecordsPlane, fleet: SimulatorFleet
) -> None:
    set_faults(fleet, "eu-frankfurt", error_rate=1.0, error_status=500)
    response = plane.post(GERMAN)
    assert response.status_code == 200, response.text
    assert response.headers["x-residency-region"] == "uk-london"
    record = _record_of(plane, response.headers["x-residency-decision"])
    assert record["chosen_region"] == "eu-frankfurt"
    assert record["served_region"] == "uk-london"
    attempts = [(a["region"], a["result"]) for a in _json(record["attempts"])]
    assert attempts == [("eu-frankfurt", "failed_before_response"), ("uk-london", "ok")]
    assert _json(record["explanation"])["fallbacks"] == ["uk-london", "us-oregon"]


def test_shipping_again_stores_nothing_twice_and_sets_aside_a_bad_line(
    plane: RecordsPlane,
) -> None:
    response = plane.post(GERMAN)
    _record_of(plane, response.headers["x-residency-decision"])
    before = stored_records(plane.settings)
    # A restart that lost its position re-reads everything: the decision ids keep it out.
    position = plane.log.with_name(plane.log.name + ".shipped")
    position.unlink()
    ship_once(plane.settings.data_dir)
    assert len(stored_records(plane.settings)) == len(before)
    assert rejected_lines(plane.settings) == []  # left out, not refused by the store
    # A line that is no record (a hand edit, a torn write) is kept aside, never dropped.
    with plane.log.open("ab") as log:
        log.write(b'{"tenant": "demo", "policy_version": 1, "decision_id": \n')
    later = plane.post(GERMAN)
    _record_of(plane, later.headers["x-residency-decision"])
    (rejected,) = [json.loads(line) for line in rejected_lines(plane.settings)]
    assert rejected["line"].startswith('{"tenant": "demo"')
    assert rejected["error"].startswith("MalformedLine: not JSON")
    verified = gateway_cli(plane.settings.data_dir, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_client_cannot_reuse_a_decision_id_to_hide_its_record(plane: RecordsPlane) -> None:
    first = plane.post(GERMAN).headers["x-residency-decision"]
    # Dedup is by decision id: a client choosing one would have its own record left out.
    second = plane.post({**GERMAN, "X-Request-Id": first})
    decision_id = second.headers["x-residency-decision"]
    assert decision_id != first
    assert _record_of(plane, decision_id)["decision_id"] == decision_id
